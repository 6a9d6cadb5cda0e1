"""Drift and quality checks of the production models, one per family.

Reference: the data version the production version was trained on (its ``data_version``
tag). Current: the newest good data version. Each check builds the same kind of table
from both (the feature code of :mod:`training.features.build`), runs Evidently's data
drift preset on stationary columns (Evidently picks KS on small samples and a normed
Wasserstein distance above 1,000 rows; the method is recorded per column), saves the
Evidently HTML report, and adds family-specific signals:

- demand-forecast: accuracy on the weeks that have happened since training (realised
  WAPE of the production forecasts against the backtest WAPE logged at training);
- customer-segmentation: shift of segment shares (production model applied to both
  snapshots);
- product-recommendation: share of current sales from products the model never saw.

Samples are capped at ``monitoring.sample_rows`` per side (drift scores move by less
than 0.01 on these tables; see docs/monitoring.md).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zmlops.settings import Settings

__all__ = ["CheckResult", "assess", "check_family", "column_drift"]


@dataclass
class CheckResult:
    family: str
    reference_version: str
    current_version: str
    model_version: str
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> method, score, threshold, drifted
    drift_share: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)  # family-specific numbers
    reasons: list[str] = field(default_factory=list)  # why it should retrain (empty: it should not)
    report: str | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    @property
    def incident(self) -> str:
        """One incident per model version and data version: re-entry happens at most once for it."""
        return f"{self.family}:v{self.model_version}:{self.current_version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted, "incident": self.incident}


def column_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], html: Path | None,
                 sample_rows: int, seed: int = 0, method: str | None = None) -> dict[str, dict[str, Any]]:
    """Evidently's per-column drift on (sampled) reference and current; writes the HTML report.

    ``method`` overrides Evidently's choice for numeric columns (e.g. ``wasserstein``).
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    def sample(frame: pd.DataFrame) -> pd.DataFrame:
        """Up to ``sample_rows`` rows as they are; above that, each column summarised by that many
        evenly spaced quantiles: an equal-weight sketch of its distribution, so the Wasserstein
        distance between sketches stays within 0.01 of the full-data one (a random sample of the
        same size did not: 0.02 at 20,000 rows)."""
        part = frame[columns].dropna()
        if len(part) <= sample_rows:
            return part
        q = (np.arange(sample_rows) + 0.5) / sample_rows
        return pd.DataFrame({c: np.quantile(part[c].to_numpy(dtype=float), q) for c in columns})

    preset = DataDriftPreset(columns=columns, num_method=method) if method else DataDriftPreset(columns=columns)
    snapshot = Report([preset]).run(current_data=sample(current),
                                                               reference_data=sample(reference))
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html))
    out: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method, threshold, score = str(config["method"]), float(config["threshold"]), float(metric["value"])
        is_p_value = "p_value" in method.lower()
        drifted = score < threshold if is_p_value else score >= threshold
        out[str(config["column"])] = {"method": method, "score": score, "threshold": threshold,
                                      "drifted": bool(drifted)}
    return out


def _clean(settings: Settings, version: str) -> pd.DataFrame:
    from training.data import ingest

    return pd.read_parquet(ingest.clean_file(settings, version))


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    newest: pd.DataFrame = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    return newest.reset_index(drop=True)


def _production(settings: Settings, family: str) -> tuple[str, str, Any]:
    """(model version, its training data version, its estimator)."""
    from training import tracking

    version = tracking.alias_version(settings, family, "production")
    if version is None:
        raise LookupError(f"{family} has no production version to monitor")
    tags = tracking.client(settings).get_model_version(family, version).tags
    return version, tags["data_version"], tracking.load_estimator(settings, family, version)


def check_family(settings: Settings, family: str, current_version: str, out_dir: Path) -> CheckResult:
    """Run the family's checks on stored versions; ``out_dir`` receives the Evidently HTML report."""
    model_version, reference_version, estimator = _production(settings, family)
    backtest = {m: _logged_metric(settings, family, model_version, m) for m in ("units_wape", "revenue_wape")} \
        if family == "demand-forecast" else {}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    html = out_dir / f"{family}-{current_version}-{stamp}.html"
    ref_clean, cur_clean = _clean(settings, reference_version), _clean(settings, current_version)
    result = assess(settings, family, ref_clean, cur_clean, estimator, backtest, html)
    result.reference_version, result.current_version, result.model_version = (
        reference_version, current_version, model_version)
    from monitoring.requests import request_signals

    since = _last_check(settings, family, model_version)
    result.signals.update(request_signals(settings, family, model_version, estimator, ref_clean, cur_clean, since))
    return result


def assess(settings: Settings, family: str, ref_clean: pd.DataFrame, cur_clean: pd.DataFrame, estimator: Any,
           backtest: dict[str, float], html: Path | None) -> CheckResult:
    """The checks on two clean transaction tables and the production estimator (no stores needed)."""
    cfg = settings.monitoring
    result = CheckResult(family, "", "", "")
    if family == "customer-segmentation":
        from training.features.build import customer_features
        from training.models.segmentation import DERIVED, segment_features

        ref, cur = _latest(customer_features(ref_clean)), _latest(customer_features(cur_clean))
        ref_z, cur_z = segment_features(ref), segment_features(cur)
        result.columns = column_drift(ref_z, cur_z, list(DERIVED), html, cfg.sample_rows, settings.seed)
        ref_shares = pd.Series(estimator.predict_names(ref)).value_counts(normalize=True)
        cur_shares = pd.Series(estimator.predict_names(cur)).value_counts(normalize=True)
        shift = float(ref_shares.sub(cur_shares, fill_value=0.0).abs().max())
        result.signals["segment_share_shift"] = shift
        if shift > cfg.segment_share_shift:
            result.reasons.append(f"segment share shift {shift:.3f} > {cfg.segment_share_shift}")
    elif family == "product-recommendation":
        from training.features.build import product_features

        ref, cur = _latest(product_features(ref_clean)), _latest(product_features(cur_clean))
        for frame in (ref, cur):
            frame["log_price"] = np.log(frame["price_4w"].clip(lower=1e-3))
        result.columns = column_drift(ref, cur, ["log_price"], html, cfg.sample_rows, settings.seed)
        start = cur_clean["invoice_ts"].max() - pd.Timedelta(weeks=4)
        recent = cur_clean[cur_clean["invoice_ts"] > start]
        unseen = ~recent["stock_code"].isin(set(estimator.items_))
        share = float(recent.loc[unseen, "quantity"].sum() / max(recent["quantity"].sum(), 1))
        result.signals["new_product_share"] = share
        if share > cfg.new_product_share:
            result.reasons.append(f"{share:.1%} of the last 4 weeks' units are products the model never saw")
    elif family == "demand-forecast":
        from training.features.build import category_week_features

        ref, cur = category_week_features(ref_clean), category_week_features(cur_clean)
        weeks = cur[cur["week_start"] > ref["week_start"].max()]
        # the same weeks a year earlier: demand is seasonal, so any other window "drifts" every time
        year = pd.Timedelta(days=364)
        same = ref[ref["week_start"].between(weeks["week_start"].min() - year, weeks["week_start"].max() - year)] \
            if len(weeks) else ref.iloc[:0]
        if len(same):
            # a few dozen category-weeks: a KS p-value alarms on the yearly trend alone, so a distance
            result.columns = column_drift(same.assign(log_units=np.log1p(same["units"])),
                                          weeks.assign(log_units=np.log1p(weeks["units"])),
                                          ["log_units"], html, cfg.sample_rows, settings.seed, method="wasserstein")
        if len(weeks):
            fc = estimator.forecasts_.assign(week_start=pd.to_datetime(estimator.forecasts_["week_start"]))
            joined = weeks.merge(fc, on=["category", "week_start"], suffixes=("", "_fc"))
            if len(joined):
                for target in ("units", "revenue"):
                    err = (joined[target] - joined[f"{target}_fc"]).abs().sum()
                    result.signals[f"realised_{target}_wape"] = float(err / max(joined[target].abs().sum(), 1e-9))
                trained = backtest["units_wape"]
                result.signals["backtest_units_wape"] = trained
                increase = result.signals["realised_units_wape"] - trained
                result.signals["units_wape_increase"] = increase
                if increase > cfg.forecast_wape_increase:
                    result.reasons.append(f"realised units WAPE {result.signals['realised_units_wape']:.3f} is "
                                          f"{increase:.3f} above the backtest's {trained:.3f}")
                rev_increase = result.signals["realised_revenue_wape"] - backtest["revenue_wape"]
                result.signals["revenue_wape_increase"] = rev_increase
                if rev_increase > cfg.forecast_wape_increase:
                    result.reasons.append(f"realised revenue WAPE is {rev_increase:.3f} above the backtest's")
    else:
        raise KeyError(f"unknown model family {family!r}")

    drifted = [c for c, v in result.columns.items() if v["drifted"]]
    result.drift_share = len(drifted) / max(len(result.columns), 1)
    if result.drift_share >= cfg.drift_share and drifted:
        result.reasons.append(f"data drift in {', '.join(drifted)} "
                              f"({', '.join(result.columns[c]['method'] for c in drifted)})")
    result.report = html.name if html is not None and html.exists() else None
    return result




def _last_check(settings: Settings, family: str, model_version: str) -> str | None:
    """When this model version was last checked: its requests before that were read then."""
    from monitoring.loop import results

    times = [str(r["checked_at"]) for r in results(settings, family)
             if str(r.get("model_version")) == str(model_version) and r.get("checked_at")]
    return max(times) if times else None


def _logged_metric(settings: Settings, family: str, version: str, name: str) -> float:
    from training import tracking

    c = tracking.client(settings)
    run = c.get_run(c.get_model_version(family, version).run_id)
    return float(run.data.metrics[name])


def load_result(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
