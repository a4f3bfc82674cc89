"""Name -> component registries (AllenNLP style): configs choose models, heads, losses, decoders,
schedules, engines and datasets by name, and an unknown name gets one error everywhere:
``unknown <kind> 'x'; known: a, b, c`` (with the closest name when one is close)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError, HmtcError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components.

    Parameters
    ----------
    kind : str
        What the entries are ("model", "loss", ...), used in error messages.
    error : type
        The error an unknown name raises (a :class:`ConfigError` unless said otherwise).
    hint : str
        Appended to that error, e.g. what else is accepted.
    """

    def __init__(self, kind: str, error: type[HmtcError] = ConfigError, hint: str = ""):
        self.kind, self.error, self.hint = kind, error, hint
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), self._items, n=1)
            raise self.error(f"unknown {self.kind} {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; known: {', '.join(sorted(self._items))}" + self.hint) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
