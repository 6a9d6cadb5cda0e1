"""Feature views: typed columns of each source, with a TTL of one weekly cutoff."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, UnixTimestamp

from feature_repo.entities import category, customer, product
from feature_repo.names import CUSTOMER_FEATURES, PRODUCT_FEATURES, PROFILE_FEATURES
from feature_repo.sources import category_week_source, customer_source, product_source

WEEK = timedelta(days=7)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=WEEK,
    schema=[Field(name=name, dtype=Float64) for name in PROFILE_FEATURES],
    source=customer_source,
    online=True,
    description="Orders, tenure, basket size, units per line and unit price: what segmentation reads, "
    "online at serving time.",
    tags={"owner": "ml-platform"},
)
# Offline only: no model reads these at serving time, so the online store does not carry them (the SQLite
# store reads every feature of a view per lookup, and Redis would hold them for nothing). Set online=True
# and materialize when a served model needs them.
customer_behaviour = FeatureView(
    name="customer_behaviour",
    entities=[customer],
    ttl=WEEK,
    schema=[Field(name=name, dtype=Float64) for name in CUSTOMER_FEATURES if name not in PROFILE_FEATURES],
    source=customer_source,
    online=False,
    description="Recency, monetary value (all history and last 13 weeks), recent orders and category shares.",
    tags={"owner": "ml-platform"},
)
product_popularity = FeatureView(
    name="product_popularity",
    entities=[product],
    ttl=WEEK,
    schema=[Field(name=name, dtype=Float64) for name in PRODUCT_FEATURES],
    source=product_source,
    online=True,
    description="Units, orders, distinct customers and mean price over the last four weeks.",
    tags={"owner": "ml-platform"},
)
category_weekly_sales = FeatureView(
    name="category_weekly_sales",
    entities=[category],
    ttl=WEEK,
    schema=[
        Field(name="week_start", dtype=UnixTimestamp),
        Field(name="units", dtype=Int64),
        Field(name="revenue", dtype=Float64),
        Field(name="orders", dtype=Int64),
        Field(name="week_of_year", dtype=Int64),
        Field(name="month", dtype=Int64),
        Field(name="black_friday_week", dtype=Int64),
        Field(name="christmas_week", dtype=Int64),
    ],
    source=category_week_source,
    online=True,
    description="A finished week's units, revenue and orders per category, with calendar features.",
    tags={"owner": "ml-platform"},
)
