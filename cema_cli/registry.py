"""Name -> factory registries with lazy ``"module:attr"`` targets.

Listing names and summaries never imports the target, so ``cema list`` and ``cema --help``
stay fast (no torch import). Unknown names fail with the close matches and the full list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from cema_cli.errors import unknown_name


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | Callable[..., Any]
    summary: str


class Registry:
    """A named collection of factories, e.g. strategies, datasets or models."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str | Callable[..., Any], summary: str = "") -> None:
        """Add ``name``; ``target`` is a callable or a lazy ``"package.module:attr"`` string."""
        self._entries[name] = Entry(name, target, summary)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise a CemaError with close matches."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return name

    def get(self, name: str) -> Any:
        """The registered object, importing a lazy target on first use."""
        target = self._entries[self.check(name)].target
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = Entry(name, target, self._entries[name].summary)
        return target
