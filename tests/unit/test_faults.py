"""The rollout drills' faults (delivery/faults.py) wrap a model's serve: every n-th request fails, or each is slower."""

from __future__ import annotations

import asyncio
import time
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
    monkeypatch.setenv("ZM_DRILL_DELAY_FACTOR", "5")
    model = Model(seconds=0.02)
    faults.slow(model)  # type: ignore[arg-type]
    started = time.perf_counter()
    assert asyncio.run(model.serve()) == "answer"
    assert 0.1 <= time.perf_counter() - started < 0.5  # 5 x 20 ms, with the event loop's slack
