"""Every Feast object of the stack, in the order it is applied
(:func:`training.features.store.apply_definitions`)."""

from feature_repo.entities import category, customer, product
from feature_repo.permissions import readers, writers
from feature_repo.services import SERVICES
from feature_repo.sources import category_week_source, customer_source, product_source
from feature_repo.views import category_weekly_sales, customer_behaviour, customer_profile, product_popularity

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
    *SERVICES,
    readers,
    writers,
]
