"""Feast declarations of the stack (entities, sources, views, one service per model).

Declarations only: ``feast apply`` imports every module here. The stack applies the
same objects through :func:`training.features.store.apply_definitions`, which reads
:data:`DEFINITIONS`.
"""

from feature_repo.entities import category, customer, product
from feature_repo.permissions import readers, writers
from feature_repo.services import customer_segmentation, demand_forecast, product_recommendation
from feature_repo.sources import category_week_source, customer_source, product_source
from feature_repo.views import category_weekly_sales, customer_behaviour, customer_profile, product_popularity

__all__ = [
    "DEFINITIONS",
    "category",
    "customer",
    "product",
    "customer_source",
    "product_source",
    "category_week_source",
    "customer_profile",
    "customer_behaviour",
    "product_popularity",
    "category_weekly_sales",
    "demand_forecast",
    "customer_segmentation",
    "product_recommendation",
    "readers",
    "writers",
]

DEFINITIONS = [
    customer,
    product,
    category,
    customer_source,
    product_source,
    category_week_source,
    customer_profile,
    customer_behaviour,
    product_popularity,
    category_weekly_sales,
    demand_forecast,
    customer_segmentation,
    product_recommendation,
    readers,
    writers,
]
