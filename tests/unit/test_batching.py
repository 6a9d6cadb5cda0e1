"""Continuous batching (inference_services.batching) on a real event loop, without a server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_services.batching import Batcher

pytestmark = pytest.mark.unit


class Model:
    """Answers each row with (version, row) and records every call it got."""

    def __init__(self, fail_on: Any = None) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.fail_on = fail_on

    async def __call__(self, state: str, rows: list[Any]) -> list[tuple[str, Any]]:
        self.calls.append((state, list(rows)))
        if self.fail_on is not None and self.fail_on in rows:
            raise ValueError(f"bad row {self.fail_on}")
        await asyncio.sleep(0)  # a model call that yields, like an async online-store read
        return [(state, r) for r in rows]


async def _requests(batcher: Batcher[str, Any], requests: list[tuple[str, list[Any]]]) -> list[Any]:
    return await asyncio.gather(*(batcher.submit(s, rows) for s, rows in requests), return_exceptions=True)


def test_concurrent_requests_share_one_call_and_each_gets_its_own_rows_in_order() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=100)
    requests = [("v1", [f"r{i}a", f"r{i}b"]) if i % 2 else ("v1", [f"r{i}"]) for i in range(10)]
    answers = asyncio.run(_requests(batcher, requests))
    assert answers == [[("v1", r) for r in rows] for _, rows in requests]
    assert len(model.calls) == 1 and len(model.calls[0][1]) == 15
    assert (batcher.stats.calls, batcher.stats.rows, batcher.stats.largest) == (1, 15, 15)


def test_one_request_alone_is_answered_at_once_in_a_call_of_its_own() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=100)

    async def one_after_another() -> list[Any]:
        return [await batcher.submit("v1", [i]) for i in range(3)]

    assert asyncio.run(one_after_another()) == [[("v1", 0)], [("v1", 1)], [("v1", 2)]]
    assert [len(rows) for _, rows in model.calls] == [1, 1, 1]


def test_versions_never_share_a_call_and_max_rows_bounds_a_call() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=4)
    requests = [("v1", [1, 2]), ("v2", [3]), ("v1", [4, 5]), ("v1", [6]), ("v2", [7, 8, 9, 10, 11])]
    answers = asyncio.run(_requests(batcher, requests))
    assert answers == [[(s, r) for r in rows] for s, rows in requests]
    for state, rows in model.calls:
        assert len({s for s, part in requests if set(part) & set(rows)}) == 1, "versions mixed in one call"
        assert state in ("v1", "v2")
    # a request is never split: one larger than max_rows goes alone, the others fill calls up to 4 rows
    assert all(len(rows) <= 4 or len(rows) == 5 and state == "v2" for state, rows in model.calls)
    assert sorted(r for _, rows in model.calls for r in rows) == list(range(1, 12))


def test_a_failing_call_reaches_every_request_of_its_batch_and_the_next_batch_still_runs() -> None:
    model = Model(fail_on="bad")
    batcher = Batcher(model, max_rows=100)

    async def scenario() -> tuple[list[Any], list[Any]]:
        first = await _requests(batcher, [("v1", ["a"]), ("v1", ["bad"]), ("v1", ["c"])])
        second = await _requests(batcher, [("v1", ["d"])])
        return first, second

    first, second = asyncio.run(scenario())
    assert all(isinstance(a, ValueError) for a in first)
    assert second == [[("v1", "d")]]
    assert batcher.stats.calls == 1  # only the call that answered counts


def test_observe_gets_the_rows_of_each_call() -> None:
    seen: list[int] = []
    batcher = Batcher(Model(), max_rows=100, observe=seen.append)
    asyncio.run(_requests(batcher, [("v1", [1]), ("v1", [2, 3])]))
    assert seen == [3]
