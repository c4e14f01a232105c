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


def is_disk_full(exc: BaseException | None) -> bool:
    """True if ``exc`` or what caused it is ENOSPC, including SQLite's "database or disk is full"."""
    import errno

    for _ in range(10):  # follow the cause chain, bounded
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(exc) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
