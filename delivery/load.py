"""A steady load generator on loopback for the rollout drills: paced requests over keep-alive connections,
every answer recorded with its time, status and the model version that served it."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Answer", "Load"]


@dataclass(frozen=True)
class Answer:
    at: float  # monotonic time the request was sent
    status: int  # HTTP status, 0 for a connection error
    version: str  # x-model-version header ("" without one)
    error: str = ""  # the client's exception for status 0
    seconds: float = 0.0  # from sending the request to reading the whole answer (the client's latency)


@dataclass
class Load:
    """``rate`` requests/s to ``path`` on ``port``, spread over ``connections`` threads, until stopped."""

    port: int
    path: str
    body: dict[str, object]
    rate: float = 150.0
    connections: int = 4
    headers: dict[str, str] = field(default_factory=dict)  # e.g. the predictors' Authorization
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _worker(self, offset: float) -> None:
        payload = json.dumps(self.body).encode()
        headers = {"content-type": "application/json", **self.headers}
        conn: http.client.HTTPConnection | None = None
        period = self.connections / self.rate
        next_at = time.monotonic() + offset
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += period
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", self.path, payload, headers)
                resp = conn.getresponse()
                resp.read()
                answer = Answer(sent, resp.status, resp.headers.get("x-model-version", ""),
                                seconds=time.monotonic() - sent)
                if resp.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                answer = Answer(sent, 0, "", f"{type(exc).__name__}: {exc}", time.monotonic() - sent)
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.answers.append(answer)
        if conn is not None:
            conn.close()

    def start(self) -> Load:
        self._stop.clear()
        period = self.connections / self.rate
        for i in range(self.connections):
            t = threading.Thread(target=self._worker, args=(i * period / self.connections,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        self._threads.clear()

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if start <= a.at < end]

    @staticmethod
    def failed(answers: list[Answer]) -> int:
        return sum(1 for a in answers if a.status == 0 or a.status >= 500)

    @staticmethod
    def p99_seconds(answers: list[Answer]) -> float:
        """The 99th percentile of the answered requests' latency as the client saw it (0.0 without any)."""
        import numpy as np

        took = [a.seconds for a in answers if a.status == 200]
        return float(np.quantile(took, 0.99)) if took else 0.0

    @staticmethod
    def versions(answers: list[Answer]) -> Counter[str]:
        return Counter(a.version for a in answers if a.status == 200)
