"""Wait for a condition: the one poll-until-deadline loop the product's waits share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float, interval: float, *,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep) -> T | None:
    """Call ``check`` every ``interval`` seconds until it returns something true, and return that; None once
    ``timeout`` seconds have passed without (``check`` runs at least once). ``clock`` and ``sleep`` are for
    tests (a fake clock)."""
    deadline = clock() + timeout
    while True:
        found = check()
        if found:
            return found
        if clock() + interval > deadline:
            return None
        sleep(interval)
