"""One feature service per model family (its catalog entry's ``feature_service`` over its ``feature_views``)."""

from feast import FeatureService

from feature_repo import views
from zmlops import catalog

SERVICES = [
    FeatureService(name=e.feature_service, features=[getattr(views, v) for v in e.feature_views],
                   description=e.feature_description)
    for e in catalog.ENTRIES.values()
]
globals().update({s.name: s for s in SERVICES})  # `feast apply` finds the objects a module holds by name
