"""One registry class for every name → implementation table of lightnas (blocks, samplers, backends, steps…).

A registry is filled by a ``register`` decorator next to each implementation, the way timm's
``register_model`` fills its table. With ``discover``, the registry imports every public module of a package
the first time it is read, so adding an implementation means adding one file: nothing else lists it.

Example:
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... class Red: ...
    >>> colours.names(), colours.get("red") is Red
    (['red'], True)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nas.errors import NasUserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → entries, with lookups that fail in one sentence listing the valid names.

    Args:
        kind: What an entry is, for messages (``"block type"``, ``"sampler"``).
        discover: A package (``"nas.blocks"``) whose modules not starting with ``_`` are imported on the first
            lookup, so that their ``register`` decorators run; None when entries are registered by import.
    """

    def __init__(self, kind: str, *, discover: str | None = None) -> None:
        self.kind = kind
        self._discover = discover
        self._discovered = discover is None
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``; a second entry of that name is an error."""

        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice ({self._entries[name]!r} and {entry!r})")
            self._entries[name] = entry
            return entry

        return decorate

    def _load(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # set first: a module importing this registry must not recurse
        package = importlib.import_module(self._discover)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._discover}.{module.name}")

    def get(self, name: str, *, where: str = "") -> T:
        """The entry registered as ``name``.

        Args:
            name: The registered name.
            where: Prefix of the error message naming the file and field, e.g. ``"space.yaml: blocks.type"``.

        Raises:
            NasUserError: ``name`` is not registered; the message lists the valid names.
        """
        self._load()
        if name not in self._entries:
            prefix = f"{where} " if where else ""
            raise NasUserError(f"{prefix}{self._unknown(name)}.")
        return self._entries[name]

    def check(self, name: str) -> str:
        """``name`` if registered, else ``ValueError`` (for pydantic field validators, which wrap it with the field)."""
        if name not in self:
            raise ValueError(self._unknown(name))
        return name

    def _unknown(self, name: str) -> str:
        return f"{name!r} is not a registered {self.kind}; choose one of {', '.join(self.names())}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, entry)`` pairs in name order."""
        self._load()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
