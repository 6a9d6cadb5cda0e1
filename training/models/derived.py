"""Lookups a fitted estimator derives for serving on first use: built once, dropped on refit, not pickled.

The served paths want the fitted state in another shape (a transposed copy of the factors,
centres folded with the scaler, an id -> position dict). Computing those at every call costs
more than the model's own arithmetic; storing them as fitted attributes would put them in
the logged artifact and leave artifacts logged before they existed without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DerivedLookups"]

T = TypeVar("T")


class DerivedLookups:
    """Mixin for estimators: :meth:`derived` memoises a lookup by name until :meth:`forget_derived`
    (call it at the start of ``fit``); pickling leaves every memoised lookup out."""

    _DERIVED: tuple[str, ...] = ()  # the names :meth:`derived` may memoise

    def derived(self, name: str, build: Callable[[], T]) -> T:
        value: T | None = self.__dict__.get(name)
        if value is None:
            if name not in self._DERIVED:
                raise KeyError(f"{type(self).__name__}: {name} is not declared in _DERIVED")
            value = self.__dict__[name] = build()
        return value

    def forget_derived(self) -> None:
        for name in self._DERIVED:
            self.__dict__.pop(name, None)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[assignment]
        return {k: v for k, v in state.items() if k not in self._DERIVED}
