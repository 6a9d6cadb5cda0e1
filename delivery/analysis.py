"""Canary analysis shared by both backends: per-version error rate, p99 latency and a quality proxy over
one analysis window, judged against the stable version and against absolute thresholds from settings.
A latency limit is judged on the window's latency histogram: a candidate fails it when its requests slower than the
limit are significantly more than the 1% a p99 within the limit allows (:func:`judge`), so one slow request of the
75 a 10% step may see in a short window is not a slow version.

The numbers come from the services' own counters (``zm_requests_total``, ``zm_request_duration_seconds``,
``zm_forecast_units``): the local backend reads each process's ``/metrics`` at the start and end of a
window (:func:`scrape` and :func:`window`), the Kubernetes backend asks Prometheus for the increase over
the window (``kserve.PrometheusSource``). Both produce :class:`VersionStats`; :func:`judge` decides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from zmlops.settings import RolloutSettings

__all__ = ["Counters", "VersionStats", "Verdict", "parse", "window", "quantile", "tail_probability", "judge"]

PREDICT = ("v1", "v2")


@dataclass
class Counters:
    """Cumulative counters of one version at one moment (summed over protocols and processes)."""

    requests: float = 0.0
    errors: float = 0.0  # 5xx answers
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    units_sum: float = 0.0  # forecast answers: sum and count of mean units (quality proxy)
    units_count: float = 0.0

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for le, n in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + n
        self.units_sum += other.units_sum
        self.units_count += other.units_count


@dataclass
class VersionStats:
    """What one version did during one window."""

    version: str
    requests: float
    errors: float
    buckets: dict[float, float] = field(default_factory=dict)  # request latency: le -> cumulative count
    mean_units: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_seconds(self) -> float | None:
        return quantile(0.99, self.buckets)

    def slower_than(self, seconds: float) -> tuple[int, int]:
        """Requests timed above ``seconds`` (linear within the bucket, as :func:`quantile`) and requests timed."""
        total, below, previous_le, previous_count = 0.0, 0.0, 0.0, 0.0
        for le in sorted(self.buckets):
            count = self.buckets[le]
            total = count
            if le <= seconds:
                below = count
            elif previous_le < seconds and not math.isinf(le):
                below = previous_count + (count - previous_count) * (seconds - previous_le) / (le - previous_le)
            previous_le, previous_count = le, count
        return round(total - below), round(total)


@dataclass
class Verdict:
    """The outcome of one check: ``passed`` (None when there was too little traffic to judge)."""

    passed: bool | None
    reasons: list[str]
    candidate: VersionStats
    stable: VersionStats | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for side, stats in (("candidate", self.candidate), ("stable", self.stable)):
            if stats is not None:
                del out[side]["buckets"]
                out[side].update(error_rate=stats.error_rate, p99_seconds=stats.p99_seconds)
        return out


def parse(text: str, family: str) -> dict[str, Counters]:
    """Counters by served version from one Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Counters] = {}
    for metric in text_string_to_metric_families(text):
        for s in metric.samples:
            if s.labels.get("model") != family:
                continue
            version = s.labels.get("version", "")
            c = out.setdefault(version, Counters())
            if s.name == "zm_requests_total" and s.labels.get("protocol") in PREDICT:
                c.requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    c.errors += s.value
            elif s.name == "zm_request_duration_seconds_bucket" and s.labels.get("protocol") in PREDICT:
                le = float(s.labels["le"])
                c.buckets[le] = c.buckets.get(le, 0.0) + s.value
            elif s.name == "zm_forecast_units_sum":
                c.units_sum += s.value
            elif s.name == "zm_forecast_units_count":
                c.units_count += s.value
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it (linear within the bucket), on cumulative counts."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return previous_le
            width = count - previous_count
            return previous_le + (le - previous_le) * ((rank - previous_count) / width if width else 1.0)
        previous_le, previous_count = le, count
    return previous_le


def window(version: str, before: Counters | None, after: Counters | None) -> VersionStats:
    """The difference of two snapshots of one version (a process restart resets to the later value)."""
    before = before or Counters()
    after = after or Counters()
    if after.requests < before.requests:  # counter reset
        before = Counters()
    buckets = {le: after.buckets.get(le, 0.0) - before.buckets.get(le, 0.0) for le in after.buckets}
    units_n = after.units_count - before.units_count
    return VersionStats(
        version=version,
        requests=after.requests - before.requests,
        errors=after.errors - before.errors,
        buckets=buckets,
        mean_units=(after.units_sum - before.units_sum) / units_n if units_n > 0 else None,
    )


def tail_probability(slower: int, timed: int, share: float = 0.01) -> float:
    """How likely ``slower`` or more of ``timed`` requests are above a latency bound when only ``share`` of a
    version's requests are (its p99 at the bound): the one-sided binomial test of a p99 limit."""
    if slower <= 0:
        return 1.0
    from scipy.special import bdtrc  # P(X > k) for X ~ Binomial(n, p); imported only when a p99 is over a limit

    return float(bdtrc(slower - 1, timed, share))


def judge(candidate: VersionStats, stable: VersionStats | None, limits: RolloutSettings) -> Verdict:
    """Compare the candidate with the stable version and with absolute limits."""
    if candidate.requests < limits.min_requests:
        return Verdict(None, [f"{candidate.requests:.0f} requests, fewer than {limits.min_requests} to judge"],
                       candidate, stable)
    reasons = []
    baseline = stable.error_rate if stable is not None and stable.requests >= limits.min_requests else 0.0
    if candidate.error_rate > limits.max_error_rate and candidate.error_rate > baseline + limits.error_rate_margin:
        reasons.append(f"error rate {candidate.error_rate:.2%} above {limits.max_error_rate:.2%} "
                       f"(stable {baseline:.2%})")
    p99 = candidate.p99_seconds
    if p99 is not None:
        bounds = [(limits.max_p99_seconds, f"above {limits.max_p99_seconds * 1000:.0f} ms")]
        stable_p99 = stable.p99_seconds if stable is not None and stable.requests >= limits.min_requests else None
        if stable_p99:  # below the floor a ratio is noise
            bounds.append((max(limits.p99_floor_seconds, limits.max_p99_ratio * stable_p99),
                           f"is {p99 / stable_p99:.1f}x the stable {stable_p99 * 1000:.2f} ms "
                           f"(limit {limits.max_p99_ratio:g}x)"))
        for bound, says in bounds:
            if p99 <= bound:
                continue
            slower, timed = candidate.slower_than(bound)
            if tail_probability(slower, timed) < limits.latency_alpha:
                reasons.append(f"p99 {p99 * 1000:.2f} ms {says}: {slower} of {timed} requests above "
                               f"{bound * 1000:.2f} ms")
    if candidate.mean_units is not None and stable is not None and stable.mean_units:
        change = abs(candidate.mean_units / stable.mean_units - 1)
        if change > limits.max_quality_change:
            reasons.append(f"mean forecast {candidate.mean_units:.1f} units differs {change:.0%} from the "
                           f"stable {stable.mean_units:.1f} (limit {limits.max_quality_change:.0%})")
    return Verdict(not reasons, reasons, candidate, stable)
