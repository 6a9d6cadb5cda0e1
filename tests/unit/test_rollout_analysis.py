"""The canary analysis: histogram quantiles as Prometheus computes them, parsing a real exposition,
and the verdicts on error rate, p99 and the forecast quality proxy."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from delivery.analysis import Counters, VersionStats, judge, parse, quantile, window
from zmlops.settings import RolloutSettings

pytestmark = pytest.mark.unit
LIMITS = RolloutSettings()


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    # 100 observations: 90 up to 1 ms, 10 between 1 and 5 ms -> p99 at 90% of the (1, 5] bucket
    buckets = {0.001: 90.0, 0.005: 100.0, float("inf"): 100.0}
    assert quantile(0.99, buckets) == pytest.approx(0.001 + 0.004 * 0.9)
    assert quantile(0.5, buckets) == pytest.approx(0.001 * 50 / 90)
    assert quantile(0.99, {}) is None and quantile(0.99, {float("inf"): 0.0}) is None
    assert quantile(0.99, {0.001: 0.0, float("inf"): 10.0}) == 0.001  # all above the last bound


def _exposition(version_requests: dict[str, tuple[int, int, list[float]]]) -> str:
    registry = CollectorRegistry()
    requests = Counter("zm_requests_total", "", ["model", "version", "protocol", "status"], registry=registry)
    latency = Histogram("zm_request_duration_seconds", "", ["model", "version", "protocol"], registry=registry,
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01))
    for version, (ok, errors, seconds) in version_requests.items():
        requests.labels("demand-forecast", version, "v1", "200").inc(ok)
        requests.labels("demand-forecast", version, "v1", "503").inc(errors)
        requests.labels("demand-forecast", version, "v1", "422").inc(3)  # client errors do not count
        requests.labels("other-model", version, "v1", "500").inc(99)  # another model does not count
        for s in seconds:
            latency.labels("demand-forecast", version, "v1").observe(s)
    return generate_latest(registry).decode()


def test_parse_and_window_give_per_version_deltas() -> None:
    before = parse(_exposition({"1": (100, 0, [0.0004] * 100)}), "demand-forecast")
    after = parse(_exposition({"1": (300, 4, [0.0004] * 290 + [0.004] * 10)}), "demand-forecast")
    stats = window("1", before["1"], after["1"])
    assert stats.requests == 300 + 4 + 3 - (100 + 3) and stats.errors == 4
    assert stats.p99_seconds is not None and 0.002 < stats.p99_seconds <= 0.005
    # a restarted process (counters went down) is judged on its new counters alone
    restarted = window("1", after["1"], before["1"])
    assert restarted.requests == before["1"].requests
    assert window("2", None, None).requests == 0


def _stats(version: str, requests: float, errors: float, p99: float | None, units: float | None = None
           ) -> VersionStats:
    return VersionStats(version, requests, errors, p99, units)


def test_verdicts() -> None:
    stable = _stats("1", 1000, 0, 0.001, 100.0)
    assert judge(_stats("2", 200, 0, 0.0012, 105.0), stable, LIMITS).passed is True
    assert judge(_stats("2", 5, 1, 0.5), stable, LIMITS).passed is None  # too few requests to judge
    errors = judge(_stats("2", 200, 10, 0.001), stable, LIMITS)
    assert errors.passed is False and "error rate 5.00%" in errors.reasons[0]
    # the stable version failing as much is not the candidate's fault
    assert judge(_stats("2", 200, 4, 0.001), _stats("1", 1000, 20, 0.001), LIMITS).passed is True
    slow = judge(_stats("2", 200, 0, 0.005), stable, LIMITS)
    assert slow.passed is False and "5.0x the stable" in slow.reasons[0]
    # below the floor a ratio is noise: 0.9 ms against 0.3 ms passes; 1.5 ms against 0.3 ms does not
    assert judge(_stats("2", 200, 0, 0.0009), _stats("1", 1000, 0, 0.0003), LIMITS).passed is True
    assert judge(_stats("2", 200, 0, 0.0015), _stats("1", 1000, 0, 0.0003), LIMITS).passed is False
    assert judge(_stats("2", 200, 0, 0.3), None, LIMITS).passed is False  # absolute limit, no stable
    quality = judge(_stats("2", 200, 0, 0.001, 300.0), stable, LIMITS)
    assert quality.passed is False and "mean forecast" in quality.reasons[0]


def test_a_plan_must_rise_to_100() -> None:
    with pytest.raises(ValueError, match="end at 100"):
        RolloutSettings(steps=(10, 50))
    with pytest.raises(ValueError, match="rise strictly"):
        RolloutSettings(steps=(50, 10, 100))
    assert Counters().requests == 0
