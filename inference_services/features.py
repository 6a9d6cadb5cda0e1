"""Online feature lookup for the services: Feast's online store, with a bounded wait.

The store is opened with the same code and configuration the pipelines use
(:func:`training.features.store.open_store`). A lookup runs in a small thread pool and
is abandoned after ``timeout`` seconds; the caller then answers without features and marks
the answer degraded. A store that cannot be opened at all is retried on the next lookup.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any

from zmlops.settings import Settings

__all__ = ["OnlineFeatures", "FeatureLookupFailed"]


class FeatureLookupFailed(Exception):
    """The online store did not answer in time or failed; ``reason`` is timeout or error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class OnlineFeatures:
    def __init__(self, settings: Settings, view: str, names: Sequence[str], entity: str, timeout: float) -> None:
        self.settings = settings
        self.refs = [f"{view}:{n}" for n in names]
        self.names = list(names)
        self.entity = entity
        self.timeout = timeout
        self._store: Any = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="feast")

    def _lookup(self, ids: Sequence[int]) -> dict[str, list[Any]]:
        if self._store is None:
            from training.features.store import open_store

            self._store = open_store(self.settings)
        result: dict[str, list[Any]] = self._store.get_online_features(
            features=self.refs, entity_rows=[{self.entity: int(i)} for i in ids]
        ).to_dict()
        return result

    def lookup_now(self, ids: Sequence[int]) -> dict[str, list[Any]]:
        """Blocking lookup without the time bound (warm-up and smoke checks)."""
        return self._lookup(ids)

    async def lookup(self, ids: Sequence[int]) -> dict[str, list[Any]]:
        """``{feature name: [value or None per id]}``; raises :class:`FeatureLookupFailed`."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, self._lookup, ids), self.timeout)
        except TimeoutError:
            raise FeatureLookupFailed("timeout", f"no answer within {self.timeout * 1000:.0f} ms") from None
        except Exception as error:  # noqa: BLE001 - any store failure degrades the answer, never the request
            self._store = None  # reopen on the next lookup
            raise FeatureLookupFailed("error", f"{type(error).__name__}: {error}") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
