"""The canary analysis: histogram quantiles as Prometheus computes them, parsing a real exposition,
and the verdicts on error rate, p99 and the forecast quality proxy."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from delivery.analysis import Counters, VersionStats, judge, parse, quantile, tail_probability, window
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


BOUNDS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.25, 0.5, float("inf"))


def _stats(version: str, seconds: dict[float, int], errors: float = 0, units: float | None = None) -> VersionStats:
    """A window whose requests took the given seconds (seconds -> requests), in a histogram of BOUNDS."""
    buckets = {le: float(sum(n for s, n in seconds.items() if s <= le)) for le in BOUNDS}
    return VersionStats(version, sum(seconds.values()), errors, buckets, units)


def test_verdicts() -> None:
    stable = _stats("1", {0.0004: 990, 0.0008: 10}, units=100.0)
    assert judge(_stats("2", {0.0004: 198, 0.0009: 2}, units=105.0), stable, LIMITS).passed is True
    assert judge(_stats("2", {0.4: 5}, errors=1), stable, LIMITS).passed is None  # too few requests to judge
    errors = judge(_stats("2", {0.0004: 200}, errors=10), stable, LIMITS)
    assert errors.passed is False and "error rate 5.00%" in errors.reasons[0]
    # the stable version failing as much is not the candidate's fault
    assert judge(_stats("2", {0.0004: 200}, errors=4), _stats("1", {0.0004: 1000}, errors=20), LIMITS).passed is True
    slow = judge(_stats("2", {0.004: 200}), stable, LIMITS)
    assert slow.passed is False and "x the stable" in slow.reasons[0] and "200 of 200 requests above" in slow.reasons[0]
    # below the floor a ratio is noise: 0.9 ms against 0.3 ms passes; 1.5 ms against 0.3 ms does not
    assert judge(_stats("2", {0.0009: 200}), _stats("1", {0.0003: 1000}), LIMITS).passed is True
    assert judge(_stats("2", {0.0015: 200}), _stats("1", {0.0003: 1000}), LIMITS).passed is False
    absolute = judge(_stats("2", {0.3: 200}), None, LIMITS)  # absolute limit, no stable
    assert absolute.passed is False and "above 250 ms" in absolute.reasons[0]
    quality = judge(_stats("2", {0.0004: 200}, units=300.0), stable, LIMITS)
    assert quality.passed is False and "mean forecast" in quality.reasons[0]
    assert quality.to_dict()["candidate"]["p99_seconds"] == quality.candidate.p99_seconds


def test_one_slow_request_in_a_small_window_is_not_a_slow_version() -> None:
    # A 10% step's short window: 75 candidate requests against the stable version's 675 (p99 0.52 ms). One request
    # at 1.5 ms puts the candidate's p99 at 2.4x the stable one, but one of 75 above the 2x limit is what a version
    # within the limit shows half the time; four still pass (0.7% likely), five do not (0.097%, under latency_alpha).
    stable = _stats("1", {0.0003: 668, 0.0007: 7})
    assert stable.p99_seconds == pytest.approx(0.0005, rel=0.05)
    one = _stats("2", {0.0003: 74, 0.0015: 1})
    assert one.p99_seconds is not None and one.p99_seconds > 2 * stable.p99_seconds
    assert one.slower_than(2 * stable.p99_seconds) == (1, 75)
    assert judge(one, stable, LIMITS).passed is True
    assert judge(_stats("2", {0.0003: 71, 0.0015: 4}), stable, LIMITS).passed is True
    five = judge(_stats("2", {0.0003: 70, 0.0015: 5}), stable, LIMITS)
    assert five.passed is False and "5 of 75 requests above 1.04 ms" in five.reasons[0]


def test_the_tail_test_is_the_binomial_tail() -> None:
    assert tail_probability(0, 75) == 1.0
    assert tail_probability(1, 75) == pytest.approx(1 - 0.99 ** 75)
    assert tail_probability(2, 75) == pytest.approx(1 - 0.99 ** 75 - 75 * 0.01 * 0.99 ** 74)
    assert tail_probability(75, 75) == pytest.approx(0.01 ** 75)
    # linear within the bucket, as the quantile: half of (1, 2] ms lies above 1.5 ms
    assert _stats("2", {0.0015: 10, 0.0003: 10}).slower_than(0.0015) == (5, 20)
    assert _stats("2", {0.7: 4, 0.0003: 6}).slower_than(0.5) == (4, 10)  # the +Inf bucket is above any bound


def test_a_plan_must_rise_to_100() -> None:
    with pytest.raises(ValueError, match="end at 100"):
        RolloutSettings(steps=(10, 50))
    with pytest.raises(ValueError, match="rise strictly"):
        RolloutSettings(steps=(50, 10, 100))
    assert Counters().requests == 0
