"""Prometheus metrics of the inference services, beyond kserve's default latency histograms.

kserve exports latency histograms whose first bucket is 5 ms and no request or error
counters. These add: requests by model, version, protocol and HTTP status (from the
middleware, so errors raised before our code, such as invalid JSON, are counted too);
latency with sub-millisecond buckets; what the models predict; batch, cache and fallback
counters.

Counters and histograms on the request path are kept as plain Python numbers and handed
to prometheus_client's registry by a collector at scrape time. prometheus_client's own metric
classes take a lock and walk the buckets in Python on every update: measured side by side
(``python -m benchmarks.bench_inprocess metrics FAMILY BODY`` with and without ``--prometheus-classes``, two
runs each, 2026-12-05), a
forecast request's instrumentation cost 13-17 us with them against 7-8 us this way, a segment
request's 10-11 us against 5 us: about 1.10 of an uninstrumented request's CPU instead of 1.05,
the target. They are written only from
the server's event loop thread, which also answers ``/metrics`` (kserve's handler is async),
so they need no lock. Gauges set from the loading thread (version, readiness) and the
coverage gauge stay prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "child",
    "REQUESTS",
    "LATENCY",
    "ROWS",
    "FORECAST_UNITS",
    "SEGMENTS",
    "RECOMMENDED",
    "COVERAGE",
    "CACHE",
    "FEATURE_CACHE",
    "FALLBACKS",
    "BATCH_ROWS",
    "MODEL_VERSION",
    "READY",
    "SHADOW",
    "SHADOW_AGREEMENT",
    "SHADOW_LATENCY",
]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # first bucket whose bound is >= value
        self.total += value


class _HotMetric:
    """A counter or histogram of the request path: ``labels(*values)`` gives a child to update."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float] | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.buckets = tuple(float(b) for b in buckets) if buckets is not None else None
        self.children: dict[tuple[str, ...], Any] = {}
        _HOT.append(self)

    def labels(self, *values: str) -> Any:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = (_HistogramChild(self.buckets) if self.buckets is not None
                                          else _CounterChild())
        return found

    def family(self) -> Metric:
        if self.buckets is None:
            counters = CounterMetricFamily(self.name.removesuffix("_total"), self.documentation,
                                           labels=self.labelnames)
            for key, counter in list(self.children.items()):
                counters.add_metric(list(key), counter.value)
            return counters
        hist = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, h in list(self.children.items()):
            counts, running, cumulative = list(h.counts), 0, []
            for bound, n in zip([*self.buckets, float("inf")], counts, strict=True):
                running += n
                cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            hist.add_metric(list(key), cumulative, sum_value=h.total)
        return hist


_HOT: list[_HotMetric] = []


class _HotPathCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        for metric in _HOT:
            yield metric.family()


REQUESTS = _HotMetric(
    "zm_requests_total",
    "Inference requests by model, serving version, protocol (v1, v2, other) and HTTP status code.",
    ["model", "version", "protocol", "status"],
)
LATENCY = _HotMetric(
    "zm_request_duration_seconds",
    "Wall time of inference requests in the server, from the first byte read to the response.",
    ["model", "version", "protocol"],
    buckets=LATENCY_BUCKETS,
)
ROWS = _HotMetric("zm_prediction_rows_total", "Rows (instances) predicted.", ["model", "version"])
FORECAST_UNITS = _HotMetric(
    "zm_forecast_units",
    "Mean forecast weekly units of each answer (prediction distribution).",
    ["model", "version"],
    buckets=(10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000),
)
SEGMENTS = _HotMetric("zm_segment_predictions_total", "Customers assigned per segment.",
                      ["model", "version", "segment"])
RECOMMENDED = _HotMetric(
    "zm_recommendations_total", "Recommendation lists served, by cold start.", ["model", "version", "cold_start"]
)
CACHE = _HotMetric("zm_cache_requests_total", "Prediction cache lookups by result (hit, miss).", ["model", "result"])
FEATURE_CACHE = _HotMetric("zm_feature_cache_requests_total",
                           "Online-feature cache lookups per entity id by result (hit, miss: read from the store).",
                           ["model", "result"])
FALLBACKS = _HotMetric(
    "zm_feature_fallbacks_total",
    "Answers given without online features (degraded), by reason (timeout, error, missing).",
    ["model", "reason"],
)
BATCH_ROWS = _HotMetric(
    "zm_batch_rows",
    "Rows per model call: concurrent requests answered together (inference_services.batching).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
SHADOW = _HotMetric("zm_shadow_requests_total", "Production requests mirrored to the shadow version, by result "
                    "(agree: same answers, differ, error: the shadow failed, dropped: its queue was full).",
                    ["model", "version", "result"])
SHADOW_AGREEMENT = _HotMetric("zm_shadow_agreement", "Agreement of the shadow version's answers with production's "
                              "(1 = the same; rank overlap for recommendations).", ["model", "version"],
                              buckets=(0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0))
SHADOW_LATENCY = _HotMetric("zm_shadow_duration_seconds", "Time the shadow version took to answer a mirrored request.",
                            ["model", "version"], buckets=LATENCY_BUCKETS)
REGISTRY.register(_HotPathCollector())

COVERAGE = Gauge(
    "zm_recommendation_coverage",
    "Share of the catalogue recommended at least once by this process for this version.",
    ["model", "version"],
)
MODEL_VERSION = Gauge(
    "zm_model_version_info", "1 for the registered version this process serves.", ["model", "version", "alias"]
)
READY = Gauge("zm_model_ready", "1 when the model is loaded and passed its smoke prediction.", ["model"])

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: the label lookup costs more than the increment."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found
