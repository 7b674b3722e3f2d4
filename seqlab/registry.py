"""Named component tables.

Configs name components by registry key (``mixer: lstm``), never by an importable
path, so nothing stored in a config or checkpoint is ever imported or evaluated.
These tables are the only module-level mutable state in seqlab.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from seqlab.errors import ConfigError

T = TypeVar("T")


def closest(name: str, options) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """A name -> component table with helpful errors for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return decorator

    def add(self, name: str, item: T) -> None:
        self.register(name)(item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            valid = ", ".join(sorted(self._items))
            raise ConfigError(
                f"unknown {self.kind} {name!r}{closest(name, self._items)}; valid: {valid}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
