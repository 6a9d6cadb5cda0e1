"""Offline sources: Parquet files written by the feature-building step.

Paths are relative: Feast resolves them against the store's runtime ``repo_path``
(``$ZM_HOME/feast`` locally), where :func:`training.features.store.publish_sources`
writes them for one data version at a time.
"""

from feast import FileSource

customer_source = FileSource(
    name="customer_features",
    path="sources/customer_features.parquet",
    timestamp_field="event_timestamp",
    description="Weekly cutoffs (Monday 00:00) of each customer's behaviour before the cutoff.",
)
product_source = FileSource(
    name="product_features",
    path="sources/product_features.parquet",
    timestamp_field="event_timestamp",
    description="Weekly cutoffs of each product's sales in the four weeks before the cutoff.",
)
category_week_source = FileSource(
    name="category_week_features",
    path="sources/category_week_features.parquet",
    timestamp_field="event_timestamp",
    description="Weekly sales per category, stamped at the end of the week they describe.",
)
