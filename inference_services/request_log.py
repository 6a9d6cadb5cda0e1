"""Durable request log: one JSON line per prediction, for the drift jobs and the audit trail.

Files are ``<dir>/<model>/<YYYY-MM-DD>.jsonl`` (UTC day). Each line is flushed to the
operating system as it is written, so a crashed server loses nothing it answered; the
file is fsynced when it is rotated or closed. Customer ids never appear in the log: they
are replaced by a keyed hash (HMAC-SHA256 with the pseudonymisation key from settings),
stable for one key, so the drift jobs can count repeat customers without knowing them and
the GDPR erasure job can find a customer's rows by hashing the id with the same key.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["RequestLog", "pseudonymise"]


def pseudonymise(key: bytes, customer_id: Any) -> str:
    """Keyed hash of a customer id (16 hex characters)."""
    return hmac.new(key, str(int(customer_id)).encode(), hashlib.sha256).hexdigest()[:16]


class RequestLog:
    def __init__(self, folder: Path, model: str, key: str) -> None:
        self.folder = folder / model
        self.model = model
        self.key = key.encode()
        self._day = -1
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        # the same customers come back: remember their pseudonyms (the key is in this process anyway)
        self._memo = functools.lru_cache(maxsize=65_536)(functools.partial(pseudonymise, self.key))

    def pseudonymise(self, customer_id: Any) -> str:
        return self._memo(int(customer_id))

    def _open(self, day: int) -> IO[bytes]:
        self._close()
        self.folder.mkdir(parents=True, exist_ok=True)
        name = dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + day).isoformat()
        self._file = open(self.folder / f"{name}.jsonl", "ab")  # noqa: SIM115 - kept open between writes
        self._day = day
        return self._file

    def append(self, record: dict[str, Any]) -> None:
        now = time.time()
        record["ts"] = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        day = int(now // 86400)
        with self._lock:
            f = self._file if day == self._day and self._file is not None else self._open(day)
            f.write(line)
            f.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def close(self) -> None:
        with self._lock:
            self._close()
