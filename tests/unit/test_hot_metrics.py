"""The request-path metrics (plain numbers, exported by a collector) expose exactly what
prometheus_client's own Counter and Histogram would for the same updates."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference_services import metrics

pytestmark = pytest.mark.unit


def _samples(text: str, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) if f.name == name for s in f.samples
            if not s.name.endswith("_created")}


def test_counters_and_histograms_match_prometheus_client() -> None:
    rng = random.Random(7)
    reference = CollectorRegistry()
    ref_requests = Counter("zm_requests", "x", ["model", "version", "protocol", "status"], registry=reference)
    ref_latency = Histogram("zm_request_duration_seconds", "x", ["model", "version", "protocol"],
                            buckets=metrics.LATENCY_BUCKETS, registry=reference)
    values = [rng.choice([0.00005, 0.0001, 0.0003, 0.002, 0.02, 3.0, rng.random() / 100]) for _ in range(500)]
    for i, value in enumerate(values):
        status = "200" if i % 7 else "400"
        metrics.child(metrics.REQUESTS, "m-test", "9", "v1", status).inc()
        ref_requests.labels("m-test", "9", "v1", status).inc()
        metrics.child(metrics.LATENCY, "m-test", "9", "v1").observe(value)
        ref_latency.labels("m-test", "9", "v1").observe(value)  # bucket edges included (0.0001 is in le=0.0001)

    ours = generate_latest().decode()
    theirs = generate_latest(reference).decode()
    for name in ("zm_requests", "zm_request_duration_seconds"):
        got = {k: v for k, v in _samples(ours, name).items() if ("model", "m-test") in k[1]}
        want = _samples(theirs, name)
        assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k]) for k in want), name


def test_wrong_label_count_is_refused() -> None:
    with pytest.raises(ValueError, match="labels"):
        metrics.REQUESTS.labels("only-one")
