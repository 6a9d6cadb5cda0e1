"""Per-family training steps: training set from Feast, fit, evaluation against the baseline.

Each function is small and typed; :mod:`training.families` wires them into one
definition per family. Model libraries are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.features import store
from zmlops.settings import Settings

__all__ = [
    "TrainingData",
    "Evaluation",
    "make_forecaster",
    "forecast_data",
    "forecast_session",
    "fit_on_frame",
    "forecast_example",
    "evaluate_forecaster",
    "make_segmenter",
    "segmentation_data",
    "segmentation_example",
    "evaluate_segmenter",
    "make_recommender",
    "recommendation_data",
    "fit_recommender",
    "choose_recommender",
    "recommendation_example",
    "evaluate_recommender_family",
    "TEST_WEEKS",
]

TEST_WEEKS = 8
BATCH_PART = 10_000  # customers a batch-scoring request holds: the recommender scores 10,000 x products at once
BATCH_TOP_N = 10  # products per customer in the batch table
GATE_ORIGINS, GATE_STEP = 8, 4  # the forecaster's gate backtest: 8 origins 4 weeks apart


@dataclass
class TrainingData:
    """What a family trains and evaluates on, for one data version."""

    frame: pd.DataFrame  # the point-in-time training set from Feast
    # what the family reads of the clean transactions, in its own form: the recommender's purchases (one row per
    # customer, product and day), segmentation's customers and their countries; forecasting reads none
    clean: pd.DataFrame
    as_of: dt.datetime  # the newest feature cutoff used
    truth: pd.DataFrame | None = None  # planted segments when the data is simulated
    extra: dict[str, Any] = field(default_factory=dict)


def fit_on_frame(model: Any, data: TrainingData) -> Any:
    """The common case: the estimator learns from the Feast training set alone."""
    return model.fit(data.frame)


@dataclass
class Evaluation:
    metrics: dict[str, float]  # the model's metrics
    baseline: dict[str, float]  # the baseline's metrics on the same data
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)  # per category / segment / country
    sections: dict[str, list[str]] = field(default_factory=dict)  # more of the model card: title -> markdown lines


def _newest(settings: Settings, table: str) -> pd.Timestamp:
    marker = store.published_version(settings)
    if marker is None:
        raise RuntimeError("no feature sources published; run the features step first")
    return pd.Timestamp(marker["tables"][table]["newest"])


def _truth(settings: Settings, data_version: str) -> pd.DataFrame | None:
    """Planted segments shipped with a simulated data version (its customers.parquet)."""
    from training.data.ingest import truth_file

    path = truth_file(settings, data_version)
    return pd.read_parquet(path) if path is not None else None


def consenting(settings: Settings, frame: pd.DataFrame, purpose: str) -> tuple[pd.DataFrame, int]:
    """The rows of customers whose consent allows ``purpose`` (governance.consent) and who were not erased, and how
    many customers were left out: such a customer is never in that family's training set or batch answers (a
    model trained before their erasure still knows them)."""
    from governance import consent

    ids = frame["customer_id"].astype("int64")
    unique = ids.unique()
    ok = dict(zip(unique.tolist(), consent.allowed(settings, purpose, unique.tolist()), strict=True))  # type: ignore[arg-type]
    keep = ids.map(ok).to_numpy(bool)
    return frame[keep], len(unique) - sum(ok.values())


# ---------------------------------------------------------------- demand forecast
def make_forecaster(**params: Any) -> Any:
    from training.models.forecasting import CategoryForecaster

    return CategoryForecaster(**params)


def forecast_session() -> AbstractContextManager[None]:
    """One training's forecaster fits shared by its tuning, fit and backtest: the final fit's inner origins are among
    the backtest's, so the backtest reads those fits instead of making them again."""
    from training.models.forecasting import shared_fits

    return shared_fits()


def forecast_data(settings: Settings, clean_file: Path, data_version: str) -> TrainingData:
    """Every finished week of every category, as Feast serves it at the week's end."""
    weeks = store.source_table(settings, "category_week_features", ["category", "event_timestamp"])
    frame = store.training_frame(settings, "demand_forecast", weeks)
    if frame["units"].isna().any():
        raise RuntimeError("the point-in-time join left weeks without sales figures")
    return TrainingData(frame, pd.DataFrame(), _newest(settings, "category_week_features").to_pydatetime())


def forecast_requests(settings: Settings, model: Any, data_version: str) -> Iterator[pd.DataFrame]:
    """Batch scoring: every category the forecaster knows, the gate's horizon ahead."""
    yield pd.DataFrame({"category": list(model.categories_), "horizon": TEST_WEEKS})


def forecast_example(data: TrainingData) -> pd.DataFrame:
    return pd.DataFrame({"category": [str(data.frame["category"].iloc[0])], "horizon": [TEST_WEEKS]})


def evaluate_forecaster(model: Any, data: TrainingData) -> Evaluation:
    from training.models.forecasting import backtest

    params = model.get_params()
    # 8 origins 4 weeks apart (where the history allows), each forecasting the next 8 weeks
    result = backtest(data.frame, lambda: make_forecaster(**params), folds=GATE_ORIGINS, horizon=TEST_WEEKS,
                      step=GATE_STEP)
    breakdown = {
        c: {"wape": result["per_category"][c], "baseline_wape": result["per_category_baseline"][c]}
        for c in result["per_category"]
    }
    folds = result["folds"]
    spacing = f"s {folds['step']:.0f} weeks apart" if folds["origins"] > 1 else " (the history allows no more)"
    lines = [f"Rolling-origin backtest: {folds['origins']:.0f} origin{spacing}, {folds['horizon']:.0f} weeks ahead "
             "each; the model refitted at every origin, its choice included.",
             "", "| forecast | units WAPE | revenue WAPE |", "|---|---:|---:|",
             f"| this model | {result['model']['units_wape']:.3f} | {result['model']['revenue_wape']:.3f} |"]
    lines += [f"| {name}{' (the baseline: the best)' if name == result['baseline_name'] else ''} | "
              f"{m['units_wape']:.3f} | {m['revenue_wape']:.3f} |" for name, m in result["baselines"].items()]
    lines += ["", f"90% intervals held {result['model']['units_coverage']:.0%} of the actual weekly units and "
              f"{result['model']['revenue_coverage']:.0%} of the revenue.", "",
              "Inner backtest of the final fit, absolute error pooled over the categories relative to the best "
              "(units): " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in _pooled_ratios(model)), "",
              "Chosen per category (units; revenue): " + "; ".join(
                  f"{c}: {choice['units']}; {choice['revenue']}" for c, choice in sorted(model.choice_.items()))]
    return Evaluation(result["model"], result["baseline"], breakdown, {"Backtest against the simple forecasts": lines})


def _pooled_ratios(model: Any, target: str = "units") -> list[tuple[str, float]]:
    """Each candidate's inner-backtest error summed over the categories, as a multiple of the lowest."""
    totals: dict[str, float] = {}
    for per_target in model.inner_errors_.values():
        for name, err in per_target[target].items():
            totals[name] = totals.get(name, 0.0) + err
    low = min(totals.values(), default=0.0)
    return sorted(((n, e / low if low else float("nan")) for n, e in totals.items()), key=lambda x: x[1])


HARMONIC_CHOICES = ("0", "1", "2", "3", "4", "1,2", "2,3", "3,4", "1,2,3,4")
NAIVE_WEIGHT_CHOICES = ("0.0", "0.2", "0.5", "0.8", "0.2,0.5,0.8")


def _choice(trial: Any, name: str, choices: tuple[str, ...], cast: Callable[[str], Any]) -> tuple[Any, ...]:
    """A sequence parameter as an Optuna categorical of comma-joined strings (training.tuning.encode's form)."""
    return tuple(cast(v) for v in trial.suggest_categorical(name, choices).split(","))


def forecaster_space(trial: Any) -> dict[str, Any]:
    """Optuna's search space of the forecaster: the Fourier harmonics and naive weights its inner backtest
    chooses among per series, and how many inner folds it chooses on."""
    return {
        "harmonics": _choice(trial, "harmonics", HARMONIC_CHOICES, int),
        "naive_weights": _choice(trial, "naive_weights", NAIVE_WEIGHT_CHOICES, float),
        "selection_folds": trial.suggest_int("selection_folds", 1, 5),
    }


def forecaster_folds(data: TrainingData, params: dict[str, Any]) -> Iterator[float]:
    """Units WAPE at tuning origins 4 weeks apart that end where the gate's backtest begins (its first origin), so
    the weeks the gate scores never choose the parameters; the newest origin first."""
    from training.models.forecasting import SEASON, _series, backtest, backtest_origins

    series = _series(data.frame)
    n = min(len(g) for g in series.values())
    gate = backtest_origins(n, folds=GATE_ORIGINS, horizon=TEST_WEEKS, step=GATE_STEP)  # evaluate_forecaster's
    ends = [e for e in (gate[0] - 4 * j for j in range(3)) if e - TEST_WEEKS >= SEASON] or [gate[0]]
    for end in ends:
        part = pd.concat([g.iloc[:end] for g in series.values()], ignore_index=True)
        yield backtest(part, lambda: make_forecaster(**params), folds=1, horizon=TEST_WEEKS)["model"]["units_wape"]


# ---------------------------------------------------------------- segmentation
def make_segmenter(**params: Any) -> Any:
    from training.models.segmentation import CustomerSegmenter

    return CustomerSegmenter(**params)


def segmentation_data(settings: Settings, clean_file: Path, data_version: str) -> TrainingData:
    """Every customer's behaviour at the newest weekly cutoff."""
    as_of = _newest(settings, "customer_features")
    customers = store.source_table(settings, "customer_features", ["customer_id"])
    entities = pd.DataFrame({"customer_id": customers["customer_id"].unique(), "event_timestamp": as_of})
    frame, left_out = consenting(settings, store.training_frame(settings, "customer_segmentation", entities).dropna(),
                                 "profiling")
    return TrainingData(frame, _countries(settings, clean_file), as_of.to_pydatetime(), _truth(settings, data_version),
                        extra={"consent_excluded": left_out})


def _countries(settings: Settings, clean_file: Path) -> pd.DataFrame:
    """Each customer's country (that of their first line), read by DuckDB within the data budget."""
    from training.data.cleaning import customer_countries
    from training.data.lake import scratch, table_of

    with scratch(settings.data.reader_mb, settings.data.threads) as (con, _):
        countries: pd.DataFrame = con.sql(
            f"SELECT * FROM ({customer_countries(table_of(con, clean_file))}) ORDER BY customer_id").df()
    return countries


def segmentation_requests(settings: Settings, model: Any, data_version: str) -> Iterator[pd.DataFrame]:
    """Batch scoring: every customer whose consent allows profiling, with their behaviour at the newest weekly
    cutoff of the published features (read for that cutoff only), :data:`BATCH_PART` at a time."""
    from training.models.segmentation import INPUT_FEATURES

    store.sync_sources(settings)
    frame = pd.read_parquet(settings.feast_home / "sources" / "customer_features.parquet",
                            columns=["customer_id", *INPUT_FEATURES],
                            filters=[("event_timestamp", "==", _newest(settings, "customer_features"))])
    frame, _ = consenting(settings, frame, "profiling")
    for start in range(0, len(frame), BATCH_PART):
        yield frame.iloc[start:start + BATCH_PART].reset_index(drop=True)


def segmentation_example(data: TrainingData) -> pd.DataFrame:
    from training.models.segmentation import INPUT_FEATURES

    return data.frame[INPUT_FEATURES].head(3).reset_index(drop=True)


def evaluate_segmenter(model: Any, data: TrainingData) -> Evaluation:
    from training.models.segmentation import CustomerSegmenter

    frame = data.frame
    truth = None
    if data.truth is not None:
        frame = frame.merge(data.truth[["customer_id", "segment"]], on="customer_id", how="left")
        truth = frame["segment"].fillna("unknown").tolist()
    metrics = model.score_report(frame, truth)
    baseline = CustomerSegmenter(k_range=(2,), random_state=model.random_state).fit(frame)
    base = baseline.score_report(frame, truth, bootstraps=3)
    names = model.predict_names(frame)
    countries = data.clean.set_index("customer_id")["country"]
    by_country = pd.crosstab(frame["customer_id"].map(countries).fillna("unknown"), names, normalize="index")
    top = countries.value_counts().nlargest(5).index
    breakdown = {
        f"country={c}": {f"share_{k}": float(v) for k, v in by_country.loc[c].items()}
        for c in top
        if c in by_country.index
    }
    return Evaluation(metrics, base, breakdown, {"Segment profiles": segment_profile_lines(model)})


K_CHOICES = ("2", "3", "4", "5", "6", "7", "8", "2,3,4,5,6,7,8")


def segmenter_space(trial: Any) -> dict[str, Any]:
    """Optuna's search space of the segmenter: k itself (or the default scan of 2..8) and k-means restarts."""
    return {"k_range": _choice(trial, "k_range", K_CHOICES, int),
            "n_init": trial.suggest_int("n_init", 4, 20)}


def segmenter_folds(data: TrainingData, params: dict[str, Any]) -> Iterator[float]:
    """The silhouette of the fitted segmentation, when its k is stable (bootstrap ARI at least the segmenter's
    ``min_stability``); an unstable choice scores NaN, which prunes the trial: the tuned model obeys the same
    stability rule as the default one."""
    model = make_segmenter(**params).fit(data.frame)  # the fit measures the chosen k's stability
    stable = model.stability_by_k_[model.k_] >= model.min_stability
    yield model.silhouette_by_k_[model.k_] if stable else float("nan")


def segment_profile_lines(model: Any) -> list[str]:
    """The segments as the card shows them: medians of the inputs, size, and the rule each name comes from
    (k chosen by bootstrap stability, then silhouette)."""
    profiles = model.profiles_
    numbers = [c for c in profiles.columns if c not in ("customers", "share", "named_for")]
    lines = [f"k = {model.k_}, chosen among the k whose bootstrap ARI is at least {model.min_stability} "
             "(else the most stable) by silhouette:", "",
             "| k | silhouette | bootstrap ARI |", "|---:|---:|---:|"]
    stability = model.stability_by_k_  # measured in silhouette order until a k passed
    lines += [f"| {k} | {model.silhouette_by_k_[k]:.3f} | "
              + (f"{stability[k]:.3f} |" if k in stability else "not needed |") for k in sorted(model.silhouette_by_k_)]
    lines += ["", "Medians per segment; each name comes from an explicit rule on the segment's profile "
              "(`training/models/segmentation.py::name_segments`):", "",
              "| segment | customers | share | " + " | ".join(numbers) + " | named for |",
              "|---|---:|---:|" + "---:|" * len(numbers) + "---|"]
    for name, row in profiles.iterrows():
        lines.append(f"| {name} | {int(row['customers']):,} | {row['share']:.1%} | "
                     + " | ".join(f"{float(row[c]):,.2f}" for c in numbers) + f" | {row['named_for']} |")
    return lines


# ---------------------------------------------------------------- recommendation
RECOMMENDER_KINDS = ("als", "bm25_knn", "ease")


def make_recommender(kind: str = "als", **params: Any) -> Any:
    """ALS (``kind="als"``, the default), EASE (``"ease"``) or BM25-weighted item-item kNN (``"bm25_knn"``), each
    taking the parameters it knows of ``params`` (a tuning trial carries every kind's defaults)."""
    from training.models.recommendation import ALSRecommender, EASERecommender, ItemKNNRecommender

    if kind not in RECOMMENDER_KINDS:
        raise ValueError(f"kind must be one of {RECOMMENDER_KINDS}, not {kind!r}")
    cls: Any = {"als": ALSRecommender, "ease": EASERecommender, "bm25_knn": ItemKNNRecommender}[kind]
    known = {k: v for k, v in params.items() if k in cls._get_param_names()}
    return cls(**known) if kind != "bm25_knn" else cls(**{**known, "similarity": "bm25"})


def recommendation_data(settings: Settings, clean_file: Path, data_version: str) -> TrainingData:
    """Interactions from the clean transactions; recent product popularity from Feast at the cutoff."""
    from training.models.recommendation import purchases, time_split

    # one row per customer, product and day, read by DuckDB within the data budget: the lines' descriptions, prices
    # and invoices never reach memory (the step's peak grows with the purchases, not the delivery)
    bought = purchases(clean_file, settings.data.reader_mb, settings.data.threads)
    clean, left_out = consenting(settings, bought, "personalisation")
    as_of = _newest(settings, "product_features")
    codes = np.asarray(clean["stock_code"].unique(), dtype=object)
    frame = store.training_frame(
        settings, "product_recommendation", pd.DataFrame({"stock_code": codes, "event_timestamp": as_of})
    )
    # the evaluation refits on the weeks before its cutoff, so it must see popularity as of that cutoff
    cutoff = time_split(clean, TEST_WEEKS)[2].tz_localize("UTC")
    at_cutoff = store.training_frame(
        settings, "product_recommendation", pd.DataFrame({"stock_code": codes, "event_timestamp": cutoff})
    )
    return TrainingData(frame, clean, as_of.to_pydatetime(),
                        extra={"frame_at_cutoff": at_cutoff, "consent_excluded": left_out})


def recommendation_requests(settings: Settings, model: Any, data_version: str) -> Iterator[pd.DataFrame]:
    """Batch scoring: every customer the recommender knows whose consent allows personalisation, their top
    :data:`BATCH_TOP_N`, :data:`BATCH_PART` customers at a time."""
    known = pd.DataFrame({"customer_id": model.customers_.to_numpy()})
    known, _ = consenting(settings, known, "personalisation")
    for start in range(0, len(known), BATCH_PART):
        yield known.iloc[start:start + BATCH_PART].assign(k=BATCH_TOP_N).reset_index(drop=True)


def recommendation_example(data: TrainingData) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [int(data.clean["customer_id"].iloc[0])], "k": [10]})


def _recent(frame: pd.DataFrame) -> pd.Series:
    return frame.set_index("stock_code")["customers_4w"].fillna(0.0)


def fit_recommender(model: Any, data: TrainingData) -> Any:
    from training.models.recommendation import interactions

    return model.fit(interactions(data.clean), recent=_recent(data.frame))


# what training without tuning chooses among (the first fold of recommender_folds decides): ALS's confidence scaling,
# and EASE's regularisation with and without recency weighting
ALS_ALPHAS = (0.5, 1.0, 2.0, 5.0)
EASE_CHOICES = ((200.0, 0.0), (200.0, 16.0), (500.0, 0.0), (500.0, 16.0))  # (l2, half_life_weeks)


def choose_recommender(data: TrainingData) -> dict[str, Any]:
    """The recommender with the best recall@10 on an inner time split of the training part (the 8 weeks before the
    gate's own test weeks: the first of :func:`recommender_folds`): ALS at each of :data:`ALS_ALPHAS`, and EASE at
    each of :data:`EASE_CHOICES` where the catalogue allows it (:data:`~training.models.recommendation.EASE_MAX_ITEMS`
    products). Ties go to the earlier candidate (ALS first)."""
    from training.models.recommendation import (
        EASE_MAX_ITEMS,
        evaluate_recommender,
        interactions,
        new_purchases,
        time_split,
    )

    candidates: list[dict[str, Any]] = [{"kind": "als", "alpha": a} for a in ALS_ALPHAS]
    train, _, _ = time_split(data.clean, TEST_WEEKS)
    inner_train, inner_test, _ = time_split(train, TEST_WEEKS)
    if inner_train.empty or inner_test.empty:
        return {"kind": "als", "alpha": 1.0}
    pairs = interactions(inner_train)
    if data.clean["stock_code"].nunique() <= EASE_MAX_ITEMS:  # the final fit's catalogue, not only the split's
        candidates += [{"kind": "ease", "l2": l2, "half_life_weeks": h} for l2, h in EASE_CHOICES]
    scores, wanted = [], None
    for params in candidates:  # one fitted candidate at a time; what the split's customers bought anew, once
        model = make_recommender(**params).fit(pairs)
        wanted = new_purchases(model.customers_, inner_train, inner_test) if wanted is None else wanted
        scores.append(evaluate_recommender(model, inner_train, inner_test, wanted=wanted)["recall_at_10"])
        del model
    return candidates[int(np.argmax(scores))]


def recommender_space(trial: Any) -> dict[str, Any]:
    """Optuna's search space of the recommender: ALS (factors, regularisation, confidence scaling, weighting,
    iterations), EASE (regularisation, recency half-life) or their challenger, BM25 item-item kNN (neighbours); the
    study ships whichever scores best."""
    from training.models.recommendation import WEIGHTINGS

    kind = trial.suggest_categorical("kind", RECOMMENDER_KINDS)
    if kind == "bm25_knn":
        return {"kind": kind, "neighbours": trial.suggest_int("neighbours", 10, 400, log=True)}
    if kind == "ease":
        return {"kind": kind, "l2": trial.suggest_float("l2", 10.0, 5_000.0, log=True),
                "half_life_weeks": trial.suggest_categorical("half_life_weeks", [0.0, 4.0, 8.0, 16.0, 32.0])}
    return {
        "kind": kind,
        "factors": trial.suggest_int("factors", 16, 256, log=True),
        "regularization": trial.suggest_float("regularization", 1e-3, 10.0, log=True),
        "alpha": trial.suggest_float("alpha", 0.1, 50.0, log=True),
        "iterations": trial.suggest_int("iterations", 5, 30),
        "weighting": trial.suggest_categorical("weighting", list(WEIGHTINGS)),
    }


def recommender_folds(data: TrainingData, params: dict[str, Any], folds: int = 2) -> Iterator[float]:
    """Recall@10 on inner time splits of the weeks before the gate's cutoff (8 test weeks each, the newest first):
    the gate's own test weeks never choose the parameters."""
    from training.models.recommendation import evaluate_recommender, interactions, time_split

    part, _, _ = time_split(data.clean, TEST_WEEKS)
    for _ in range(folds):
        inner_train, inner_test, _ = time_split(part, TEST_WEEKS)
        if inner_train.empty or inner_test.empty:
            return
        model = make_recommender(**params).fit(interactions(inner_train))
        yield evaluate_recommender(model, inner_train, inner_test)["recall_at_10"]
        part = inner_train


def evaluate_recommender_family(model: Any, data: TrainingData) -> Evaluation:
    """Refit the model's configuration and the baselines on all but the last 8 weeks; score those weeks."""
    from training.models.metrics import ranking_metrics
    from training.models.recommendation import (
        ItemKNNRecommender,
        PopularityRecommender,
        evaluate_recommender,
        interactions,
        new_purchases,
        ranked,
        time_split,
    )

    train, test, cutoff = time_split(data.clean, TEST_WEEKS)
    pairs = interactions(train)
    recent = _recent(data.extra["frame_at_cutoff"])  # no popularity from the test weeks
    challenger = type(model)(**model.get_params()).fit(pairs, recent=recent)
    wanted = new_purchases(challenger.customers_, train, test)  # the same customers for every model fitted on pairs
    recs, sets = ranked(challenger, wanted, 10)
    n_items = len(challenger.items_)
    metrics = ranking_metrics(recs, sets, 10, n_items)
    breakdown: dict[str, dict[str, float]] = {}
    countries = data.clean.groupby("customer_id")["country"].first()
    for country in ["United Kingdom", *countries.value_counts().index[1:3]]:
        ids = countries.index[countries == country]
        if len(ids):
            inside = wanted.index.isin(ids)
            part = ranking_metrics([r for r, i in zip(recs, inside, strict=True) if i],
                                   [w for w, i in zip(sets, inside, strict=True) if i], 10, n_items)
            breakdown[f"country={country}"] = {"recall_at_10": part["recall_at_10"], "users": part["eval_users"]}
    del challenger, recs  # the baselines are fitted one at a time, not beside the challenger
    pop = evaluate_recommender(PopularityRecommender().fit(pairs, recent=recent), train, test, wanted=wanted)
    for name, similarity in (("itemknn", "cosine"), ("bm25_itemknn", "bm25")):  # each fitted only once it is scored
        knn = evaluate_recommender(ItemKNNRecommender(similarity=similarity).fit(pairs, recent=recent), train, test,
                                   wanted=wanted)
        metrics |= {f"{name}_{metric}_at_10": knn[f"{metric}_at_10"] for metric in ("recall", "ndcg")}
    return Evaluation(metrics, pop, breakdown)
