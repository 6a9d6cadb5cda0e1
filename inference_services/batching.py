"""Continuous batching: the rows of concurrent requests answered by one model call.

A service whose per-call cost is mostly fixed (an online-store read, a matrix product, numpy's
per-call overhead) answers many rows for little more than the price of one. The runtime serves
one process with one event loop, so requests that arrive together are already waiting for each
other; the batcher only lets them share the work:

- a request hands its rows (already validated, cache misses only) to :meth:`Batcher.submit`
  and awaits its share of the answer;
- the first request to find the batcher idle starts a drain on the next turn of the event
  loop, so every request read in the same turn joins the same call;
- while a call runs, new rows wait and go together in the next one (at most ``max_rows``
  rows a call), so under load the batch grows by itself and with one client it holds one row:
  nothing is ever held back on a timer.

Rows of different model versions (a swap in the middle of a batch) never share a call. An
exception in the call reaches every request of that batch, which answers it as it would have
alone (a 400 for :class:`kserve.errors.InvalidInput`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Batcher", "BatchStats"]

S = TypeVar("S")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Calls made, rows answered (``rows / calls`` is the mean batch size) and the largest call."""

    calls: int = 0
    rows: int = 0
    largest: int = 0

    def add(self, n: int) -> None:
        self.calls += 1
        self.rows += n
        self.largest = max(self.largest, n)


class Batcher(Generic[S, R]):
    """Answers ``submit(state, rows)`` through ``call(state, all rows)``; see the module docstring."""

    def __init__(self, call: Callable[[S, list[Any]], Awaitable[list[R]]], max_rows: int,
                 observe: Callable[[int], None] | None = None, settle_turns: int = 4) -> None:
        self.call = call
        self.max_rows = max(max_rows, 1)
        self.observe = observe  # rows of each call (a metric)
        self.settle_turns = settle_turns
        self.stats = BatchStats()
        self._pending: list[tuple[S, list[Any], asyncio.Future[list[R]]]] = []
        self._draining = False

    async def submit(self, state: S, rows: list[Any]) -> list[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((state, rows, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())  # runs after the requests already scheduled in this turn
        return await future

    def _take(self) -> tuple[S, list[tuple[list[Any], asyncio.Future[list[R]]]]]:
        state = self._pending[0][0]
        taken: list[tuple[list[Any], asyncio.Future[list[R]]]] = []
        size, keep = 0, []
        for entry in self._pending:
            same, rows, future = entry[0] is state, entry[1], entry[2]
            if same and (not taken or size + len(rows) <= self.max_rows):
                taken.append((rows, future))
                size += len(rows)
            else:
                keep.append(entry)
        self._pending = keep
        return state, taken

    async def _settle(self) -> None:
        """Let the event loop turn while rows keep arriving (up to ``settle_turns`` pairs of turns)."""
        for _ in range(self.settle_turns):
            before = len(self._pending)
            await asyncio.sleep(0)  # the loop polls its sockets: requests that arrived get a task
            await asyncio.sleep(0)  # ...which runs and joins
            if len(self._pending) == before:
                return

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._settle()
                state, taken = self._take()
                rows = [row for part, _ in taken for row in part]
                try:
                    results = await self.call(state, rows)
                    if len(results) != len(rows):
                        raise RuntimeError(f"the model answered {len(results)} rows of {len(rows)}")
                except Exception as error:  # noqa: BLE001 - handed to every request of the batch
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self.stats.add(len(rows))
                if self.observe is not None:
                    self.observe(len(rows))
                start = 0
                for part, future in taken:
                    if not future.done():  # a request whose client went away
                        future.set_result(results[start : start + len(part)])
                    start += len(part)
        finally:
            self._draining = False
