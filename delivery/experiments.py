"""A/B tests of model versions: design, planned sample, sticky assignment, sample-ratio check, and a
group-sequential test that may be looked at every day without inflating false positives.

An experiment compares model versions of one family (variants) on a primary metric, the click-through
rate per customer: the share of customers shown a variant's recommendations who clicked one of them.
The customer is the unit of randomisation and of analysis, so outcomes are independent and a test of
two proportions holds.

- **Plan** (before the start): the fixed-horizon sample per variant for the stated minimum relative effect,
  alpha and power (statsmodels' ``NormalIndPower`` on Cohen's h), times the inflation that the
  group-sequential design costs, found from the design's boundaries.
- **Boundaries**: Lan-DeMets alpha spending of the O'Brien-Fleming type over the planned daily looks,
  two-sided. The boundary of look k is the |z| at which the probability of crossing by look k, under no
  effect, is the alpha spent by then; the probabilities are multivariate normal (scipy's Genz integration
  of the canonical joint distribution, corr(Z_i, Z_j) = sqrt(t_i / t_j)).
- **Assignment**: a customer's variant is a hash of the experiment name and their pseudonym, so it is the
  same on every request and every replica, and independent between experiments.
- **Sample-ratio mismatch**: a chi-square test of the customers per variant against the split (scipy); a
  p-value under ``srm_alpha`` (0.001) flags the experiment: its results are not to be trusted.
- **Analysis** (each look): z of the difference in proportions (statsmodels' ``test_proportions_2indep``,
  Wald) against the look's boundary, with a repeated confidence interval at the boundary's level (one that
  holds at every look at once). Decision: ``ship`` when the treatment is better beyond the boundary,
  ``stop`` when worse beyond it, when the last look ends without a crossing, or on a sample-ratio
  mismatch or a guardrail breach; otherwise ``continue``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Design", "Plan", "Look", "Analysis", "plan", "boundaries", "assign", "sample_ratio", "z_scores",
           "first_crossing", "analyse", "spent", "daily_looks"]

CONTROL, TREATMENT = "control", "treatment"


@dataclass(frozen=True)
class Design:
    """What an experiment compares and how it decides, fixed before it starts."""

    name: str
    family: str = "product-recommendation"
    variants: Mapping[str, str] = field(default_factory=lambda: {CONTROL: "", TREATMENT: ""})  # -> model version
    split: Mapping[str, float] = field(default_factory=lambda: {CONTROL: 0.5, TREATMENT: 0.5})
    metric: str = "ctr"  # clicked customers / customers shown the variant
    baseline_rate: float = 0.05  # the control's expected rate, for the plan
    min_relative_effect: float = 0.10  # the smallest uplift worth detecting (relative)
    alpha: float = 0.05  # two-sided
    power: float = 0.8
    looks: int = 7  # one a day
    srm_alpha: float = 0.001
    guardrails: Mapping[str, float] = field(default_factory=lambda: {"error_rate": 0.01, "p99_latency_ms": 250.0})

    def __post_init__(self) -> None:
        if set(self.variants) != {CONTROL, TREATMENT} or set(self.split) != {CONTROL, TREATMENT}:
            raise ValueError(f"variants and split: exactly {CONTROL!r} and {TREATMENT!r}")
        if abs(sum(self.split.values()) - 1.0) > 1e-9 or min(self.split.values()) <= 0:
            raise ValueError("split: positive shares that sum to 1")
        if not 0 < self.baseline_rate < 1 or not 0 < self.baseline_rate * (1 + self.min_relative_effect) < 1:
            raise ValueError("baseline_rate: the control's and the treatment's expected rates must be in (0, 1)")
        if not 0 < self.alpha < 0.5 or not 0.5 <= self.power < 1:
            raise ValueError("alpha in (0, 0.5), power in [0.5, 1)")
        if not 1 <= self.looks <= 14:
            raise ValueError("looks: 1 to 14 (the boundaries' integration grows with the looks)")


@dataclass(frozen=True)
class Plan:
    """The sample and the boundaries, computed before the start."""

    fixed_per_variant: dict[str, int]  # a single look's sample
    per_variant: dict[str, int]  # the group-sequential design's largest sample
    inflation: float  # per_variant / fixed_per_variant
    fractions: tuple[float, ...]  # information at each look (share of the largest sample)
    boundaries: tuple[float, ...]  # |z| that stops the experiment at each look

    @property
    def total(self) -> int:
        return sum(self.per_variant.values())


def spent(t: float | np.ndarray, alpha: float) -> Any:
    """Alpha spent by information fraction ``t``: Lan-DeMets, O'Brien-Fleming type, two-sided
    (alpha/2 per side, each side 2 - 2 Phi(z_{1-alpha/4} / sqrt(t)))."""
    from scipy.stats import norm

    return 4.0 * norm.sf(norm.isf(alpha / 4.0) / np.sqrt(t))


def _continue_probability(limits: Sequence[float], fractions: Sequence[float], drift: float = 0.0) -> float:
    """P(|Z_i| < limits_i at every look) for the canonical joint distribution of the looks' z statistics with
    mean ``drift * sqrt(t_i)`` (the drift is the expected z at the end)."""
    from scipy.stats import multivariate_normal, norm

    t = np.asarray(fractions, dtype=float)
    c = np.asarray(limits, dtype=float)
    mean = drift * np.sqrt(t)
    if len(t) == 1:
        return float(norm.cdf(c[0] - mean[0]) - norm.cdf(-c[0] - mean[0]))
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    mvn = multivariate_normal(mean=mean, cov=cov, seed=20261204, maxpts=20_000 * len(t), abseps=1e-5, releps=0)
    return float(mvn.cdf(c, lower_limit=-c))


@lru_cache(maxsize=32)
def boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """|z| boundaries at the looks ``fractions`` (increasing, the last 1.0) spending ``alpha``."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    out: list[float] = []
    for k, t in enumerate(fractions):
        stay = 1.0 - float(spent(t, alpha))
        if k == 0:
            out.append(float(norm.isf((1.0 - stay) / 2.0)))
            continue
        out.append(float(brentq(lambda c, known=tuple(out), target=stay, upto=fractions[: k + 1]:
                                _continue_probability([*known, c], upto) - target, 0.5, 40.0, xtol=1e-3)))
    return tuple(out)


def plan(design: Design) -> Plan:
    """The planned sample per variant and the boundaries of ``design``'s looks."""
    from scipy.optimize import brentq
    from scipy.stats import norm
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    p0 = design.baseline_rate
    p1 = p0 * (1 + design.min_relative_effect)
    ratio = design.split[TREATMENT] / design.split[CONTROL]
    n_control = NormalIndPower().solve_power(effect_size=proportion_effectsize(p1, p0), alpha=design.alpha,
                                             power=design.power, ratio=ratio, alternative="two-sided")
    fractions = tuple(float(k) / design.looks for k in range(1, design.looks + 1))
    limits = boundaries(fractions, design.alpha)
    # the drift (expected final z) at which the sequential design has the stated power, against the single look's
    single = float(norm.isf(design.alpha / 2) + norm.ppf(design.power))
    drift = brentq(lambda d: 1.0 - _continue_probability(limits, fractions, d) - design.power, single * 0.9,
                   single * 1.5, xtol=1e-4)
    inflation = float((drift / single) ** 2)
    fixed = {CONTROL: int(np.ceil(n_control)), TREATMENT: int(np.ceil(n_control * ratio))}
    return Plan(fixed, {k: int(np.ceil(v * inflation)) for k, v in fixed.items()}, inflation, fractions, limits)


def assign(experiment: str, pseudonym: str, split: Mapping[str, float]) -> str:
    """The variant of a customer (by pseudonym): sticky, and independent between experiments."""
    digest = hashlib.sha256(f"{experiment}\x00{pseudonym}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for variant, share in sorted(split.items()):
        edge += share
        if u < edge:
            return variant
    return sorted(split)[-1]


def sample_ratio(counts: Mapping[str, int], split: Mapping[str, float], srm_alpha: float = 0.001) -> dict[str, Any]:
    """Chi-square test of the customers per variant against the planned split."""
    from scipy.stats import chisquare

    names = sorted(split)
    observed = np.array([counts.get(n, 0) for n in names], dtype=float)
    expected = observed.sum() * np.array([split[n] for n in names])
    if observed.sum() == 0:
        return {"chi2": 0.0, "p_value": 1.0, "mismatch": False}
    result = chisquare(observed, expected)
    return {"chi2": float(result.statistic), "p_value": float(result.pvalue),
            "mismatch": bool(result.pvalue < srm_alpha)}


def z_scores(clicks_c: Any, n_c: Any, clicks_t: Any, n_t: Any) -> np.ndarray:
    """z of treatment minus control click-through (vectorised over experiments or looks)."""
    from statsmodels.stats.proportion import test_proportions_2indep

    n_c, n_t = np.maximum(np.asarray(n_c, float), 1.0), np.maximum(np.asarray(n_t, float), 1.0)
    clicks_c, clicks_t = np.asarray(clicks_c, float), np.asarray(clicks_t, float)
    both = (clicks_c + clicks_t) / (n_c + n_t)
    flat = (both <= 0) | (both >= 1)  # no click at all (or all clicked): no evidence either way
    with np.errstate(invalid="ignore", divide="ignore"):
        z = test_proportions_2indep(clicks_t, n_t, clicks_c, n_c, method="wald", compare="diff",
                                    correction=False).statistic
    return np.where(flat | ~np.isfinite(z), 0.0, z)


def first_crossing(z: Any, limits: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """For z statistics of shape (..., looks): the first look (0-based) whose |z| reaches its boundary, -1 where
    none does, and the sign of z there (+1 treatment better, -1 worse, 0 none)."""
    z = np.asarray(z, dtype=float)
    crossed = np.abs(z) >= np.asarray(limits[: z.shape[-1]], dtype=float)
    look = np.where(crossed.any(axis=-1), crossed.argmax(axis=-1), -1)
    at = np.take_along_axis(z, np.maximum(look, 0)[..., None], axis=-1)[..., 0]
    return look, np.where(look >= 0, np.sign(at), 0).astype(int)


@dataclass
class Look:
    day: int
    customers: dict[str, int]
    clicks: dict[str, int]
    rate: dict[str, float]
    z: float
    boundary: float
    difference: float
    ci: tuple[float, float]  # repeated confidence interval of the difference at the boundary's level
    relative_ci: tuple[float, float]  # of treatment / control - 1
    srm: dict[str, Any]


@dataclass
class Analysis:
    design: dict[str, Any]
    plan: dict[str, Any]
    looks: list[Look]
    decision: str  # ship | stop | continue
    reason: str
    guardrails: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)  # what the analysis could not read, said in the report

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyse(design: Design, planned: Plan, daily: Sequence[Mapping[str, Mapping[str, int]]],
            guardrails: Mapping[str, Mapping[str, float]] | None = None) -> Analysis:
    """Each day's look at the cumulative counts ``daily[k] = {"customers": {variant: n}, "clicks": {...}}`` and
    the decision the last one supports. ``guardrails``: {variant: {"error_rate": .., "p99_latency_ms": ..}}."""
    from scipy.stats import norm
    from statsmodels.stats.proportion import confint_proportions_2indep

    looks: list[Look] = []
    decision, reason = "continue", "no boundary crossed yet"
    breached = [f"{variant} {name} {value:g} > {design.guardrails[name]:g}"
                for variant, values in (guardrails or {}).items() for name, value in values.items()
                if name in design.guardrails and value > design.guardrails[name]]
    for k, counts in enumerate(daily[: design.looks]):
        n, c = counts["customers"], counts["clicks"]
        boundary = planned.boundaries[k]
        z = float(z_scores(c[CONTROL], n[CONTROL], c[TREATMENT], n[TREATMENT]))
        level = float(2 * norm.sf(boundary)) if np.isfinite(boundary) else 1e-12
        args = (max(c[TREATMENT], 0), max(n[TREATMENT], 1), max(c[CONTROL], 0), max(n[CONTROL], 1))
        diff_ci = confint_proportions_2indep(*args, method="wald", compare="diff", alpha=level)
        ratio_ci = confint_proportions_2indep(*args, method="log", compare="ratio", alpha=level) \
            if min(c[TREATMENT], c[CONTROL]) > 0 else (0.0, float("inf"))
        rate = {v: c[v] / max(n[v], 1) for v in (CONTROL, TREATMENT)}
        srm = sample_ratio(n, design.split, design.srm_alpha)
        looks.append(Look(k + 1, dict(n), dict(c), rate, z, boundary, rate[TREATMENT] - rate[CONTROL],
                          (float(diff_ci[0]), float(diff_ci[1])),
                          (float(ratio_ci[0]) - 1.0, float(ratio_ci[1]) - 1.0), srm))
        if srm["mismatch"]:
            decision, reason = "stop", (f"sample-ratio mismatch on day {k + 1} (chi-square p = {srm['p_value']:.2g}):"
                                        " the assignment or the logging is broken; the results are not trusted")
            break
        if breached:
            decision, reason = "stop", "guardrail breached: " + "; ".join(breached)
            break
        crossed, sign = first_crossing([z], [boundary])
        if crossed[()] >= 0 and sign[()] > 0:
            decision, reason = "ship", (f"treatment better on day {k + 1}: z {z:.2f} >= boundary {boundary:.2f}")
            break
        if crossed[()] >= 0:
            decision, reason = "stop", (f"treatment worse on day {k + 1}: z {z:.2f} <= -{boundary:.2f}")
            break
        if k + 1 == design.looks:
            decision, reason = "stop", (f"no difference at the last look (z {z:.2f}, boundary {boundary:.2f}): "
                                        f"smaller than the {design.min_relative_effect:.0%} worth detecting, if any")
    return Analysis(asdict(design) | {"variants": dict(design.variants), "split": dict(design.split),
                                      "guardrails": dict(design.guardrails)},
                    asdict(planned), looks, decision, reason, {v: dict(g) for v, g in (guardrails or {}).items()})


# ---------------------------------------------------------------- report, record, carry out
REPORT = Path(__file__).with_name("experiment_report.html.j2")  # the page, a Jinja2 template


def report_html(analysis: Analysis) -> str:
    """The experiment's page: decision and reason first, then the plan, the looks (a chart and a table)."""
    from zmlops import pages

    bound = max([abs(b) for b in analysis.plan["boundaries"] if np.isfinite(b)] + [abs(look.z) for look in
                                                                                    analysis.looks] + [1.0])
    looks = int(analysis.design["looks"])
    return pages.render(
        REPORT, a=analysis, x=lambda day: round(40 + 580 * (day - 0.5) / looks, 1),
        y=lambda z: round(100 - 85 * max(-bound, min(bound, float(z))) / bound, 1))


def record(settings: Any, analysis: Analysis) -> dict[str, str]:
    """Store the analysis (JSON) and its page in the object store and the decision in the audit trail."""
    import json

    from governance import audit
    from zmlops.stores import object_store

    name = analysis.design["name"]
    store = object_store(settings)
    keys = {"analysis": f"experiments/{name}/analysis.json", "report": f"reports/experiments/{name}.html"}
    store.put(keys["analysis"], json.dumps(analysis.to_dict(), indent=1, default=str).encode())
    store.put(keys["report"], report_html(analysis).encode())
    last = analysis.looks[-1] if analysis.looks else None
    audit.record(settings, "experiment.decided", f"experiment:{name}", {
        "decision": analysis.decision, "why": analysis.reason, "family": analysis.design["family"],
        "variants": analysis.design["variants"], "looks": len(analysis.looks),
        "difference": None if last is None else last.difference, "ci": None if last is None else last.ci,
        "report": keys["report"]})
    return keys


def carry_out(settings: Any, analysis: Analysis) -> dict[str, Any]:
    """Put the winner into service through the promotion path: the treatment on ``ship``, the control on
    ``stop``; ``staging`` moves to it and the deploy step (approval where required, the canary where a rollout
    serves the family) moves ``production``. Nothing happens while the experiment continues."""
    from delivery.promotion import deploy
    from training import tracking

    if analysis.decision == "continue":
        return {"deployed": False, "why": "the experiment continues"}
    family = analysis.design["family"]
    winner = str(analysis.design["variants"][TREATMENT if analysis.decision == "ship" else CONTROL])
    if tracking.alias_version(settings, family, "production") == winner:
        return {"family": family, "version": winner, "deployed": False, "why": "already in production"}
    tracking.set_alias(settings, family, "staging", winner)
    return deploy(settings, {"family": family, "version": winner, "decision": "staged"})


# ---------------------------------------------------------------- running experiments (the state database)
def design_of(data: Mapping[str, Any]) -> Design:
    fields = {k: data[k] for k in Design.__dataclass_fields__ if k in data}
    return Design(**fields)


def start(settings: Any, design: Design) -> Plan:
    """Plan ``design`` and register it as running: from the next poll the predictors of its family route its
    customers to their variant. One running experiment per family; the name is unique for ever."""
    import datetime as dt

    from sqlalchemy import insert, select

    from governance import audit
    from zmlops.statedb import EXPERIMENTS, engine

    if any(not v for v in design.variants.values()):
        raise ValueError("variants: both the control's and the treatment's model versions are required")
    planned = plan(design)
    with engine(settings).begin() as conn:
        if conn.execute(select(EXPERIMENTS.c.name).where(EXPERIMENTS.c.name == design.name)).first():
            raise ValueError(f"experiment {design.name!r} exists: a name is used once (its assignment salt)")
        other = conn.execute(select(EXPERIMENTS.c.name).where(
            EXPERIMENTS.c.family == design.family, EXPERIMENTS.c.decision.is_(None))).first()
        if other:
            raise ValueError(f"experiment {other.name!r} is running on {design.family}: decide it first")
        conn.execute(insert(EXPERIMENTS).values(
            name=design.name, family=design.family, started_at=dt.datetime.now(dt.UTC),
            design={**asdict(design), "variants": dict(design.variants), "split": dict(design.split),
                    "guardrails": dict(design.guardrails), "plan": asdict(planned)}))
    audit.record(settings, "experiment.started", f"experiment:{design.name}",
                 {"family": design.family, "variants": dict(design.variants), "split": dict(design.split),
                  "per_variant": planned.per_variant, "looks": design.looks})
    return planned


def running(settings: Any, family: str) -> dict[str, Any] | None:
    """The running experiment of ``family`` (name, variants, split, started_at), or None: what a predictor polls."""
    from sqlalchemy import select

    from zmlops.statedb import EXPERIMENTS, engine

    with engine(settings).connect() as conn:
        row = conn.execute(select(EXPERIMENTS).where(EXPERIMENTS.c.family == family,
                                                     EXPERIMENTS.c.decision.is_(None))).mappings().first()
    if row is None:
        return None
    return {"name": row["name"], "variants": row["design"]["variants"], "split": row["design"]["split"],
            "started_at": row["started_at"]}


def running_names(settings: Any) -> list[str]:
    """The experiments that run (no decision yet), oldest first."""
    from sqlalchemy import select

    from zmlops.statedb import EXPERIMENTS, engine

    with engine(settings).connect() as conn:
        return list(conn.execute(select(EXPERIMENTS.c.name).where(EXPERIMENTS.c.decision.is_(None))
                                 .order_by(EXPERIMENTS.c.started_at)).scalars())


def daily_from_logs(settings: Any, name: str, family: str, looks: int, started: Any) -> list[dict[str, Any]]:
    """Cumulative customers and clicked customers per variant for each day since the start, from the request log
    (the answers the experiment routed, by customer pseudonym) and the event log (clicks, joined by the answer's
    request id and, where the click names one, the customer). A customer counts once, in the variant of their
    first answer, from that day on, and as clicked from the day of the first answer they clicked."""
    import pandas as pd

    from monitoring.requests import EVENTS, clicked, read_log
    from zmlops.stores import object_store

    store = object_store(settings)
    started = pd.Timestamp(started)
    started = started.tz_localize("UTC") if started.tzinfo is None else started  # SQLite keeps no zone
    since = started.isoformat()
    served = read_log(store, family, since=since)
    if served.empty or "experiment" not in served:
        return []
    served = served[served["experiment"] == name].dropna(subset=["customer"])
    if served.empty:
        return []
    events = read_log(store, family, since=since, prefix=EVENTS)
    served = served.assign(day=(pd.to_datetime(served["ts"], utc=True) - started).dt.days + 1,
                           clicked=clicked(served, events))
    first = served.sort_values("ts").groupby("customer").agg(variant=("variant", "first"), day=("day", "min"))
    first_click = served[served["clicked"]].groupby("customer")["day"].min()
    return daily_looks(first.assign(clicked_day=first_click.reindex(first.index)), looks)


def daily_looks(customers: Any, looks: int) -> list[dict[str, Any]]:
    """Cumulative customers and clicked customers per variant for days 1.. (at most ``looks``), from one row per
    customer: ``variant``, ``day`` (first shown), ``clicked_day`` (NaN: never clicked)."""
    out = []
    for day in range(1, min(int(customers["day"].max()), looks) + 1) if len(customers) else ():
        seen = customers[customers["day"] <= day]
        out.append({"customers": {v: int((seen["variant"] == v).sum()) for v in (CONTROL, TREATMENT)},
                    "clicks": {v: int(((seen["variant"] == v) & (seen["clicked_day"] <= day)).sum())
                               for v in (CONTROL, TREATMENT)}})
    return out


def analyse_running(settings: Any, name: str, guardrails: Mapping[str, Mapping[str, float]] | None = None
                    ) -> Analysis:
    """Today's look at a running experiment from the logs, with its variants' guardrails from Prometheus (unless
    given); recorded, and a decided one is closed."""
    import datetime as dt

    from sqlalchemy import select, update

    from zmlops.statedb import EXPERIMENTS, engine

    with engine(settings).connect() as conn:
        row = conn.execute(select(EXPERIMENTS).where(EXPERIMENTS.c.name == name)).mappings().first()
    if row is None:
        raise LookupError(f"no experiment {name!r}")
    design = design_of(row["design"])
    stored = row["design"]["plan"]
    planned = Plan(stored["fixed_per_variant"], stored["per_variant"], stored["inflation"],
                   tuple(stored["fractions"]), tuple(stored["boundaries"]))
    daily = daily_from_logs(settings, name, design.family, design.looks, row["started_at"])
    notes = []
    if guardrails is None:
        started = row["started_at"] if row["started_at"].tzinfo else row["started_at"].replace(tzinfo=dt.UTC)
        guardrails, note = guardrail_readings(settings, design, (dt.datetime.now(dt.UTC) - started).total_seconds())
        notes += [note] if note else []
    analysis = analyse(design, planned, daily, guardrails)
    analysis.notes = notes
    record(settings, analysis)
    if analysis.decision != "continue" and row["decision"] is None:
        with engine(settings).begin() as conn:
            conn.execute(update(EXPERIMENTS).where(EXPERIMENTS.c.name == name).values(
                decision=analysis.decision, decided_at=dt.datetime.now(dt.UTC)))
    return analysis


def guardrail_readings(settings: Any, design: Design,
                       seconds: float) -> tuple[dict[str, dict[str, float]], str | None]:
    """Each variant's error rate and p99 latency over the last ``seconds``, from Prometheus
    (``rollout.prometheus_url``): the predictors count requests and time them by the version that answered, so a
    variant's figures are its version's (production's include the requests outside the experiment; a request
    split between the variants counts under production). Returns the readings and, when Prometheus could not be
    read, why (then no guardrail is judged: the promotion path's canary still judges errors and latency)."""
    import httpx

    from delivery.kserve import PrometheusSource

    url = settings.rollout.prometheus_url
    try:
        stats = PrometheusSource(url).stats(design.family, max(seconds, 60.0))
    except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
        return {}, f"guardrails not read: Prometheus at {url}: {type(error).__name__}: {error}"[:400]
    readings: dict[str, dict[str, float]] = {}
    for variant, version in design.variants.items():
        seen = stats.get(str(version))
        if seen is None or not seen.requests:
            continue
        readings[variant] = {"error_rate": round(seen.error_rate, 6)}
        if seen.p99_seconds is not None:
            readings[variant]["p99_latency_ms"] = round(seen.p99_seconds * 1000, 3)
    return readings, None


# ---------------------------------------------------------------- shadow traffic
def shadow_report(settings: Any, family: str, since: str | None = None) -> list[dict[str, Any]]:
    """Per shadow version: mirrored requests, agreement with production (mean, share in full agreement), errors,
    and both sides' latency (p50, p99), from the shadow log the predictors write (serving.shadow_alias)."""
    from monitoring.requests import SHADOW, read_records
    from zmlops.stores import object_store

    log = read_records(object_store(settings), family, SHADOW, since)
    out: list[dict[str, Any]] = []
    if log.empty:
        return out
    for shadow, part in log.groupby(log["shadow"].astype(str)):
        ok = part[part["error"].isna()]
        out.append({
            "model": family, "production": sorted(part["version"].astype(str).unique()), "shadow": shadow,
            "requests": len(part), "errors": int(part["error"].notna().sum()),
            "error_rate": float(part["error"].notna().mean()),
            "agreement": float(ok["agreement"].mean()) if len(ok) else float("nan"),
            "full_agreement_share": float((ok["agreement"] >= 1.0).mean()) if len(ok) else float("nan"),
            "production_p50_ms": float(part["latency_ms"].quantile(0.5)),
            "production_p99_ms": float(part["latency_ms"].quantile(0.99)),
            "shadow_p50_ms": float(ok["shadow_latency_ms"].quantile(0.5)) if len(ok) else float("nan"),
            "shadow_p99_ms": float(ok["shadow_latency_ms"].quantile(0.99)) if len(ok) else float("nan"),
        })
    return out
