"""Request log: one JSON line per answered request, shipped in batches to the object store.

``append`` runs on the request path and never waits for I/O: it serialises the record and adds it
to the current batch. A writer thread writes a batch as one object,
``requests/<model>/<YYYY-MM-DD>/<HHMMSS>-<writer>-<n>.jsonl`` (UTC day of its records), once the
batch is ``request_log.flush_seconds`` old or holds ``request_log.batch_records`` records. In the
local profile the object store is ``ZM_HOME`` itself, in the k8s profile a bucket, so a predictor
pod keeps nothing on its disk.

When the store does not answer, records wait in memory and the write is retried with a growing
pause; above ``request_log.max_buffer_mb`` of waiting data the oldest records are dropped and
counted (``zm_request_log_dropped_records_total``): a request is never failed or slowed for its
log. ``close`` writes what is left. A crash loses at most the records of the last
``flush_seconds``.

Customer ids never appear in the log: models log :meth:`RequestLog.pseudonymise` (a keyed hash,
:mod:`governance.pseudonyms`), which the monitoring jobs and the privacy tooling recompute with
the same key. Request ids (the client's ``x-request-id``, the V2 ``id``) are kept as their keyed hash
and model inputs not at all, unless ``request_log.keep_request_ids`` / ``keep_features`` allow them.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Gauge

from governance.pseudonyms import pseudonymise, pseudonymise_text

if TYPE_CHECKING:
    from zmlops.settings import RequestLogSettings
    from zmlops.stores import ObjectStore

__all__ = ["RequestLog", "PREFIX", "EVENTS", "SHADOW"]

PREFIX = "requests"
EVENTS = "events"  # outcome events (impressions, clicks, purchases, sales) in the same shape: inference_services.events
SHADOW = "shadow"  # the shadow version's comparisons with production (no customer in them)
log = logging.getLogger("zmlops.serving")

DROPPED = Counter("zm_request_log_dropped_records", "Request-log records dropped because the object store did not "
                  "take them in time (oldest first).", ["model"])
BATCHES = Counter("zm_request_log_batches", "Request-log batches written to the object store, by result.",
                  ["model", "result"])
BUFFERED = Gauge("zm_request_log_buffered_bytes", "Request-log data waiting to be written.", ["model"])


class RequestLog:
    """The request log of ``model`` (or, with ``prefix=EVENTS``, its event log), written to ``store`` with the
    limits of ``cfg``."""

    def __init__(self, store: ObjectStore, model: str, key: str, cfg: RequestLogSettings, prefix: str = PREFIX) -> None:
        self.store = store
        self.model = model
        self.prefix = prefix
        self.label = model if prefix == PREFIX else f"{model}:{prefix}"  # the metrics' model label
        self.key = key.encode()
        self.cfg = cfg
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()  # (UTC day, line)
        self._bytes = 0
        self._oldest = 0.0  # monotonic time of the oldest pending record
        self._lock = threading.Lock()
        self._seq = 0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._failures = 0
        # the same customers come back: remember their pseudonyms (the key is in this process anyway)
        self._memo = functools.lru_cache(maxsize=65_536)(functools.partial(pseudonymise, self.key))

    def pseudonymise(self, customer_id: Any) -> str:
        return self._memo(int(customer_id))

    def request_id(self, request_id: str) -> str:
        """What the log keeps of a request id: its keyed hash unless ``request_log.keep_request_ids``."""
        return request_id if self.cfg.keep_request_ids else pseudonymise_text(self.key, request_id)

    # ------------------------------------------------------------------ the request path
    def append(self, record: dict[str, Any]) -> None:
        now = time.time()
        record["ts"] = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        limit = self.cfg.max_buffer_mb * 1_048_576
        with self._lock:
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append((int(now // 86400), line))
            self._bytes += len(line)
            dropped = 0
            while self._bytes > limit and len(self._pending) > 1:
                _, old = self._pending.popleft()
                self._bytes -= len(old)
                dropped += 1
            full = len(self._pending) >= self.cfg.batch_records
        if dropped:
            DROPPED.labels(self.label).inc(dropped)
        if self._thread is None:
            self._start()
        if full:
            self._wake.set()

    # ------------------------------------------------------------------ the writer
    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"request-log-{self.label}", daemon=True)
                self._thread.start()

    def _due(self) -> bool:
        with self._lock:
            if not self._pending or time.monotonic() < self._retry_at:
                return False
            return len(self._pending) >= self.cfg.batch_records \
                or time.monotonic() - self._oldest >= self.cfg.flush_seconds

    def _run(self) -> None:
        tick = min(0.25, self.cfg.flush_seconds / 2)
        while not self._closed.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            while self._due():
                if not self.flush_once():
                    break

    def flush_once(self) -> bool:
        """Write one batch (up to ``batch_records``); False when the store refused it (kept for later)."""
        with self._lock:
            n = min(len(self._pending), self.cfg.batch_records)
            batch = [self._pending.popleft() for _ in range(n)]
            self._bytes -= sum(len(line) for _, line in batch)
            self._oldest = time.monotonic() if self._pending else 0.0
            self._seq += 1
            seq = self._seq
        if not batch:
            return True
        days: dict[int, list[bytes]] = {}
        for day, line in batch:
            days.setdefault(day, []).append(line)
        try:
            for day, lines in days.items():
                self.store.put(self._key(day, seq), b"".join(lines), keep=False)
        except Exception as error:  # noqa: BLE001 - any store failure: keep the records, retry later
            with self._lock:
                self._pending.extendleft(reversed(batch))
                self._bytes += sum(len(line) for _, line in batch)
                self._oldest = time.monotonic()
                self._failures += 1
                self._retry_at = time.monotonic() + min(30.0, 0.5 * 2 ** min(self._failures, 6))
            BATCHES.labels(self.label, "error").inc()
            if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
                log.warning("%s: request log not written (%s: %s); %d records wait", self.model,
                            type(error).__name__, str(error)[:200], len(self._pending))
            self._gauge()
            return False
        with self._lock:
            self._failures, self._retry_at = 0, 0.0
        BATCHES.labels(self.label, "written").inc()
        self._gauge()
        return True

    def _gauge(self) -> None:
        BUFFERED.labels(self.label).set(self._bytes)

    def _key(self, day: int, seq: int) -> str:
        date = dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + day)
        stamp = time.strftime("%H%M%S", time.gmtime())
        return f"{self.prefix}/{self.model}/{date.isoformat()}/{stamp}-{self.writer}-{seq:06d}.jsonl"

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything pending now (tests, shutdown); False when some is still unwritten at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
                self._retry_at = 0.0
            if not self.flush_once():
                time.sleep(0.2)
        with self._lock:
            return not self._pending

    def close(self, timeout: float = 10.0) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if not self.flush(timeout):
            log.warning("%s: %d request-log records could not be written at shutdown", self.model,
                        len(self._pending))
