"""A fourth model family that lives in tests/ only: it proves a family is one catalog entry.

``ZM_FAMILY_PLUGINS=tests.toy_family`` (with the repository on PYTHONPATH) registers it; nothing outside
tests/ names it, yet the CLI trains it, Feast serves its feature service, ``zm-serve`` serves it, the
monitoring checks run on it, the training DAG schedules on its retrain asset, and the dashboards, alert
rules and the chart's values carry it (tests/integration/test_toy_family.py).

basket-value: a customer's typical basket value (lines per order x units per line x unit price) from
the customer_profile view, by a linear model on logarithms; the baseline is the median basket.
Importing this package only registers the entry: its parts load when a process needs them.
"""

from zmlops.catalog import Entry, register

NAME = "basket-value"

register(Entry(
    name=NAME,
    title="Typical basket value per customer (a toy family of the tests)",
    port=8089,
    feature_service="basket_value",
    feature_views=("customer_profile",),
    feature_description="Basket size and unit price: the toy family's inputs.",
    definition="tests.toy_family.training:BASKET_VALUE",
    service="tests.toy_family.serving:BasketValueService",
    checks="tests.toy_family.checks:BASKET_VALUE",
    example={"basket_lines": 10.0, "units_per_line": 5.0, "unit_price": 2.0},
    panels=(("served_basket_value", "mean served basket value", "currencyGBP"),),
    personal=True,
))
