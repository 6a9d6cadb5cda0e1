"""Faults the rollout drills inject into a candidate predictor (``delivery.drills``), and nothing else.

A drill starts the candidate with ``ZM_SERVING__WRAPPERS='["delivery.faults:failing"]'`` (or ``slow``);
the predictor calls the function with its served model before loading, and the function wraps the model's
``serve`` (every prediction request of either protocol, cache hits included). The fault therefore sits behind
the edge, where a real model's failure would: the edge answers the client 500 and counts it, and its latency
histogram holds the delay, as the canary analysis reads them. The request path of a predictor started without
wrappers has no fault code in it.

- ``failing``: every ``ZM_DRILL_ERROR_EVERY``-th prediction request (20 unless set) raises.
- ``slow``: every prediction request answers ``ZM_DRILL_DELAY_SECONDS`` (0.05 unless set) later, as behind a slow
  dependency. The drill sets it from the stable version's latency as its clients see it (:mod:`delivery.drills`):
  a multiple of the request's own time would not do, since a forecast takes well under a millisecond of the
  predictor's time while a busy machine's scheduling adds tens of milliseconds to both versions' tails.

The smoke prediction a version makes while it loads does not pass there, so the candidate turns ready and the
rollout has something to judge.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference_services.base import ServedModel

__all__ = ["failing", "slow", "InjectedFault"]


class InjectedFault(RuntimeError):
    """The failure ``failing`` raises (the edge answers it as any model error: 500, logged)."""


def failing(model: ServedModel) -> None:
    every = int(os.environ.get("ZM_DRILL_ERROR_EVERY", "20"))
    real = model.serve
    calls = 0

    async def serve(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if every and calls % every == 0:
            raise InjectedFault(f"fault injected (rollout drill): request {calls}")
        return await real(*args, **kwargs)

    model.serve = serve  # type: ignore[method-assign]


def slow(model: ServedModel) -> None:
    delay = float(os.environ.get("ZM_DRILL_DELAY_SECONDS", "0.05"))
    real = model.serve

    async def serve(*args: Any, **kwargs: Any) -> Any:
        out = await real(*args, **kwargs)
        await asyncio.sleep(delay)
        return out

    model.serve = serve  # type: ignore[method-assign]
