"""zmlops.polling.until with a fake clock: what it returns, how often it looks, when it gives up."""

from __future__ import annotations

import pytest

from zmlops.polling import until

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_returns_the_first_true_answer_after_sleeping_between_looks() -> None:
    clock, answers = Clock(), iter([None, 0, "", "found", "later"])
    assert until(lambda: next(answers), 10, 0.5, clock=clock, sleep=clock.sleep) == "found"
    assert clock.slept == [0.5, 0.5, 0.5]


def test_gives_up_at_the_deadline_having_looked_at_least_once() -> None:
    clock, looks = Clock(), []
    assert until(lambda: looks.append(clock.now), 2, 0.5, clock=clock, sleep=clock.sleep) is None
    assert looks == [100.0, 100.5, 101.0, 101.5, 102.0] and clock.now == 102.0  # never sleeps past the deadline
    clock, looks = Clock(), []
    assert until(lambda: looks.append(clock.now), 0, 1, clock=clock, sleep=clock.sleep) is None
    assert looks == [100.0] and clock.slept == []
