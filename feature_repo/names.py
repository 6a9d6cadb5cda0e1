"""The stack's feature names, owned by the feature repository.

The Feast views (:mod:`feature_repo.views`) declare them, training's builders
(:mod:`training.features.build`) compute them, the segmentation model and its predictor read
:data:`PROFILE_FEATURES`. Plain Python: importing it imports neither Feast nor pandas.
"""

from __future__ import annotations

__all__ = ["CATEGORIES", "SHARE_COLUMNS", "CUSTOMER_FEATURES", "PROFILE_FEATURES", "PRODUCT_FEATURES"]

# The values of the category column, in the order training/data/categories.py tries its keyword rules ("other":
# none matched); each is a customer's share-of-spend feature.
CATEGORIES: tuple[str, ...] = ("christmas", "candles_lights", "bags_accessories", "kitchen", "stationery",
                               "toys_games", "garden", "home_decor", "other")
SHARE_COLUMNS = [f"share_{c}" for c in CATEGORIES]
CUSTOMER_FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "frequency_13w",
    "monetary_13w",
    "basket_lines",
    "units_per_line",
    "unit_price",
    "tenure_days",
    *SHARE_COLUMNS,
]
# what the segmentation model reads (online at serving time); the rest of CUSTOMER_FEATURES is offline only
PROFILE_FEATURES = ["frequency", "tenure_days", "basket_lines", "units_per_line", "unit_price"]
PRODUCT_FEATURES = ["units_4w", "orders_4w", "customers_4w", "price_4w"]
