"""The rollout drills' faults (delivery/faults.py) wrap a model's serve: every n-th request fails, or each is slower."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from delivery import faults

pytestmark = pytest.mark.unit


class Model:
    """The one method the faults wrap, answering after ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.served = 0

    async def serve(self, *args: Any, **kwargs: Any) -> str:
        self.served += 1
        await asyncio.sleep(self.seconds)
        return "answer"


def test_failing_fails_every_nth_request_and_answers_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZM_DRILL_ERROR_EVERY", "4")
    model = Model()
    faults.failing(model)  # type: ignore[arg-type]

    async def twelve() -> list[str]:
        out = []
        for _ in range(12):
            try:
                out.append(await model.serve())
            except faults.InjectedFault:
                out.append("500")
        return out

    assert asyncio.run(twelve()) == ["answer", "answer", "answer", "500"] * 3
    assert model.served == 9  # a failed request never reached the model


def test_slow_takes_the_factor_times_the_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fake clock: the model takes 20 ms, the fault then waits 4 x 20 ms, so the answer takes 5 x 20 ms."""
    now = [0.0]
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    class Timed(Model):
        async def serve(self, *args: Any, **kwargs: Any) -> str:
            self.served += 1
            now[0] += 0.02
            return "answer"

    monkeypatch.setenv("ZM_DRILL_DELAY_FACTOR", "5")
    monkeypatch.setattr(faults.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(faults.asyncio, "sleep", sleep)
    model = Timed()
    faults.slow(model)  # type: ignore[arg-type]
    assert asyncio.run(model.serve()) == "answer"
    assert waited == [pytest.approx(0.08)] and now[0] == pytest.approx(0.1)
