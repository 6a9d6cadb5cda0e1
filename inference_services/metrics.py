"""Prometheus metrics of the inference services, beyond kserve's default latency histograms.

kserve exports latency histograms whose first bucket is 5 ms and no request or error
counters. These add: requests by model, version, protocol and HTTP status (from the
middleware, so errors raised before our code, such as invalid JSON, are counted too);
latency with sub-millisecond buckets; what the models predict; cache and fallback counters.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

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
    "FALLBACKS",
    "MODEL_VERSION",
    "READY",
]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "zm_requests_total",
    "Inference requests by model, serving version, protocol (v1, v2, other) and HTTP status code.",
    ["model", "version", "protocol", "status"],
)
LATENCY = Histogram(
    "zm_request_duration_seconds",
    "Wall time of inference requests in the server, from the first byte read to the response.",
    ["model", "version", "protocol"],
    buckets=LATENCY_BUCKETS,
)
ROWS = Counter("zm_prediction_rows_total", "Rows (instances) predicted.", ["model", "version"])
FORECAST_UNITS = Histogram(
    "zm_forecast_units",
    "Mean forecast weekly units of each answer (prediction distribution).",
    ["model", "version"],
    buckets=(10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000),
)
SEGMENTS = Counter("zm_segment_predictions_total", "Customers assigned per segment.", ["model", "version", "segment"])
RECOMMENDED = Counter(
    "zm_recommendations_total", "Recommendation lists served, by cold start.", ["model", "version", "cold_start"]
)
COVERAGE = Gauge(
    "zm_recommendation_coverage",
    "Share of the catalogue recommended at least once by this process for this version.",
    ["model", "version"],
)
CACHE = Counter("zm_cache_requests_total", "Prediction cache lookups by result (hit, miss).", ["model", "result"])
FALLBACKS = Counter(
    "zm_feature_fallbacks_total",
    "Answers given without online features (degraded), by reason (timeout, error, missing).",
    ["model", "reason"],
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
