"""The one exception hierarchy of lightnas.

A :class:`NasUserError` is a mistake the user can fix (a bad file, field or value): the CLI prints its
message as one line and exits 1, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NasError(Exception):
    """Base class of every error lightnas raises on purpose."""


class NasUserError(NasError):
    """A user mistake, described in one sentence naming the file, field, value and the fix."""


class MissingDependencyError(NasUserError):
    """An optional package is needed for the requested feature; the message gives the install command."""
