"""The pipelines' side of Feast: publish sources, apply, materialize, build training sets.

This is the one module of the training code that talks to Feast. The store's runtime
``repo_path`` is ``settings.feast_home``: the declared sources' relative paths resolve
there, and the feature-building step writes one data version's tables into it.

The tables and the ``published.json`` marker (which data version they hold) live in the
object store under ``feast/sources/``; ``feast_home`` is a cache of them. Every reader
compares its cached marker with the store's and fetches the tables again when another
workload has published a newer version, so a pod with an empty disk reads what the
features step published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import string
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from training.data import ingest
from training.features.build import TABLES, write_tables
from zmlops.settings import Settings
from zmlops.stores import object_store

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "SOURCES",
    "open_store",
    "sync_sources",
    "source_table",
    "prepare_features",
    "publish_sources",
    "published_version",
    "apply_definitions",
    "materialize",
    "latest_window_end",
    "training_frame",
    "service_features",
]

SOURCES = tuple(TABLES)
MARKER = "published.json"
PREFIX = "feast/sources"


def _yaml_file(settings: Settings) -> Path:
    name = "feature_store.yaml" if settings.profile == "local" else f"feature_store.{settings.profile}.yaml"
    return settings.feature_repo / name


# The feature server's token check (feature_store.k8s.yaml's auth section): Feast fills these from the feature
# server's environment; our own use of the SDK never builds that section's config, so elsewhere they may be empty.
FEATURE_SERVER_AUTH = ("ZM_FEAST_OIDC_DISCOVERY_URL", "ZM_FEAST_OIDC_CLIENT_ID", "ZM_FEAST_OIDC_AUDIENCE",
                       "ZM_FEAST_OIDC_ISSUER")


def _substitutions(settings: Settings) -> dict[str, str]:
    redis = settings.feast_redis if settings.profile == "k8s" else ""
    return {
        "ZM_FEAST_REGISTRY": settings.feast_registry_url,
        "ZM_FEAST_ONLINE_STORE": str(settings.feast_home / "online.db"),
        "ZM_FEAST_REDIS": redis,
        **{name: os.environ.get(name, "") for name in FEATURE_SERVER_AUTH},
    }


def open_store(settings: Settings, offline: bool = False) -> FeatureStore:
    """A FeatureStore for the profile's feature_store.yaml, rooted at ``settings.feast_home``; ``offline``
    (training sets, materialization) fetches the published source tables into it first."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    text = _yaml_file(settings).read_text()
    raw = yaml.safe_load(string.Template(text).substitute(_substitutions(settings)))
    config = RepoConfig(**raw)
    home = settings.feast_home
    home.mkdir(parents=True, exist_ok=True)
    config.repo_path = home
    if offline:
        sync_sources(settings)
    return FeatureStore(repo_path=str(home), config=config)


def published_version(settings: Settings) -> dict[str, Any] | None:
    """The marker of the published tables as the object store has it now (None before the first)."""
    raw = object_store(settings).get(f"{PREFIX}/{MARKER}")
    return json.loads(raw) if raw is not None else None


def sync_sources(settings: Settings) -> dict[str, Any] | None:
    """Make the cached source tables those the store's marker names; returns the marker."""
    marker = published_version(settings)
    if marker is None:
        return None
    folder = settings.feast_home / "sources"
    local = folder / MARKER
    if local.exists() and json.loads(local.read_text()) == marker \
            and all((folder / f"{name}.parquet").exists() for name in marker["tables"]):
        return marker
    store = object_store(settings)
    for name in marker["tables"]:
        if not store.download_to(f"{PREFIX}/{name}.parquet", folder / f"{name}.parquet"):
            raise RuntimeError(f"feature table {name} of {marker['data_version']} is missing from the object store")
    folder.mkdir(parents=True, exist_ok=True)
    local.write_text(json.dumps(marker, indent=2))
    return marker


def source_table(settings: Settings, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One published source table (e.g. ``category_week_features``)."""
    sync_sources(settings)
    return pd.read_parquet(settings.feast_home / "sources" / f"{name}.parquet", columns=columns)


def publish_sources(settings: Settings, clean_file: Path, data_version: str, force: bool = False) -> dict[str, Any]:
    """Build the three feature tables of one data version into the store's source folder, within the data steps'
    memory budget (:func:`training.features.build.write_tables`), and publish them to the object store.

    Idempotent: a second call for the version already published does nothing.
    Returns the marker (data version, rows per table, newest cutoff per table).
    """
    current = published_version(settings)
    if current and current["data_version"] == data_version and not force:
        return current
    out = settings.feast_home / "sources"
    out.mkdir(parents=True, exist_ok=True)
    store = object_store(settings)
    tables = write_tables(clean_file, out, settings.data.memory_budget_mb, settings.data.threads)
    for name in tables:
        store.upload_from(out / f"{name}.parquet", f"{PREFIX}/{name}.parquet")
    marker: dict[str, Any] = {"data_version": data_version, "tables": tables}
    (out / MARKER).write_text(json.dumps(marker, indent=2))
    store.upload_from(out / MARKER, f"{PREFIX}/{MARKER}")  # last: readers switch only once every table is there
    return marker


def prepare_features(settings: Settings, data_version: str = "current") -> dict[str, Any]:
    """The features step: clean table of the version -> feature tables -> Feast apply -> materialize the newest
    window. Here rather than in :mod:`training.run`, so the step's process does not import the trainings."""
    version = ingest.registry_for(settings).resolve(data_version)
    result = ingest.validate_version(settings, version.name)
    marker = publish_sources(settings, result.clean, version.name)
    apply_definitions(settings)
    start, end = materialize(settings, latest_window_end(settings))
    return {**marker, "materialized": [start.isoformat(), end.isoformat()]}


def apply_definitions(settings: Settings) -> list[str]:
    """Register the declarations of feature_repo/ (idempotent); returns their names."""
    from feature_repo.definitions import DEFINITIONS

    store = open_store(settings)
    store.apply(DEFINITIONS)
    return sorted(str(getattr(obj, "name", "")) for obj in DEFINITIONS)


@contextlib.contextmanager
def _offline(settings: Settings) -> Iterator[FeatureStore]:
    """The store for offline work, in its repo path: Feast's DuckDB offline store opens a source's relative path
    from the working directory (its file store resolved it against the repo path)."""
    store = open_store(settings, offline=True)
    with contextlib.chdir(settings.feast_home):
        yield store


def materialize(settings: Settings, end: dt.datetime, days: int = 14) -> tuple[dt.datetime, dt.datetime]:
    """Load the online store from the window ``[end - days, end]`` (explicit, so repeats are idempotent)."""
    start = end - dt.timedelta(days=days)
    with _offline(settings) as store, contextlib.redirect_stdout(io.StringIO()):  # Feast prints a line per view
        store.materialize(start_date=start, end_date=end)
    return start, end


def latest_window_end(settings: Settings) -> dt.datetime:
    """One second after the newest feature row of the published version: the default materialize end."""
    marker = published_version(settings)
    if marker is None:
        raise RuntimeError("no feature sources published yet")
    newest = max(pd.Timestamp(t["newest"]) for t in marker["tables"].values())
    return newest.to_pydatetime() + dt.timedelta(seconds=1)


def service_features(settings: Settings, service: str) -> list[str]:
    """The ``view:feature`` references of a feature service, in declaration order."""
    store = open_store(settings)
    fs = store.get_feature_service(service)
    return [f"{proj.name_to_use()}:{feat.name}" for proj in fs.feature_view_projections for feat in proj.features]


def training_frame(settings: Settings, service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of ``service`` for every row of ``entity_df`` (which needs event_timestamp).

    The local offline store can drop entity rows that have no feature row inside the TTL, so
    the result is joined back onto the entity table: every entity row comes back, in order,
    with NaN where no feature value was valid at its timestamp.
    """
    entities = entity_df.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    with _offline(settings) as store:
        joined = store.get_historical_features(entity_df=entities, features=store.get_feature_service(service)).to_df()
    feature_cols = [c for c in joined.columns if c not in entities.columns]
    out = entities.merge(joined[["_row", *feature_cols]], on="_row", how="left", validate="one_to_one")
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)
