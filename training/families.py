"""The training side of each model family (the catalog entry's ``definition``): reused by training and gating.

A family names its registered model, its Feast feature service, its estimator factory,
how to build its training set from Feast, how to evaluate it (model and baseline on the
same data), its pyfunc wrapper, its primary metric and its promotion rules. :data:`FAMILIES`
holds one per :mod:`zmlops.catalog` entry, in the catalog's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from training import trainers as t  # light: model libraries are imported inside its functions
from training.pyfunc import EstimatorModel, ForecastModel, RecommendModel, SegmentModel
from training.trainers import Evaluation, TrainingData
from zmlops import catalog
from zmlops.settings import Settings

__all__ = ["Family", "FAMILIES", "TrainingData", "Evaluation", "get_family", "DEMAND_FORECAST",
           "CUSTOMER_SEGMENTATION", "PRODUCT_RECOMMENDATION"]


@dataclass(frozen=True)
class Family:
    name: str  # its catalog entry's name: registered model name and serving name
    primary_metric: str
    greater_is_better: bool
    baseline_name: str
    make_estimator: Callable[..., Any]
    training_data: Callable[[Settings, Path, str], TrainingData]
    evaluate: Callable[[Any, TrainingData], Evaluation]
    input_example: Callable[[TrainingData], pd.DataFrame]  # a request frame, logged with the pyfunc model
    wrapper: type[EstimatorModel]  # the MLflow pyfunc class that turns a request frame into an answer frame
    purpose: str
    limitations: str
    fit: Callable[[Any, TrainingData], Any] = t.fit_on_frame
    tune: Callable[[TrainingData], dict[str, Any]] | None = None  # hyper-parameters chosen on the training part
    # Optuna (training/tuning.py): a trial -> estimator parameters, and a parameter set's primary metric per
    # tuning fold (on the training part only; the folds are the pruning steps)
    search_space: Callable[[Any], dict[str, Any]] | None = None
    tuning_folds: Callable[[TrainingData, dict[str, Any]], Iterator[float]] | None = None
    evaluation_refits: bool = True  # evaluate() refits the configuration, so equal params give equal metrics
    tolerance: float = 0.05  # a challenger may be this much (relative) worse than the champion and still pass
    min_vs_baseline: float = 1.0  # required ratio of model / baseline primary metric (direction-aware)
    # batch scoring (training/batch.py): the request frames that ask the deployed version about everyone, given the
    # settings, its fitted estimator and its data version; ``batch_keys`` are request columns the answers get back
    # (one answer row per request row) when the model does not return them itself
    batch_requests: Callable[[Settings, Any, str], Iterator[pd.DataFrame]] | None = None
    batch_keys: tuple[str, ...] = ()
    # what one training's tuning, fit and evaluation share (run.train_family opens it around the three): the
    # forecaster's fits of a series prefix, computed once (training.models.forecasting.shared_fits)
    session: Callable[[], AbstractContextManager[Any]] = nullcontext

    @property
    def title(self) -> str:
        return catalog.entry(self.name).title

    @property
    def feature_service(self) -> str:
        return catalog.entry(self.name).feature_service

    def better(self, a: float, b: float, tolerance: float = 0.0) -> bool:
        """Is ``a`` at least as good as ``b`` within ``tolerance`` (relative)?"""
        return a >= b * (1 - tolerance) if self.greater_is_better else a <= b * (1 + tolerance)

    def beats_baseline(self, model: float, baseline: float) -> bool:
        if self.greater_is_better:
            return model >= baseline * self.min_vs_baseline
        return model <= baseline * self.min_vs_baseline


def get_family(name: str) -> Family:
    return FAMILIES[name]  # an unknown name: a KeyError naming the known ones


DEMAND_FORECAST = Family(
    name="demand-forecast",
    primary_metric="units_wape",
    greater_is_better=False,
    baseline_name="the best of seasonal naive (same week last year), naive (last week) and the mean of the "
    "last 4 weeks, by backtest units WAPE",
    make_estimator=t.make_forecaster,
    training_data=t.forecast_data,
    evaluate=t.evaluate_forecaster,
    input_example=t.forecast_example,
    wrapper=ForecastModel,
    search_space=t.forecaster_space,
    tuning_folds=t.forecaster_folds,
    batch_requests=t.forecast_requests,
    session=t.forecast_session,
    purpose="Weekly units and revenue per category for the next weeks (default 8), with 90% intervals, "
    "for stock planning.",
    limitations="Promotions are not known in advance, so promotion weeks are under-forecast; categories "
    "with under a year of history fall back to their last value for the naive part; forecasts start "
    "after the last complete week of the training data.",
)
CUSTOMER_SEGMENTATION = Family(
    name="customer-segmentation",
    primary_metric="silhouette",
    greater_is_better=True,
    baseline_name="k-means with k=2 on the same features",
    make_estimator=t.make_segmenter,
    training_data=t.segmentation_data,
    evaluate=t.evaluate_segmenter,
    input_example=t.segmentation_example,
    wrapper=SegmentModel,
    search_space=t.segmenter_space,
    tuning_folds=t.segmenter_folds,
    evaluation_refits=False,  # scores the fitted model itself
    batch_requests=t.segmentation_requests,
    batch_keys=("customer_id",),
    purpose="A named, interpretable segment per customer (wholesale, loyal, occasional, bargain, new, "
    "mainstream: each name given by an explicit rule only where it is true) for marketing and as context "
    "for recommendations.",
    limitations="Segments describe past behaviour up to the feature cutoff; customers with one order "
    "have no rate history and land in the nearest segment by basket and price.",
)
PRODUCT_RECOMMENDATION = Family(
    name="product-recommendation",
    primary_metric="recall_at_10",
    greater_is_better=True,
    baseline_name="popularity (last 4 weeks before the cutoff, then all-time), already-bought filtered; item-item "
    "kNN (cosine and BM25) reported beside it",
    make_estimator=t.make_recommender,
    training_data=t.recommendation_data,
    fit=t.fit_recommender,
    evaluate=t.evaluate_recommender_family,
    input_example=t.recommendation_example,
    wrapper=RecommendModel,
    tune=t.choose_recommender,
    search_space=t.recommender_space,
    tuning_folds=t.recommender_folds,
    batch_requests=t.recommendation_requests,
    purpose="Top-k products a customer has not bought yet; unknown customers get popular products "
    "in their country.",
    limitations="Products without purchases before the cutoff are never recommended by the model "
    "(cold items); re-purchases are excluded by design.",
)


class _Definitions(Mapping[str, Family]):
    """One Family per catalog entry, in the catalog's order, each loaded when first asked for (a plugin's
    definition module imports this one, so it cannot be loaded while this one is)."""

    def __getitem__(self, name: str) -> Family:
        entry = catalog.entry(name)
        family = catalog.load(entry.definition)
        if not isinstance(family, Family) or family.name != name:
            raise TypeError(f"{entry.definition}: not the Family of catalog entry {name!r}")
        return family

    def __iter__(self) -> Iterator[str]:
        return iter(catalog.ENTRIES)

    def __len__(self) -> int:
        return len(catalog.ENTRIES)


FAMILIES: Mapping[str, Family] = _Definitions()
