"""The rollout drills' faults (delivery/faults.py) wrap a model's serve: every n-th request fails, or each is slower."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
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


def test_slow_answers_after_the_delay_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model answers, then the fault waits ZM_DRILL_DELAY_SECONDS before handing the answer back (asyncio's sleep
    recorded, not slept)."""
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    class Instant(Model):
        async def serve(self, *args: Any, **kwargs: Any) -> str:
            self.served += 1
            return "answer"

    monkeypatch.setenv("ZM_DRILL_DELAY_SECONDS", "0.0125")
    monkeypatch.setattr(faults.asyncio, "sleep", sleep)
    model = Instant()
    faults.slow(model)  # type: ignore[arg-type]
    assert asyncio.run(model.serve()) == "answer" and model.served == 1
    assert waited == [0.0125]


def test_the_slow_drill_s_delay_is_five_times_the_stable_version_s_recent_p99() -> None:
    """The drill's delay comes from the load generator's own answers: the stable version's over the last seconds,
    the candidate's and failed ones left out."""
    import time

    from delivery.drills import SLOWER, slow_delay
    from delivery.load import Answer, Load

    now = time.monotonic()
    load = Load(1, "/", {})
    load.answers = [Answer(now - 1 + i / 1000, 200, "1", seconds=0.002 + i / 100_000) for i in range(1000)]
    load.answers += [Answer(now - 0.5, 200, "2", seconds=9.0), Answer(now - 0.5, 0, "", "refused", 9.0),
                     Answer(now - 60, 200, "1", seconds=9.0)]  # the candidate, a failure, an old answer
    expected = float(np.quantile([0.002 + i / 100_000 for i in range(1000)], 0.99))
    assert slow_delay(load, "1") == pytest.approx(SLOWER * expected)
    assert slow_delay(Load(1, "/", {}), "1") == 0.001  # no answer yet: the floor
