"""Weekly demand per category: SARIMAX, ETS, Theta and three simple forecasts, one chosen by backtest.

The candidates (:data:`CANDIDATES`) for each (category, target) series:

- **SARIMAX** (statsmodels) on ``log1p`` scale, a regression with AR(1) errors: level, linear trend, ``K`` yearly
  Fourier harmonics and Black Friday / Christmas week indicators (all known in advance); the forecast is the median
  (``expm1`` of the log forecast: WAPE is an absolute-error metric), combined with seasonal naive (weight ``w``).
  ``K`` and ``w`` are chosen per series. With less than a season of history it is trend + holiday weeks, combined
  in equal parts with the last value. **SARIMAX with a drifting season** (``sarimax_tv``) adds each Fourier pair
  times the trend, so amplitude and peak may move from year to year; it is scored once every inner origin has two
  seasons of history (on the simulator's three years with peaks moving 3 weeks and amplitudes growing 25% a year
  the forecaster, choosing it where the history allows, scored units WAPE 0.192 against 0.262 with SARIMAX's fixed
  season alone; without drift it is never chosen: tests/integration/test_forecast_quality.py).
- **ETS**: statsmodels' exponential smoothing with a damped additive trend; **Theta**: statsmodels' Theta method;
- the **simple forecasts** (:data:`SIMPLE`): seasonal naive (the same week a year earlier), naive (last week) and
  the mean of the last 4 weeks, which retail data is known to be hard to beat with.

Every candidate is scored by a rolling-origin backtest inside the training window (``selection_folds`` origins,
a horizon apart once the history allows, else 4 weeks apart). ``choice="pooled"`` (the default) then takes, per
target, the candidate with the lowest absolute error summed over all categories: one choice on many more errors
than one series has. Choosing per series (``choice="per_series"``) chased noise: on the real UCI year it scored
units WAPE 0.41 against 0.35 pooled (docs/models.md). Intervals are SARIMAX's own, widened to what the inner
backtest's errors say where wider; for the other candidates, those errors alone. :func:`backtest` measures their
coverage.

A rolling-origin backtest refits the forecaster at every origin, and each fit runs its own inner backtest, so the
same series prefix is fitted again and again (the gate's 8 origins 4 weeks apart with 3 inner origins 8 weeks
apart: 24 inner fits per series and configuration, 12 of them distinct). Inside :func:`shared_fits` (which
:func:`backtest` opens) every SARIMAX, ETS and Theta fit is computed once and read back after (joblib's
``Memory`` in a temporary folder the worker processes share); the answers are the same bytes.

The gate's baseline is the best of the three simple forecasts. Forecasts for ``max_horizon`` weeks after the last
observed week are computed once in :meth:`CategoryForecaster.fit`, with intervals, so serving is a table lookup.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator

from training.features.build import calendar
from training.models.metrics import forecast_errors

__all__ = ["CategoryForecaster", "SeasonalNaive", "backtest", "backtest_origins", "choose", "shared_fits", "TARGETS",
           "SEASON", "SIMPLE", "CANDIDATES"]

TARGETS = ("units", "revenue")
SEASON = 52
YEAR_WEEKS = 365.25 / 7
SHORT_HISTORY_WEIGHT = 0.5  # weight of the last value when there is less than a season of history


def _design(week_starts: np.ndarray | pd.Series, t0: pd.Timestamp, harmonics: int, varying: bool = False) -> np.ndarray:
    """Level, trend, ``harmonics`` yearly Fourier pairs (``varying``: each also times the trend, so the season's
    amplitude and phase may drift from year to year), Black Friday and Christmas weeks."""
    starts = pd.Series(pd.to_datetime(week_starts))
    cal = calendar(starts)
    t = ((starts - t0).dt.days / 7.0).to_numpy()
    cols = [np.ones(len(t)), t / SEASON]
    for k in range(1, harmonics + 1):
        angle = 2 * np.pi * k * cal["week_of_year"].to_numpy() / YEAR_WEEKS
        cols += [np.sin(angle), np.cos(angle)]
        if varying:
            cols += [np.sin(angle) * t / SEASON, np.cos(angle) * t / SEASON]
    cols += [cal["black_friday_week"].to_numpy(float), cal["christmas_week"].to_numpy(float)]
    return np.column_stack(cols)


@dataclass
class SeriesForecast:
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


_FITS: list[Any] = []  # the fit cache shared_fits() opened (a joblib Memory), if any


@contextmanager
def shared_fits() -> Iterator[None]:
    """Inside the block, each SARIMAX, ETS and Theta fit of a series prefix is computed once, here and in joblib's
    worker processes (a joblib ``Memory`` in a temporary folder, removed at the end). Nested blocks share the outer
    one's cache."""
    if _FITS:
        yield
        return
    from joblib import Memory

    with tempfile.TemporaryDirectory(prefix="zm-forecast-fits-") as folder:
        _FITS.append(Memory(folder, verbose=0))
        try:
            yield
        finally:
            _FITS.pop()


def _cached(fn: Callable[..., Any], memory: Any) -> Callable[..., Any]:
    return memory.cache(fn) if memory is not None else fn


def _fit_forecast(y: np.ndarray, weeks: pd.Series, future: pd.Series, harmonics: int, alpha: float,
                  varying: bool = False, memory: Any = None) -> SeriesForecast:
    """Fit one SARIMAX regression on log1p(y) and forecast the ``future`` weeks (original scale); through ``memory``
    (:func:`shared_fits`) when given, keyed on the values alone (not the series' index)."""
    fit: Callable[..., SeriesForecast] = _cached(_sarimax, memory)
    return fit(np.asarray(y, float), pd.to_datetime(weeks).to_numpy(), pd.to_datetime(future).to_numpy(), harmonics,
               alpha, varying)


def _sarimax(y: np.ndarray, weeks: np.ndarray, future: np.ndarray, harmonics: int, alpha: float,
             varying: bool) -> SeriesForecast:
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    if not np.any(y > 0):
        zeros = np.zeros(len(future))
        return SeriesForecast(zeros, zeros, zeros)
    t0 = pd.Timestamp(weeks[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        # concentrate_scale: the same maximum likelihood with one parameter fewer to search (1.7x faster)
        model = SARIMAX(np.log1p(y), exog=_design(weeks, t0, harmonics, varying), order=(1, 0, 0),
                        concentrate_scale=True)
        result = model.fit(disp=False, maxiter=200)
        fc = result.get_forecast(len(future), exog=_design(future, t0, harmonics, varying))
    mean_log = np.asarray(fc.predicted_mean)
    ci = np.asarray(fc.conf_int(alpha=alpha))
    mean = np.expm1(mean_log)
    return SeriesForecast(
        np.clip(mean, 0, None), np.clip(np.expm1(ci[:, 0]), 0, None), np.clip(np.expm1(ci[:, 1]), 0, None)
    )


def _future_weeks(last: pd.Timestamp, steps: int) -> pd.Series:
    return pd.Series(pd.date_range(last + pd.Timedelta(days=7), periods=steps, freq="7D"))


def _naive(y: np.ndarray, steps: int) -> np.ndarray:
    """Seasonal-naive continuation of ``y`` (the last value without a full season of history)."""
    if len(y) < SEASON:
        return np.full(steps, y[-1])
    return y[len(y) - SEASON + np.arange(steps) % SEASON]


def _last(y: np.ndarray, steps: int) -> np.ndarray:
    """Naive: every coming week equals the last one."""
    return np.full(steps, y[-1])


def _mean4(y: np.ndarray, steps: int) -> np.ndarray:
    """The mean of the last 4 weeks, for every coming week."""
    return np.full(steps, float(np.mean(y[-4:])))


# the simple forecasts: candidates of the selection and the gate's baselines (the best of the three)
SIMPLE = {"seasonal naive": _naive, "naive": _last, "mean of last 4 weeks": _mean4}


def _around(mean: np.ndarray, errors: np.ndarray, interval: float) -> SeriesForecast:
    """An interval from backtest errors: the ``interval`` quantile of |error| / forecast, around ``mean``."""
    mean = np.clip(mean, 0, None)
    ratio = float(np.quantile(errors, interval)) if len(errors) else 0.0
    return SeriesForecast(mean, np.clip(mean * (1 - ratio), 0, None), mean * (1 + ratio))


def _blend(fc: SeriesForecast, naive: np.ndarray, weight: float) -> SeriesForecast:
    """Combine the model with seasonal naive; the interval keeps its width relative to the mean."""
    if weight == 0:
        return fc
    mean = (1 - weight) * fc.mean + weight * naive
    ratio = np.divide(mean, fc.mean, out=np.ones_like(mean), where=fc.mean > 0)
    return SeriesForecast(mean, fc.lower * ratio, fc.upper * ratio)


def _ets(y: np.ndarray, steps: int) -> np.ndarray:
    """statsmodels' exponential smoothing with a damped additive trend (Holt's damped method)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if len(y) < 10 or not np.any(y != y[0]):
        return _last(y, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(y, trend="add", damped_trend=True, initialization_method="estimated").fit()
    out: np.ndarray = np.clip(np.asarray(fit.forecast(steps), float), 0, None)
    return out


def _theta(y: np.ndarray, steps: int) -> np.ndarray:
    """statsmodels' Theta method (seasonally adjusted from two seasons of history on)."""
    from statsmodels.tsa.forecasting.theta import ThetaModel

    if len(y) < 10 or not np.any(y != y[0]):
        return _last(y, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ThetaModel(y + 1.0, period=SEASON, deseasonalize=len(y) >= 2 * SEASON).fit()
    out: np.ndarray = np.clip(np.asarray(fit.forecast(steps), float) - 1.0, 0, None)
    return out


# Candidates beside SARIMAX: point forecasts from the history alone (statsmodels' ETS and Theta, the simple ones)
OTHERS = {"ets": _ets, "theta": _theta, **SIMPLE}
# SARIMAX with a fixed yearly season, and with one that drifts (Fourier terms times the trend), the second scored
# only where every inner origin has two seasons of history
SARIMAX_KINDS = {"sarimax": False, "sarimax_tv": True}
VARYING_MIN_HISTORY = 2 * SEASON
CANDIDATES = (*SARIMAX_KINDS, *OTHERS)
CHOICES = ("pooled", "per_series")
INNER_STEP = 4  # weeks between the inner backtest's origins (each forecasts ``horizon`` weeks: they overlap)
INNER_MIN_HISTORY = 20  # weeks of history an inner origin needs


@dataclass
class InnerScores:
    """One series' inner backtest: per candidate the summed absolute error and the relative errors; for each SARIMAX
    kind, the (K, w) configuration with the lowest error, whose error stands for that kind."""

    errors: dict[str, float]
    relative: dict[str, list[float]]
    sarimax: dict[str, tuple[int, float]]


def _configs(y: np.ndarray, harmonics: Sequence[int], weights: Sequence[float]) -> tuple[list[int], list[float]]:
    # With less than a season of history yearly harmonics are not identifiable and seasonal naive is the last value:
    # SARIMAX is then trend + holiday weeks with AR(1) errors, combined in equal parts with the last value.
    if len(y) < SEASON:
        return [0], [SHORT_HISTORY_WEIGHT]
    return list(harmonics), list(weights)


def _other(name: str, memory: Any) -> Callable[[np.ndarray, int], np.ndarray]:
    """A candidate beside SARIMAX; statsmodels' fits (ETS, Theta) through ``memory`` when given."""
    return _cached(OTHERS[name], memory) if name in ("ets", "theta") else OTHERS[name]


def _inner(y: np.ndarray, weeks: pd.Series, harmonics: Sequence[int], weights: Sequence[float],
           candidates: Sequence[str], folds: int, horizon: int, alpha: float, memory: Any = None) -> InnerScores:
    """Every candidate at ``folds`` inner origins inside the training window (fits through ``memory``: shared_fits)."""
    ks, ws = _configs(y, harmonics, weights)
    step = horizon if len(y) >= SEASON + folds * horizon else INNER_STEP  # overlapping origins only when short
    # An inner origin must give each candidate the form it takes in the final fit: with a season of history,
    # SARIMAX has its yearly terms and seasonal naive its year-ago week, so origins with less are not scored
    # (before that rule, at 70 weeks SARIMAX without a season lost every inner fold and the choice fell on the
    # 4-week mean: units WAPE 0.46 against 0.27 for SARIMAX alone).
    floor = SEASON if len(y) >= SEASON else INNER_MIN_HISTORY
    origins = [o for o in (len(y) - horizon - step * j for j in range(folds)) if o >= floor]
    errors: dict[str, float] = {}
    relative: dict[str, list[float]] = {}
    best = {kind: (min(ks), ws[0]) for kind in SARIMAX_KINDS}
    if not origins or not any(np.abs(y[o : o + horizon]).sum() for o in origins):
        return InnerScores(errors, relative, best)

    def score(name: str, point: np.ndarray, actual: np.ndarray) -> None:
        errors[name] = errors.get(name, 0.0) + float(np.abs(point - actual).sum())
        relative.setdefault(name, []).extend(np.abs(point - actual) / np.maximum(np.abs(point), 1.0))

    kinds = [kind for kind, varying in SARIMAX_KINDS.items() if kind in candidates
             and (not varying or min(origins) >= VARYING_MIN_HISTORY)]
    if len(ks) == 1 and len(ws) == 1 and list(candidates) == ["sarimax"]:
        kinds = []  # nothing to choose: no inner backtest, the model's own interval
    for o in origins:
        actual = y[o : o + horizon]
        for kind in kinds:
            for k in ks:
                f = _fit_forecast(y[:o], weeks.iloc[:o], weeks.iloc[o : o + horizon], k, alpha, SARIMAX_KINDS[kind],
                                  memory)
                for w in ws:
                    score(f"{kind} K={k} w={w}", _blend(f, _naive(y[:o], horizon), w).mean, actual)
        for name in candidates:
            if name in OTHERS:
                score(name, _other(name, memory)(y[:o], horizon), actual)
    for kind in kinds:
        configs = [(k, w) for k in ks for w in ws]
        best[kind] = min(configs, key=lambda kw: (errors[f"{kind} K={kw[0]} w={kw[1]}"], kw))
        name = f"{kind} K={best[kind][0]} w={best[kind][1]}"
        errors[kind], relative[kind] = errors[name], relative[name]
    return InnerScores({k: v for k, v in errors.items() if " K=" not in k},
                       {k: v for k, v in relative.items() if " K=" not in k}, best)


def _forecast(y: np.ndarray, weeks: pd.Series, method: str, inner: InnerScores, steps: int,
              alpha: float, memory: Any = None) -> tuple[str, SeriesForecast]:
    """The chosen candidate fitted on the whole series: its name and forecast, with an interval from its inner
    backtest errors (SARIMAX: its own interval, widened where those errors say it should be wider)."""
    seen = np.asarray(inner.relative.get(method, []))
    if method not in SARIMAX_KINDS:
        return method, _around(_other(method, memory)(y, steps), seen, 1.0 - alpha)
    k, w = inner.sarimax[method]
    future = _future_weeks(pd.Timestamp(weeks.iloc[-1]), steps)
    fc = _blend(_fit_forecast(y, weeks, future, k, alpha, SARIMAX_KINDS[method], memory), _naive(y, steps), w)
    if not len(seen):
        return f"{method} K={k} w={w}", fc
    wide = _around(fc.mean, seen, 1.0 - alpha)
    return f"{method} K={k} w={w}", SeriesForecast(fc.mean, np.minimum(fc.lower, wide.lower),
                                                   np.maximum(fc.upper, wide.upper))


def choose(scores: dict[tuple[str, str], InnerScores], candidates: Sequence[str], choice: str) -> dict[
        tuple[str, str], str]:
    """The candidate per (category, target) series. ``pooled``: for each target, the candidate with the lowest
    absolute error summed over every category's inner backtest (a WAPE over the categories: one choice for all,
    on many more errors than one series has); ``per_series``: each series' own lowest. A series without inner
    errors (too short) gets SARIMAX (or the first candidate)."""
    fallback = "sarimax" if "sarimax" in candidates else candidates[0]
    chosen: dict[tuple[str, str], str] = {}
    for target in TARGETS:
        keys = [key for key in scores if key[1] == target]
        totals: dict[str, float] = {}
        for key in keys:
            for name, err in scores[key].errors.items():
                totals[name] = totals.get(name, 0.0) + err
        complete = [n for n in candidates if all(n in scores[key].errors for key in keys if scores[key].errors)]
        pooled = min(complete, key=lambda n: (totals.get(n, np.inf), candidates.index(n))) if complete else fallback
        for key in keys:
            errors = scores[key].errors
            if not errors:
                chosen[key] = fallback
            elif choice == "pooled" and pooled in errors:
                chosen[key] = pooled
            else:
                chosen[key] = min(errors, key=lambda n: (errors[n], candidates.index(n)))
    return chosen


def _series(X: pd.DataFrame) -> dict[str, pd.DataFrame]:
    missing = {"category", "week_start", *TARGETS} - set(X.columns)
    if missing:
        raise ValueError(f"weekly table lacks columns {sorted(missing)}")
    frame = X.assign(week_start=pd.to_datetime(X["week_start"]).dt.tz_localize(None))
    return {str(c): g.sort_values("week_start").reset_index(drop=True) for c, g in frame.groupby("category")}


class CategoryForecaster(BaseEstimator):  # type: ignore[misc]
    """Forecast weekly units and revenue per category with prediction intervals.

    ``fit(X)`` takes the weekly table (category, week_start, units, revenue); ``predict(X)``
    takes rows of (category, horizon) and returns one row per requested week.
    """

    def __init__(
        self,
        horizon: int = 8,
        max_horizon: int = 26,
        harmonics: Sequence[int] = (2, 3),
        naive_weights: Sequence[float] = (0.2,),
        selection_folds: int = 3,
        interval: float = 0.9,
        candidates: Sequence[str] = CANDIDATES,
        choice: str = "pooled",
        n_jobs: int = 2,
    ) -> None:
        self.horizon = horizon
        self.max_horizon = max_horizon
        self.harmonics = harmonics
        self.naive_weights = naive_weights
        self.selection_folds = selection_folds
        self.interval = interval
        self.candidates = candidates
        self.choice = choice
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, y: Any = None) -> CategoryForecaster:
        unknown = sorted(set(self.candidates) - set(CANDIDATES))
        if unknown or not self.candidates:
            raise ValueError(f"candidates must be among {CANDIDATES}, got {list(self.candidates)}")
        if self.choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, not {self.choice!r}")
        series = _series(X)
        tasks = [(c, t) for c in series for t in TARGETS]
        alpha = 1.0 - self.interval
        candidates = tuple(self.candidates)
        parallel = Parallel(n_jobs=self.n_jobs)
        memory = _FITS[0] if _FITS else None  # inside shared_fits(): every fit of a series prefix once
        inner = parallel(
            delayed(_inner)(series[c][t].to_numpy(float), series[c]["week_start"], self.harmonics,
                            self.naive_weights, candidates, self.selection_folds, self.horizon, alpha, memory)
            for c, t in tasks
        )
        scores = dict(zip(tasks, inner, strict=True))
        chosen = choose(scores, candidates, self.choice)
        results = parallel(
            delayed(_forecast)(series[c][t].to_numpy(float), series[c]["week_start"], chosen[(c, t)],
                               scores[(c, t)], self.max_horizon, alpha, memory)
            for c, t in tasks
        )
        rows = []
        self.choice_: dict[str, dict[str, str]] = {c: {} for c in series}
        self.inner_errors_: dict[str, dict[str, dict[str, float]]] = {
            c: {t: scores[(c, t)].errors for t in TARGETS} for c in series}
        last = max(pd.Timestamp(g["week_start"].iloc[-1]) for g in series.values())
        future = _future_weeks(last, self.max_horizon)
        per_cat: dict[str, dict[str, SeriesForecast]] = {c: {} for c in series}
        for (c, t), (k, fc) in zip(tasks, results, strict=True):
            self.choice_[c][t] = k
            per_cat[c][t] = fc
        for c, fcs in per_cat.items():
            for step in range(self.max_horizon):
                row: dict[str, Any] = {"category": c, "step": step + 1, "week_start": future.iloc[step]}
                for t, fc in fcs.items():
                    row[t], row[f"{t}_lower"], row[f"{t}_upper"] = fc.mean[step], fc.lower[step], fc.upper[step]
                rows.append(row)
        self.forecasts_ = pd.DataFrame(rows)
        self.categories_ = sorted(series)
        self.last_week_ = last
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """One row per (input row, week 1..horizon): category, step, week_start, means and intervals."""
        req = X.reset_index(drop=True)
        horizon = req["horizon"] if "horizon" in req else pd.Series(self.horizon, index=req.index)
        unknown = sorted(set(req["category"]) - set(self.categories_))
        if unknown:
            raise KeyError(f"unknown category: {unknown}")
        if (horizon < 1).any() or (horizon > self.max_horizon).any():
            raise ValueError(f"horizon must be between 1 and {self.max_horizon}")
        parts = [
            self.forecasts_[(self.forecasts_["category"] == c) & (self.forecasts_["step"] <= h)].assign(request=i)
            for i, (c, h) in enumerate(zip(req["category"], horizon, strict=True))
        ]
        out: pd.DataFrame = pd.concat(parts, ignore_index=True)
        return out


class SeasonalNaive(BaseEstimator):  # type: ignore[misc]
    """The baseline: next year's week equals this year's (last value when history is shorter)."""

    def __init__(self, season: int = SEASON) -> None:
        self.season = season

    def fit(self, X: pd.DataFrame, y: Any = None) -> SeasonalNaive:
        self.series_ = _series(X)
        return self

    def forecast(self, category: str, target: str, steps: int) -> np.ndarray:
        y = self.series_[category][target].to_numpy(float)
        if len(y) < self.season:
            return np.full(steps, y[-1])
        idx = len(y) - self.season + np.arange(steps) % self.season
        return y[idx]


def _scale(y: np.ndarray, season: int) -> float:
    lag = season if len(y) > season else 1
    return float(np.mean(np.abs(y[lag:] - y[:-lag]))) if len(y) > lag else 0.0


def backtest_origins(n: int, folds: int, horizon: int, step: int, min_train: int = SEASON) -> list[int]:
    """The origins :func:`backtest` forecasts from in ``n`` weeks, oldest first: ``folds`` origins ``step`` weeks
    apart ending ``horizon`` weeks before the end, each with at least ``min_train`` weeks before it."""
    origins = [n - horizon - step * j for j in range(folds - 1, -1, -1) if n - horizon - step * j >= min_train]
    if not origins and n - horizon >= SEASON // 2:
        # Shorter than a season plus a horizon (the real file holds one year): one hold-out of the last
        # ``horizon`` weeks; seasonal naive then falls back to the last value.
        origins = [n - horizon]
    if not origins:
        raise ValueError(f"backtest needs at least {SEASON // 2 + horizon} weeks, got {n}")
    return origins


def backtest(
    weekly: pd.DataFrame, make_model: Any, folds: int = 4, horizon: int = 8, min_train: int = SEASON,
    step: int | None = None,
) -> dict[str, Any]:
    """Rolling-origin backtest of ``make_model()`` against the three simple forecasts (:data:`SIMPLE`).

    Origins step back ``step`` weeks (default ``horizon``) from the last full horizon, ``folds`` times (only
    origins with at least ``min_train`` weeks before them; with less history, one hold-out of the last ``horizon``
    weeks). The model is refitted at every origin, its own selection included, on data before the origin only.
    Errors are pooled over categories, folds and steps. Returns ``model`` and ``baseline`` metrics (``units_*`` and
    ``revenue_*``; the baseline is the best simple forecast by units WAPE, named in ``baseline_name``; every one in
    ``baselines``), the model's interval coverage (``units_coverage``, ``revenue_coverage``), and per category the
    units WAPE of the model and of the baseline.
    """
    series = _series(weekly)
    n = min(len(g) for g in series.values())
    step = step or horizon
    origins = backtest_origins(n, folds, horizon, step, min_train)
    frames = []
    with shared_fits():  # every origin's inner backtest fits prefixes an earlier origin fitted: once each
        for o in origins:
            train = pd.concat([g.iloc[:o] for g in series.values()], ignore_index=True)
            model = make_model().set_params(max_horizon=horizon).fit(train)
            for c, g in series.items():
                fc = model.forecasts_[model.forecasts_["category"] == c].sort_values("step")
                for t in TARGETS:
                    history = g[t].to_numpy(float)[:o]
                    actual = g[t].to_numpy(float)[o : o + horizon]
                    m = len(actual)
                    frames.append(pd.DataFrame({
                        "origin": o, "category": c, "target": t, "actual": actual, "scale": _scale(history, SEASON),
                        "model": fc[t].to_numpy()[:m], "lower": fc[f"{t}_lower"].to_numpy()[:m],
                        "upper": fc[f"{t}_upper"].to_numpy()[:m],
                        **{name: simple(history, m) for name, simple in SIMPLE.items()}}))
    res = pd.concat(frames, ignore_index=True)
    scores: dict[str, dict[str, float]] = {who: {} for who in ("model", *SIMPLE)}
    for t in TARGETS:
        part = res[res["target"] == t]
        scale = float(part.groupby(["origin", "category"])["scale"].first().mean())
        for who in scores:
            for metric, value in forecast_errors(part["actual"].to_numpy(), part[who].to_numpy(), scale).items():
                scores[who][f"{t}_{metric}"] = value
        inside = (part["actual"] >= part["lower"] - 1e-9) & (part["actual"] <= part["upper"] + 1e-9)
        scores["model"][f"{t}_coverage"] = float(inside.mean())
    best = min(SIMPLE, key=lambda name: scores[name]["units_wape"])
    units = res[res["target"] == "units"]

    def per_category(who: str) -> dict[str, float]:
        return {str(c): float(np.abs(g[who] - g["actual"]).sum() / max(g["actual"].abs().sum(), 1e-9))
                for c, g in units.groupby("category")}

    return {"model": scores["model"], "baseline": scores[best], "baseline_name": best,
            "baselines": {name: scores[name] for name in SIMPLE}, "per_category": per_category("model"),
            "per_category_baseline": per_category(best),
            "folds": {"origins": float(len(origins)), "horizon": float(horizon), "step": float(step)}}
