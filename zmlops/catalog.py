"""The model families: one entry each, the one list every other registry derives from.

An entry holds what light tools need without importing model code (names, port, Feast service and
views, dashboard panels, a valid request row) and where the heavy parts live, as ``module:attribute``:

- ``definition``: the :class:`training.families.Family` (estimator, training set, evaluation, pyfunc wrapper);
- ``service``: the :class:`inference_services.base.ServedModel` subclass that serves it;
- ``checks``: the :class:`monitoring.checks.Checks` of the monitoring DAG (drift, quality, request signals).

Everything else follows from the entries: the CLI's choices, the training DAG's params and retrain assets
(``AssetAny(*assets)``), the monitoring DAG's mapped checks, the servers, the serving ports, the Feast
feature services, the chart's ``inference.models`` (``charts/values_schema.py``), the dashboards and the
alert rules.

A family from outside this repository is added by naming the modules that register it in
``ZM_FAMILY_PLUGINS`` (comma-separated); each calls :func:`register` when imported. The variable is
read once, when this module is first imported, so every process of a deployment must see it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "FAMILIES", "ENTRIES", "PLUGINS_VARIABLE", "RETRAIN_ASSET_PREFIX", "entry", "load",
           "register", "retrain_asset_uri"]

RETRAIN_ASSET_PREFIX = "zmlops://retrain/"
PLUGINS_VARIABLE = "ZM_FAMILY_PLUGINS"


@dataclass(frozen=True)
class Entry:
    name: str  # registered model, serving name, Feast and Airflow names derive from it
    title: str
    port: int  # the local profile's serving port (the chart's predictors all listen on 8080)
    feature_service: str  # the Feast feature service the model reads
    feature_views: tuple[str, ...]  # its views, by their names in feature_repo.views
    definition: str  # module:attribute of its training.families.Family
    service: str  # module:attribute of its inference_services ServedModel subclass
    checks: str  # module:attribute of its monitoring.checks.Checks
    example: dict[str, Any]  # one valid V1 instance (smoke requests, the topology's loop)
    panels: tuple[tuple[str, str, str], ...] = ()  # accuracy on the models dashboard: (signal, legend, unit)
    personal: bool = False  # trained on customers one by one (an erasure's retrain duty, an access report's note)
    agreement: str = "monitoring.agreement:same_answer"  # module:function comparing two logged answers (shadow traffic)
    feature_description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ENTRIES: dict[str, Entry] = {}


def register(new: Entry) -> Entry:
    """Add a family (its name unique, its port free); a plugin module calls this when imported."""
    if new.name in ENTRIES and ENTRIES[new.name] != new:
        raise ValueError(f"model family {new.name!r} is registered twice")
    taken = {e.port: e.name for e in ENTRIES.values() if e.name != new.name}
    if new.port in taken:
        raise ValueError(f"model family {new.name!r}: port {new.port} is {taken[new.port]}'s")
    ENTRIES[new.name] = new
    return new


def entry(name: str) -> Entry:
    try:
        return ENTRIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(ENTRIES)}") from None


def load(target: str) -> Any:
    """The object a ``module:attribute`` names."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def retrain_asset_uri(family: str) -> str:
    """The Airflow asset whose events re-enter the training DAG for one family."""
    return RETRAIN_ASSET_PREFIX + family


register(Entry(
    name="demand-forecast",
    title="Weekly demand per product category",
    port=8081,
    feature_service="demand_forecast",
    feature_views=("category_weekly_sales",),
    feature_description="Weekly category sales and calendar: the forecasting target and its regressors.",
    definition="training.families:DEMAND_FORECAST",
    service="inference_services.forecast:ForecastService",
    checks="monitoring.checks:DEMAND_FORECAST",
    agreement="monitoring.agreement:units_closeness",
    example={"category": "kitchen", "horizon": 4},
    panels=(("realised_units_wape", "realised units WAPE", "percentunit"),
            ("backtest_units_wape", "backtest units WAPE", "percentunit")),
))
register(Entry(
    name="customer-segmentation",
    title="Customer segments",
    port=8082,
    feature_service="customer_segmentation",
    feature_views=("customer_profile",),
    feature_description="The customer profile features that the segmentation model clusters.",
    definition="training.families:CUSTOMER_SEGMENTATION",
    service="inference_services.segmentation:SegmentationService",
    checks="monitoring.checks:CUSTOMER_SEGMENTATION",
    example={"customer_id": 1},
    panels=(("segment_share_shift", "segment share shift (data)", "percentunit"),
            ("served_segment_shift", "segment share shift (served)", "percentunit")),
    personal=True,
))
register(Entry(
    name="product-recommendation",
    title="Product recommendations",
    port=8083,
    feature_service="product_recommendation",
    feature_views=("product_popularity",),
    feature_description="Recent product popularity: the cold-start ranking and the popularity baseline.",
    definition="training.families:PRODUCT_RECOMMENDATION",
    service="inference_services.recommendation:RecommendationService",
    checks="monitoring.checks:PRODUCT_RECOMMENDATION",
    agreement="monitoring.agreement:rank_overlap",
    example={"customer_id": 1, "k": 5},
    panels=(("recommendation_hit_rate", "hit rate of served lists", "percentunit"),
            ("new_product_share", "sales share of unseen products", "percentunit")),
    personal=True,
))

for _plugin in filter(None, (p.strip() for p in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
    importlib.import_module(_plugin)

FAMILIES: tuple[str, ...] = tuple(ENTRIES)
