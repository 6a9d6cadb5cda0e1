"""Training benchmark tasks, each run by :func:`benchmarks.bench.measure` in a fresh interpreter.

A task prints ``__name__ value`` pairs that the parent collects. Times are taken around the
fit only (reading Parquet is not timed); peak memory is the whole process's.

Wrapper overhead is measured against the bare library on the same input, back to back:

- ALS: :class:`training.models.recommendation.ALSRecommender` from purchase pairs (index and
  matrix building included) vs ``implicit``'s ``AlternatingLeastSquares.fit`` on the already
  built matrix, same factors, iterations and threads: seconds per iteration.
- Forecasting: :class:`training.models.forecasting.CategoryForecaster` with one configuration
  (no selection), one process, vs a loop of bare statsmodels ``SARIMAX(...).fit`` +
  ``get_forecast`` on design matrices built before the clock starts: seconds per series.
- Parallel efficiency of the per-series fits: the default configuration on one process vs
  ``n_jobs=2``, after a warm-up that starts joblib's worker pool (a long-lived worker keeps it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["prepare", "fit_forecast", "fit_segment", "fit_als", "bare_als", "bare_sarimax", "tune_family"]


def _emit(**values: float) -> None:
    for key, value in values.items():
        print(f"__{key}__ {float(value)}")


def prepare(rows: str, out: str) -> None:
    """Simulate about ``rows`` raw rows, clean them and write the three training inputs."""
    from training.data.cleaning import clean_transactions, read_transactions
    from training.data.simulator import simulate
    from training.data.world import SimulationConfig
    from training.features.build import category_week_features, customer_features
    from training.models.recommendation import interactions

    folder = Path(out)
    result = simulate(SimulationConfig.for_rows(int(rows)), folder / "raw")
    clean, _ = clean_transactions(read_transactions(folder / "raw" / "transactions.parquet"))
    category_week_features(clean).to_parquet(folder / "weekly.parquet", index=False)
    cust = customer_features(clean)
    cust[cust["event_timestamp"] == cust["event_timestamp"].max()].to_parquet(folder / "customers.parquet")
    interactions(clean).to_parquet(folder / "pairs.parquet", index=False)
    clean.to_parquet(folder / "clean.parquet", index=False)
    print(result.rows)
    _emit(clean_rows=len(clean), customers=clean["customer_id"].nunique(), products=clean["stock_code"].nunique())


def fit_forecast(folder: str, n_jobs: str = "1", single: str = "0") -> None:
    """Our forecaster; ``single=1`` fixes one configuration (no selection) for the overhead ratio."""
    from joblib import Parallel, delayed

    from training.models.forecasting import CategoryForecaster

    weekly = pd.read_parquet(Path(folder) / "weekly.parquet")
    params: dict[str, Any] = {"harmonics": (2,), "naive_weights": (0.2,), "candidates": ("sarimax",)} \
        if single == "1" else {}
    jobs = int(n_jobs)
    if jobs > 1:  # start the worker pool and its imports outside the clock
        Parallel(n_jobs=jobs)(delayed(CategoryForecaster)() for _ in range(jobs))
    t = time.perf_counter()
    model = CategoryForecaster(n_jobs=jobs, **params).fit(weekly)
    seconds = time.perf_counter() - t
    series = 2 * len(model.categories_)
    print(series)
    _emit(fit=seconds, per_series=seconds / series)


def bare_sarimax(folder: str) -> None:
    """The floor: statsmodels alone on the same series, design and forecast length."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    from training.models.forecasting import TARGETS, _design, _future_weeks

    weekly = pd.read_parquet(Path(folder) / "weekly.parquet")
    weekly["week_start"] = pd.to_datetime(weekly["week_start"]).dt.tz_localize(None)
    jobs = []
    for _, g in weekly.groupby("category"):
        g = g.sort_values("week_start").reset_index(drop=True)
        weeks = g["week_start"]
        t0 = pd.Timestamp(weeks.iloc[0])
        exog = _design(weeks, t0, 2)
        future = _design(_future_weeks(pd.Timestamp(weeks.iloc[-1]), 26), t0, 2)
        jobs += [(np.log1p(g[t].to_numpy(float)), exog, future) for t in TARGETS]
    import warnings

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for y, exog, future in jobs:
            SARIMAX(y, exog=exog, order=(1, 0, 0)).fit(disp=False, maxiter=200).get_forecast(26, exog=future)
    seconds = time.perf_counter() - t
    print(len(jobs))
    _emit(fit=seconds, per_series=seconds / len(jobs))


def fit_segment(folder: str) -> None:
    from training.models.segmentation import CustomerSegmenter

    customers = pd.read_parquet(Path(folder) / "customers.parquet")
    t = time.perf_counter()
    model = CustomerSegmenter().fit(customers)
    seconds = time.perf_counter() - t
    print(model.k_)
    _emit(fit=seconds)


def _pairs(folder: str) -> pd.DataFrame:
    return pd.read_parquet(Path(folder) / "pairs.parquet")


def fit_als(folder: str, iterations: str = "15") -> None:
    from training.models.recommendation import ALSRecommender

    pairs = _pairs(folder)
    n = int(iterations)
    t = time.perf_counter()
    ALSRecommender(alpha=2.0, iterations=n).fit(pairs)
    seconds = time.perf_counter() - t
    print(len(pairs))
    _emit(fit=seconds, per_iteration=seconds / n)


def bare_als(folder: str, iterations: str = "15") -> None:
    """implicit alone on the matrix our wrapper builds (matrix built before the clock starts)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from training.models.recommendation import ALSRecommender

    pairs = _pairs(folder)
    matrix = ALSRecommender()._fit_index(pairs)
    n = int(iterations)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=32, regularization=0.1, alpha=2.0, iterations=n, random_state=0, calculate_training_loss=False
        )
        t = time.perf_counter()
        model.fit(matrix, show_progress=False)
        seconds = time.perf_counter() - t
    print(len(pairs))
    _emit(fit=seconds, per_iteration=seconds / n)


def tune_family(folder: str, family: str, budget: str) -> None:
    """One family's Optuna study (training/tuning.py) on the prepared data, in a fresh study storage, then the
    defaults and the chosen parameters scored side by side on the held-out evaluation the gate uses (forecast:
    rolling-origin backtest; segmentation: silhouette of the fit; recommendation: recall@10 of the last 8 weeks)."""
    import datetime as dt

    from training import trainers as t
    from training import tuning
    from training.families import get_family
    from training.models.forecasting import backtest
    from training.models.recommendation import evaluate_recommender, interactions, time_split
    from zmlops.settings import Settings, TuningSettings

    root = Path(folder)
    fam = get_family(family)
    clean = pd.read_parquet(root / "clean.parquet")
    frame = pd.read_parquet(root / ("weekly.parquet" if family == "demand-forecast" else "customers.parquet"))
    data = t.TrainingData(frame, clean, dt.datetime.now())
    (root / "state.db").unlink(missing_ok=True)  # a fresh study: no warm start from an earlier run
    settings = Settings(home=root, tuning=TuningSettings(budget_seconds=float(budget)))
    defaults = {**fam.make_estimator().get_params(), **(fam.tune(data) if fam.tune else {})}
    result = tuning.tune(settings, fam, data, "bench", defaults, say=lambda _: None)

    def held_out(params: dict[str, Any]) -> float:
        if family == "demand-forecast":
            return float(backtest(frame, lambda: fam.make_estimator(**params), folds=8, horizon=8,
                                  step=4)["model"]["units_wape"])
        if family == "customer-segmentation":
            model = fam.make_estimator(**params).fit(frame)
            return float(model.silhouette_by_k_[model.k_])
        train, test, _ = time_split(clean, 8)
        fitted = fam.make_estimator(**params).fit(interactions(train))
        return float(evaluate_recommender(fitted, train, test)["recall_at_10"])

    print(sum(result.trials.values()))
    _emit(seconds_tuning=result.seconds, complete=result.trials["complete"], pruned=result.trials["pruned"],
          failed=result.trials["fail"], folds_default=result.default if result.default is not None else float("nan"),
          folds_best=result.best, held_out_default=held_out(defaults),
          held_out_tuned=held_out({**defaults, **result.params}))


if __name__ == "__main__":  # pragma: no cover - a task by name, for debugging one measurement
    globals()[sys.argv[1]](*sys.argv[2:])
