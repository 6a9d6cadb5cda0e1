"""Online feature lookup for the services: Feast's online store, read directly, with a bounded wait.

This is the one module of the serving code that talks to Feast. The store is opened with the
same code and configuration the pipelines use (:func:`training.features.store.open_store`); the
feature view and its entity are resolved from the registry once. A lookup then calls the view's
online store through Feast's ``OnlineStore`` interface (``online_read``), the same call
``FeatureStore.get_online_features`` makes after it has resolved the registry, converted the
entity values and built its response: that wrapper costs about 150 us per call here, two to
three times the read itself, and is the same for one customer or fifty.

The wait is bounded by ``timeout`` seconds in the way the store allows:

- **async** stores (Redis, the Kubernetes profile): the read is awaited on the event loop under
  :func:`asyncio.wait_for`;
- **SQLite** (the local profile): a local file, read inline on the event loop (a thread hop costs
  more than the read); a writer holding the database is waited for at most ``timeout`` through
  SQLite's busy timeout, after which the lookup fails as a timeout. The bound covers lock waits,
  not a stalled disk: keep the local store on local storage;
- any other store: a worker thread, abandoned after ``timeout``.

A failed lookup raises :class:`FeatureLookupFailed`; the caller answers without features and
marks the answer degraded. A store that failed is opened afresh on the next lookup.

**Feature cache.** The profile features are written to the online store by batch materialization
(weekly, or when a retrain re-publishes them), so the values of one customer stay the same for
days. With ``cache_size > 0`` a bounded, per-entry-expiring cache (cachetools' ``TTLCache``: LRU
eviction, at most ``cache_seconds`` old) answers ids read before, the ones the store has no row for
included (the caller's cold start); a failed read is never cached. It is dropped whole as soon as
Feast records a new materialization of the view: :meth:`OnlineFeatures.watch` reads the view's
materialization intervals from the registry (any store, any registry) and runs from the server's
poll loop, every ``serving.poll_seconds``. Writes that bypass materialization (a push, a manual
fix) are seen after at most ``cache_seconds``. While the store is down, cached ids still get
their features; only the others degrade. Hits and misses: ``zm_feature_cache_requests_total``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from typing import Any

from cachetools import TTLCache

from inference_services import metrics
from zmlops.settings import Settings

__all__ = ["OnlineFeatures", "FeatureLookupFailed"]


class FeatureLookupFailed(Exception):
    """The online store did not answer in time or failed; ``reason`` is timeout or error.

    ``cached`` holds what the feature cache could still answer: per position of the ids asked for,
    the values (or None when the store had no row), absent for the ids that needed the store.
    """

    def __init__(self, reason: str, detail: str, cached: dict[int, list[Any] | None] | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.cached = cached or {}


class _Reader:
    """One opened store: the view, its join key and value type, the online store and how to wait."""

    def __init__(self, settings: Settings, view: str, timeout: float) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.value_type import ValueType

        from training.features.store import open_store

        store = open_store(settings)
        self.config = store.config
        self.view = store.get_feature_view(view)
        if len(self.view.entity_columns) != 1:
            raise ValueError(f"feature view {view} needs exactly one entity, has {len(self.view.entity_columns)}")
        column = self.view.entity_columns[0]
        self.join_key = column.name
        self.value_type = column.dtype.to_value_type()
        self.online = get_online_store_from_config(self.config.online_store)
        self.EntityKey = EntityKeyProto
        self.int64_key = self.value_type == ValueType.INT64
        self.mode = "async" if self.online.async_supported.read else "thread"
        if type(self.online).__name__ == "SqliteOnlineStore":
            self.mode = "inline"
            # Feast opens SQLite with Python's default 5 s busy timeout; ours is the lookup's bound
            self.online._get_conn(self.config).execute(f"PRAGMA busy_timeout = {max(int(timeout * 1000), 1)}")

    def keys(self, ids: Sequence[int]) -> list[Any]:
        if not self.int64_key:
            from feast.type_map import python_values_to_proto_values

            values = python_values_to_proto_values([int(i) for i in ids], self.value_type)
            return [self.EntityKey(join_keys=[self.join_key], entity_values=[v]) for v in values]
        keys = []
        for i in ids:  # what Feast's converter builds, without its per-call checks (about 1 us a key)
            key = self.EntityKey()
            key.join_keys.append(self.join_key)
            key.entity_values.add().int64_val = int(i)
            keys.append(key)
        return keys


def _values(rows: list[tuple[Any, dict[str, Any] | None]], names: Sequence[str]) -> list[list[Any] | None]:
    """Feast's (timestamp, {name: ValueProto}) per entity -> the values of ``names`` in order (None for a
    missing one), or None when the store has nothing for the entity (SQLite returns no row, Redis a row of
    empty values)."""
    out: list[list[Any] | None] = []
    for _, found in rows:
        if not found:
            out.append(None)
            continue
        row: list[Any] = []
        for name in names:
            proto = found.get(name)
            kind = proto.WhichOneof("val") if proto is not None else None
            row.append(getattr(proto, kind) if kind is not None and kind != "null_val" else None)
        out.append(None if all(v is None for v in row) else row)
    return out


class OnlineFeatures:
    """Lookups of one feature view's ``names`` by entity id, bounded by ``timeout`` seconds.

    ``cache_size`` ids (0: none) are kept for at most ``cache_seconds`` and until the view is
    materialized again (see the module's docstring); ``label`` names the owner in the cache metrics.
    """

    def __init__(self, settings: Settings, view: str, names: Sequence[str], timeout: float,
                 cache_size: int = 0, cache_seconds: float = 300.0, label: str = "",
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.timer = timer  # the cache's clock (tests pass a fake one)
        self.view_name = view
        self.names = list(names)
        self.timeout = timeout
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self._cache = self._new_cache()
        self._mark: tuple[int, str | None] | None = None
        self._registry: Any = None  # a FeatureStore of the poll thread's own, for the registry
        if self._cache is not None:  # no series for a lookup without a cache
            self._hits = metrics.child(metrics.FEATURE_CACHE, label, "hit")
            self._misses = metrics.child(metrics.FEATURE_CACHE, label, "miss")
        self._reader: _Reader | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _new_cache(self) -> TTLCache[int, list[Any] | None] | None:
        return TTLCache(self.cache_size, self.cache_seconds, timer=self.timer) if self.cache_size > 0 else None

    @property
    def mode(self) -> str | None:
        """How lookups wait (async, inline or thread); None until the store was opened."""
        return self._reader.mode if self._reader is not None else None

    def _open(self) -> _Reader:
        if self._reader is None:
            self._reader = _Reader(self.settings, self.view_name, self.timeout)
        return self._reader

    def _read(self, reader: _Reader, ids: Sequence[int]) -> list[list[Any] | None]:
        # a fresh list each call: Feast's Redis store appends its timestamp field to the list it is given
        rows = reader.online.online_read(reader.config, reader.view, reader.keys(ids), list(self.names))
        return _values(rows, self.names)

    def lookup_now(self, ids: Sequence[int]) -> list[list[Any] | None]:
        """Blocking lookup without the time bound (warm-up and smoke checks)."""
        return self._read(self._open(), ids)

    async def lookup(self, ids: Sequence[int]) -> list[list[Any] | None]:
        """Per id the values of ``names`` in that order, or None when the store has no row for it.

        Ids in the feature cache are answered from it; the others are read from the store in one call.
        Raises :class:`FeatureLookupFailed` (reason ``timeout`` or ``error``, with what the cache held)
        instead of waiting longer than ``timeout`` or passing on the store's exception.
        """
        cache = self._cache  # this call's cache: one dropped meanwhile is filled, never the new one
        if cache is None:
            return await self._lookup_store(ids)
        found: dict[int, list[Any] | None] = {}
        missing: list[int] = []
        for i in ids:
            if i in found:
                continue
            try:
                found[i] = cache[i]
            except KeyError:
                found[i] = None
                missing.append(i)
        self._hits.inc(len(found) - len(missing))
        if missing:
            self._misses.inc(len(missing))
            try:
                read = await self._lookup_store(missing)
            except FeatureLookupFailed as failed:
                need = set(missing)
                failed.cached = {n: found[i] for n, i in enumerate(ids) if i not in need}
                raise
            for i, values in zip(missing, read, strict=True):
                found[i] = cache[i] = values
        return [found[i] for i in ids]

    async def _lookup_store(self, ids: Sequence[int]) -> list[list[Any] | None]:
        started = time.perf_counter()
        try:
            reader = self._open()
            if reader.mode == "inline":
                return self._read(reader, ids)
            if reader.mode == "async":
                rows = await asyncio.wait_for(
                    reader.online.online_read_async(reader.config, reader.view, reader.keys(ids), list(self.names)),
                    self.timeout)
                return _values(rows, self.names)
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="feast")
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self._pool, self._read, reader, ids), self.timeout)
        except TimeoutError:
            raise FeatureLookupFailed("timeout", f"no answer within {self.timeout * 1000:.0f} ms") from None
        except Exception as error:  # noqa: BLE001 - any store failure degrades the answer, never the request
            self._reader = None  # open afresh on the next lookup
            waited = time.perf_counter() - started
            reason = "timeout" if waited >= self.timeout or "locked" in str(error) else "error"
            raise FeatureLookupFailed(reason, f"{type(error).__name__}: {error}") from None

    def _materialized(self) -> tuple[int, str | None]:
        """The view's materialization record in the registry: how many runs, and the last one's end."""
        if self._registry is None:
            from training.features.store import open_store

            self._registry = open_store(self.settings)
        store = self._registry
        view = store.registry.get_feature_view(self.view_name, store.project, allow_cache=False)
        intervals = view.materialization_intervals
        return len(intervals), intervals[-1][1].isoformat() if intervals else None

    def watch(self) -> bool:
        """Drop the feature cache if the view was materialized since the last look; True if it was.

        Blocking (it reads the registry): run it off the event loop. The first call only takes note.
        """
        if self._cache is None:
            return False
        mark = self._materialized()
        changed = self._mark is not None and mark != self._mark
        self._mark = mark
        if changed:
            self._cache = self._new_cache()  # one assignment; lookups in flight finish with the old one
        return changed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
