"""Each family's monitoring checks (its catalog entry's ``checks``), run by :mod:`monitoring.drift`.

A family's :class:`Checks` has two parts:

- ``assess``: on the reference and current clean tables and the production estimator, the columns whose
  drift Evidently tests (:func:`monitoring.drift.column_drift`), the family's signals and the reasons to
  retrain;
- ``served``: signals from the request log, the answers the production version gave since the last check
  (:func:`monitoring.requests.request_signals` reads the log and adds ``requests``).

Per family (the drift columns are the model's own inputs, each with the method its kind calls for:
:data:`CONTINUOUS`, :data:`COUNT`, :data:`CATEGORY`; docs/monitoring.md has the table):

- demand-forecast: drift of weekly units, revenue and unit price per category against the same weeks a year
  earlier; accuracy on the weeks that have happened since training (realised WAPE of the production forecasts
  against the backtest WAPE logged at training); served: ``served_forecast_units``, the mean weekly units of
  served forecasts;
- customer-segmentation: drift of the four derived features the clustering reads, shift of segment shares
  (production model applied to both snapshots); served: ``served_segment_shift`` (the largest change of a
  segment's share among served answers against the shares at training) and ``degraded_share``;
- product-recommendation: drift of the purchases of the last 4 weeks against the same weeks a year earlier
  (category mix, units per line, how popular the bought products are, how active their buyers are), share of
  current sales from products the model never saw; served: ``recommendation_hit_rate`` (the share of served
  lists of which the customer bought at least one item in the weeks after the model's training data),
  ``served_coverage`` (the share of the catalogue recommended at least once); once clients send outcome
  events, :func:`monitoring.requests.request_signals` adds ``served_click_through`` (the share of served lists
  clicked). Customer ids in the log are keyed hashes; the new transactions are hashed with the same key to join
  them, so no raw id is read from the log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zmlops.settings import Settings

__all__ = ["CheckResult", "Checks", "Snapshots", "View", "column_drift", "latest", "DEMAND_FORECAST",
           "CUSTOMER_SEGMENTATION", "PRODUCT_RECOMMENDATION"]


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
    # family-specific numbers per label: {"units_wape": {category: value}, "segment_share": {segment: share}}
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    data_until: str | None = None  # the newest transaction of the current data version (ISO): the check's week
    # the evidence its report shows, as tables (rows of plain values): forecast against actual, new products, ...
    evidence: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reports: list[Any] = field(default_factory=list, repr=False)  # its Evidently snapshots (not serialised)

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    @property
    def incident(self) -> str:
        """One incident per model version and data version: re-entry happens at most once for it."""
        return f"{self.family}:v{self.model_version}:{self.current_version}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, reports=[]))
        del out["reports"]
        return {**out, "drifted": self.drifted, "incident": self.incident}


# Drift methods by the kind of column (Evidently's names; docs/monitoring.md says why each):
CONTINUOUS = "wasserstein"  # prices, spend, rates, log volumes: a normed distance, steady at any sample size
COUNT = "psi"  # whole numbers with ties (units per line): the population stability index over binned values
CATEGORY = "jensenshannon"  # labels (product category): bounded, a label absent on one side counts in full


def column_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: Mapping[str, str], html: Path | None,
                 sample_rows: int, timestamp: dt.datetime | None = None,
                 keep: list[Any] | None = None) -> dict[str, dict[str, Any]]:
    """Evidently's drift of each column by its method (``columns``: column -> Evidently's method name, such as
    :data:`CONTINUOUS`, :data:`COUNT`, :data:`CATEGORY` or ``ks``); writes the HTML report.

    Columns of text or category dtype are given to Evidently as categorical, the rest as numerical. The Evidently
    snapshot is stamped ``timestamp`` and appended to ``keep`` (for the analysts' workspace,
    :mod:`monitoring.workspace`).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    names = list(columns)
    categorical = [c for c in names if not pd.api.types.is_numeric_dtype(reference[c])]
    numerical = [c for c in names if c not in categorical]

    def sketch(frame: pd.DataFrame) -> pd.DataFrame:
        """Up to ``sample_rows`` rows as they are; above that, each column summarised by that many values: a
        numeric column by evenly spaced quantiles (the Wasserstein distance between sketches stays within 0.01 of
        the full-data one; a random sample of the same size did not: 0.02 at 20,000 rows), a categorical one by
        its labels repeated in proportion to their counts (largest remainders): an equal-weight sketch of each
        distribution, with no sampling noise of its own."""
        if len(frame) <= sample_rows:
            return frame[names]  # Evidently leaves out each column's missing values itself
        q = (np.arange(sample_rows) + 0.5) / sample_rows
        out: dict[str, Any] = {}
        for c in names:
            values = frame[c].dropna()
            if c in numerical:
                out[c] = np.quantile(values.to_numpy(dtype=float), q) if len(values) else np.full(sample_rows, np.nan)
                continue
            share = values.value_counts(normalize=True, sort=True) * sample_rows
            count = share.floordiv(1).astype(int)
            rest = (share - count).sort_values(ascending=False, kind="stable")
            count[rest.index[: sample_rows - int(count.sum())]] += 1
            out[c] = np.repeat(count.index.to_numpy(dtype=object), count.to_numpy())
        return pd.DataFrame(out)[names]

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset(columns=names, per_column_method=dict(columns))]).run(
        current_data=Dataset.from_pandas(sketch(current), data_definition=definition),
        reference_data=Dataset.from_pandas(sketch(reference), data_definition=definition),
        timestamp=timestamp)
    if keep is not None:
        keep.append(snapshot)
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


@dataclass(frozen=True)
class Snapshots:
    """What one check compares: two clean transaction tables and the production version."""

    settings: Settings
    reference: pd.DataFrame  # the clean table the production version was trained on
    current: pd.DataFrame  # the newest good one
    estimator: Any  # the production version's fitted estimator
    logged: dict[str, float]  # the production run's metrics named in Checks.logged_metrics
    html: Path | None  # where Evidently's report goes
    timestamp: dt.datetime | None = None  # the check's week (the current data's newest transaction)
    reports: list[Any] = field(default_factory=list)  # the Evidently snapshots the checks made

    def drift(self, reference: pd.DataFrame, current: pd.DataFrame,
              columns: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """:func:`column_drift` of ``columns`` (column -> method) into this check's report and snapshots."""
        cfg = self.settings.monitoring
        return column_drift(reference, current, columns, self.html, cfg.sample_rows, self.timestamp, self.reports)


@dataclass(frozen=True)
class View:
    """One panel of the family's project in the analysts' workspace (:mod:`monitoring.workspace`): a line per
    signal, or a line per label of a breakdown, over the checks' weeks; ``threshold`` names the
    ``monitoring`` setting drawn beside them (the retrain threshold)."""

    title: str
    signals: tuple[str, ...] = ()
    breakdown: str | None = None
    threshold: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Checks:
    assess: Callable[[Snapshots, CheckResult], None]  # fills result.columns, .signals and .reasons
    served: Callable[[Settings, pd.DataFrame, Any, pd.DataFrame, pd.DataFrame], dict[str, float]] = \
        lambda settings, log, estimator, reference, current: {}
    logged_metrics: tuple[str, ...] = ()  # metrics of the production run that assess() reads
    views: tuple[View, ...] = ()  # its panels in the analysts' workspace, after the common ones


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the newest feature timestamp."""
    newest: pd.DataFrame = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    return newest.reset_index(drop=True)


# ---------------------------------------------------------------- demand forecast
def _assess_forecast(s: Snapshots, result: CheckResult) -> None:
    from training.features.build import category_week_features

    cfg = s.settings.monitoring
    ref, cur = category_week_features(s.reference), category_week_features(s.current)
    weeks = cur[cur["week_start"] > ref["week_start"].max()]
    # the same weeks a year earlier: demand is seasonal, so any other window "drifts" every time
    year = pd.Timedelta(days=364)
    same = ref[ref["week_start"].between(weeks["week_start"].min() - year, weeks["week_start"].max() - year)] \
        if len(weeks) else ref.iloc[:0]
    if len(same):
        # the forecaster's inputs, a few dozen category-weeks a side: a KS p-value alarms on the yearly trend
        # alone, so distances
        result.columns = s.drift(_forecast_inputs(same), _forecast_inputs(weeks), FORECAST_DRIFT)
    if not len(weeks):
        return
    fc = s.estimator.forecasts_.assign(week_start=pd.to_datetime(s.estimator.forecasts_["week_start"]))
    joined = weeks.merge(fc, on=["category", "week_start"], suffixes=("", "_fc"))
    if not len(joined):
        return
    for target in ("units", "revenue"):
        err = (joined[target] - joined[f"{target}_fc"]).abs().sum()
        result.signals[f"realised_{target}_wape"] = float(err / max(joined[target].abs().sum(), 1e-9))
    per = joined.assign(error=joined["units_fc"] - joined["units"]).groupby("category")
    actual = per["units"].sum()
    sold = actual[actual > 0].index  # a category that sold nothing has no relative error
    wape, bias = per["error"].apply(lambda e: e.abs().sum()) / actual, per["error"].sum() / actual
    result.breakdown["units_wape"] = wape[sold].astype(float).to_dict()
    result.breakdown["units_bias"] = bias[sold].astype(float).to_dict()
    shown = joined[["category", "week_start", "units", "units_fc", "units_lower", "units_upper"]]
    result.evidence["forecast_against_actual"] = [
        {**row, "week_start": str(pd.Timestamp(row["week_start"]).date())}
        for row in shown.sort_values(["category", "week_start"]).to_dict("records")]
    trained = s.logged["units_wape"]
    result.signals["backtest_units_wape"] = trained
    increase = result.signals["realised_units_wape"] - trained
    result.signals["units_wape_increase"] = increase
    if increase > cfg.forecast_wape_increase:
        result.reasons.append(f"realised units WAPE {result.signals['realised_units_wape']:.3f} is "
                              f"{increase:.3f} above the backtest's {trained:.3f}")
    rev_increase = result.signals["realised_revenue_wape"] - s.logged["revenue_wape"]
    result.signals["revenue_wape_increase"] = rev_increase
    if rev_increase > cfg.forecast_wape_increase:
        result.reasons.append(f"realised revenue WAPE is {rev_increase:.3f} above the backtest's")


FORECAST_DRIFT = {"log_units": CONTINUOUS, "log_revenue": CONTINUOUS, "log_unit_price": CONTINUOUS}


def _forecast_inputs(weekly: pd.DataFrame) -> pd.DataFrame:
    """What the forecaster reads per category and week (its targets' histories, units and revenue) on a log scale,
    and the unit price they imply (a price change moves revenue without units)."""
    units, revenue = weekly["units"].to_numpy(float), weekly["revenue"].to_numpy(float)
    price = np.divide(revenue, units, out=np.full(len(weekly), np.nan), where=units > 0)
    return pd.DataFrame({"log_units": np.log1p(units), "log_revenue": np.log1p(revenue.clip(min=0)),
                         "log_unit_price": np.log(price)}, index=weekly.index)


def _served_forecast(settings: Settings, log: pd.DataFrame, estimator: Any, reference: pd.DataFrame,
                     current: pd.DataFrame) -> dict[str, float]:
    return {"served_forecast_units": float(log["units"].map(lambda u: sum(u) / max(len(u), 1)).mean())}


DEMAND_FORECAST = Checks(_assess_forecast, _served_forecast, logged_metrics=("units_wape", "revenue_wape"), views=(
    View("Forecast accuracy per category", breakdown="units_wape",
         description="Units WAPE of the production forecast on the weeks since its training data, per category."),
    View("Forecast bias per category", breakdown="units_bias",
         description="(forecast - actual) / actual units since training: above 0 over-forecasts, below under."),
    View("Realised against backtest accuracy", signals=("realised_units_wape", "backtest_units_wape"),
         description="Units WAPE, all categories: realised since training against the training backtest's. "
                     "It retrains when the gap passes monitoring.forecast_wape_increase."),
    View("Forecast units served", signals=("served_forecast_units",),
         description="The mean weekly units of the forecasts the predictor answered since the last check."),
))


# ---------------------------------------------------------------- segmentation
def _assess_segments(s: Snapshots, result: CheckResult) -> None:
    from training.features.build import customer_features
    from training.models.segmentation import DERIVED, segment_features

    cfg = s.settings.monitoring
    ref, cur = latest(customer_features(s.reference)), latest(customer_features(s.current))
    # the four numbers the clustering reads (rates and ratios): a distance, not a p-value, whatever the customers' count
    result.columns = s.drift(segment_features(ref), segment_features(cur), dict.fromkeys(DERIVED, CONTINUOUS))
    ref_shares = pd.Series(s.estimator.predict_names(ref)).value_counts(normalize=True)
    cur_names = s.estimator.predict_names(cur)
    cur_shares = pd.Series(cur_names).value_counts(normalize=True)
    shift = float(ref_shares.sub(cur_shares, fill_value=0.0).abs().max())
    result.signals["segment_share_shift"] = shift
    result.breakdown["segment_share"] = {str(k): float(v) for k, v in cur_shares.items()}
    result.evidence["segment_profiles"] = _profile_changes(s.estimator, cur, cur_names, cur_shares)
    if shift > cfg.segment_share_shift:
        result.reasons.append(f"segment share shift {shift:.3f} > {cfg.segment_share_shift}")


def _profile_changes(estimator: Any, customers: pd.DataFrame, names: Any, share: pd.Series) -> list[dict[str, Any]]:
    """Each segment's profile at training (the model's medians and share) beside the same figures now (``names``:
    each customer's segment now, ``share``: their shares)."""
    trained = estimator.profiles_
    features = [c for c in trained.columns if c not in ("customers", "share", "named_for")]
    now = customers[features].groupby(names).median()
    rows = []
    for segment in trained.index.union(now.index):
        row: dict[str, Any] = {"segment": str(segment),
                               "share_then": float(trained["share"].get(segment, 0.0)),
                               "share_now": float(share.get(segment, 0.0))}
        for f in features:
            row[f"{f}_then"] = float(trained[f].get(segment, np.nan))
            row[f"{f}_now"] = float(now[f].get(segment, np.nan)) if segment in now.index else float("nan")
        rows.append(row)
    return rows


def _served_segments(settings: Settings, log: pd.DataFrame, estimator: Any, reference: pd.DataFrame,
                     current: pd.DataFrame) -> dict[str, float]:
    trained = estimator.profiles_["share"]
    now = log["segment"].value_counts(normalize=True)
    return {"served_segment_shift": float(trained.sub(now, fill_value=0.0).abs().max()),
            "degraded_share": float(log["degraded"].astype(bool).mean())}


CUSTOMER_SEGMENTATION = Checks(_assess_segments, _served_segments, views=(
    View("Segment shares", breakdown="segment_share",
         description="Each segment's share of the customers in the newest data, by the production model."),
    View("Segment share shift", signals=("segment_share_shift", "served_segment_shift"),
         threshold="segment_share_shift",
         description="The largest change of a segment's share since training: in the data, and among the answers "
                     "served. It retrains above the threshold."),
    View("Degraded answers", signals=("degraded_share",),
         description="The share of answers served from the default segment (features missing or stale)."),
))


# ---------------------------------------------------------------- recommendation
def _assess_recommendations(s: Snapshots, result: CheckResult) -> None:
    cfg = s.settings.monitoring
    end = s.current["invoice_ts"].max()
    result.columns = s.drift(_purchases(s.reference, _same_weeks(s.reference, end)), _purchases(s.current, end),
                             RECOMMENDATION_DRIFT)
    recent = s.current[s.current["invoice_ts"] > end - pd.Timedelta(weeks=4)]
    unseen = ~recent["stock_code"].isin(set(s.estimator.items_))
    units = max(float(recent["quantity"].sum()), 1.0)
    share = float(recent.loc[unseen, "quantity"].sum()) / units
    result.signals["new_product_share"] = share
    sold = recent[unseen].groupby(["stock_code", "description", "category"], as_index=False, dropna=False)
    top = sold["quantity"].sum().nlargest(10, "quantity")  # the new products that drive the share
    result.evidence["new_products"] = [{**row, "share": float(row["quantity"]) / units}
                                       for row in top.to_dict("records")]
    if share > cfg.new_product_share:
        result.reasons.append(f"{share:.1%} of the last 4 weeks' units are products the model never saw")


RECOMMENDATION_DRIFT = {"category": CATEGORY, "log_quantity": COUNT, "log_product_share": CONTINUOUS,
                        "log_customer_lines": CONTINUOUS}


def _same_weeks(reference: pd.DataFrame, end: pd.Timestamp, weeks: int = 4) -> pd.Timestamp:
    """Where the reference window ends: the same weeks a year before ``end`` when the reference holds them (the
    mix of what sells is seasonal), else the reference's own last weeks."""
    year_earlier = end - pd.Timedelta(days=364)
    if not len(reference):
        return year_earlier
    first, last = reference["invoice_ts"].min(), reference["invoice_ts"].max()
    return year_earlier if first <= year_earlier - pd.Timedelta(weeks=weeks) and year_earlier <= last else last


def _purchases(clean: pd.DataFrame, end: pd.Timestamp, weeks: int = 4) -> pd.DataFrame:
    """The lines of the ``weeks`` weeks to ``end`` as the recommender reads them (who bought which product, how
    many; it reads no price): each line's category and log units, its product's log share of the window's units
    (how popular what was bought is) and the log lines its customer bought in the window (how active who bought is).
    """
    lines = clean[clean["invoice_ts"].between(end - pd.Timedelta(weeks=weeks), end, inclusive="right")]
    product_units = lines.groupby("stock_code")["quantity"].transform("sum").to_numpy(float)
    customer_lines = lines.groupby("customer_id")["stock_code"].transform("size").to_numpy(float)
    return pd.DataFrame({"category": lines["category"].astype(str).to_numpy(),
                         "log_quantity": np.log(lines["quantity"].to_numpy(float)),
                         "log_product_share": np.log(product_units / max(product_units.sum(), 1.0)),
                         "log_customer_lines": np.log(customer_lines)})


def _served_recommendations(settings: Settings, log: pd.DataFrame, estimator: Any, reference: pd.DataFrame,
                            current: pd.DataFrame) -> dict[str, float]:
    from governance.pseudonyms import pseudonymise

    key = settings.pseudonym_key
    after = current[current["invoice_ts"] > reference["invoice_ts"].max()]
    bought = after.assign(customer=[pseudonymise(key, c) for c in after["customer_id"]]) \
        .groupby("customer")["stock_code"].agg(set)
    warm = log[~log["cold_start"].astype(bool)]
    hits = [bool(set(items) & bought.get(customer, set())) for customer, items in zip(
        warm["customer"], warm["items"], strict=True)]
    items = {i for row in log["items"] for i in row}
    return {"recommendation_hit_rate": float(sum(hits) / len(hits)) if hits else 0.0,
            "served_coverage": float(len(items) / max(len(estimator.items_), 1))}


PRODUCT_RECOMMENDATION = Checks(_assess_recommendations, _served_recommendations, views=(
    View("Sales share of products the model never saw", signals=("new_product_share",), threshold="new_product_share",
         description="Units of the last 4 weeks from products absent from the production model: it retrains above "
                     "the threshold (a new product line)."),
    View("Hit rate and coverage of served lists", signals=("recommendation_hit_rate", "served_coverage"),
         description="Hit rate: the share of served lists of which the customer bought an item after the model's "
                     "training data. Coverage: the share of the catalogue recommended at least once."),
    View("Click-through of served lists", signals=("served_click_through",),
         description="The share of lists served since the last check that their customer clicked (the outcome events "
                     "clients send, joined by request id); drawn once clients send events."),
))
