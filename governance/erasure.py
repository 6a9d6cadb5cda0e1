"""The right to erasure: ``zm privacy erase CUSTOMER_ID`` removes a customer from every store the stack writes.

In order, stopping before anything is deleted if the new data version fails the gate:

1. a new data version: the current version's raw file without the customer's rows, gated like any delivery (it
   becomes ``current``);
2. the features from it: the offline sources are published again, and the online rows of every view keyed by
   customer are deleted and materialized again (Feast's provider, so SQLite and Redis alike);
3. every earlier version holding the customer is retired: a ``retired/vN`` tag (with the reason) in the data
   registry and its DVC objects deleted from the cache and the remote (objects a kept version shares stay), its
   derived tables in the object store, the batch answers computed on it (:func:`training.batch.forget_version`;
   the next score task writes new ones, without the customer) and its Great Expectations results and Data Docs
   pages deleted;
   :meth:`DataRegistry.fetch` refuses a retired version;
4. their request-log and event-log rows are removed (the batches rewritten:
   :func:`monitoring.requests.rewrite_customers`), their consent records and access bundles deleted;
5. the erasure register (``zm_erasures``, by :func:`governance.pseudonyms.subject`) makes the predictors answer
   them as strangers within a poll, in every served version, until models trained without them serve;
6. the audit trail records the erasure by the same keyed hash (``privacy.erased``), never the id.

:func:`expire_versions` retires old data versions the same way (retention, from the monitoring DAG).

Models trained on their data still hold them (the recommender's user factors and ranking rows) until the next
version trained on the new data version replaces them and the old versions are deleted: ``retrain_by`` (now plus
``privacy.erasure_retrain_days``) says by when. :func:`governance.scan.scan` shows what is left.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governance.consent import erased_subjects as consent_erased_subjects

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["erase", "erased_subjects", "Overdue", "retired_production", "forget_models", "expire_versions"]

CUSTOMER_VIEWS = ("customer_profile", "customer_behaviour")
erased_subjects = consent_erased_subjects  # the predictors' suppression list (kept where they import it from)


def _new_version(settings: Settings, customer_id: int, tmp: Path) -> tuple[str, int]:
    """The current version's raw transactions without the customer, snapshotted and gated; (name, rows removed)."""
    from training.data import ingest
    from training.data.cleaning import read_transactions

    registry = ingest.registry_for(settings)
    current = registry.current()
    if current is None:
        raise RuntimeError("no data version has passed the gate: nothing to erase from")
    folder = registry.fetch(current, tmp / "current", only=[current.transactions_file])
    raw = read_transactions(folder / current.transactions_file)
    keep = raw["Customer ID"] != customer_id
    out = tmp / "erased" / f"{Path(current.transactions_file).stem}.parquet"
    out.parent.mkdir(parents=True)
    raw[keep.fillna(True).to_numpy(bool)].to_parquet(out, index=False)
    as_of = dt.date.fromisoformat(str(current.meta["as_of"])[:10]) if current.meta.get("as_of") else None
    version = ingest.snapshot_file(settings, out, as_of=as_of)
    ingest.validate_version(settings, version.name)  # a refused copy raises ValidationFailed: nothing deleted
    return version.name, int((~keep.fillna(True)).sum())


def _online_again(settings: Settings) -> None:
    """Delete the online rows of the views keyed by customer, then materialize them from the new sources."""
    from training.features import store

    feast = store.open_store(settings, offline=True)
    views = [v for v in feast.list_feature_views() if v.name in CUSTOMER_VIEWS and v.online]
    feast.provider.update_infra(project=feast.project, tables_to_delete=views, tables_to_keep=[],
                                entities_to_delete=[], entities_to_keep=[], partial=True)
    feast.provider.update_infra(project=feast.project, tables_to_delete=[], tables_to_keep=views,
                                entities_to_delete=[], entities_to_keep=[], partial=True)
    store.materialize(settings, store.latest_window_end(settings))


def erase(settings: Settings, customer_id: int, reason: str, actor: str | None = None) -> dict[str, Any]:
    """Remove ``customer_id`` from every store (module docstring); returns what was done, counted."""
    from sqlalchemy import delete, insert

    from governance import audit, consent
    from governance.access import raw_rows
    from training.features.store import prepare_features
    from zmlops.statedb import CONSENT, ERASURES, engine
    from zmlops.stores import object_store

    if not reason.strip():
        raise ValueError("reason: say why (the request's reference)")
    customer_id = int(customer_id)
    subject, bare = consent.audit_subject(settings, customer_id), consent.subject_hash(settings, customer_id)
    pseudonym = consent.pseudonym(settings, customer_id)
    with tempfile.TemporaryDirectory(prefix="zm-erase-") as tmp_name:
        tmp = Path(tmp_name)
        holding = [v for v, rows in raw_rows(settings, customer_id).items() if len(rows)]
        new, rows = _new_version(settings, customer_id, tmp) if holding else (None, 0)  # in no data version: none
    if new is not None:
        prepare_features(settings, new)
        _online_again(settings)
    deleted = {name: _retire(settings, name, f"erasure {subject}: {reason}") for name in holding}
    store = object_store(settings)
    from monitoring.requests import rewrite_customers

    log_rows = rewrite_customers(object_store(settings), {pseudonym: None})
    from governance.access import export_keys

    bundles = export_keys(settings, bare)  # access bundles the privacy DAG wrote for them
    for key in bundles:
        store.delete(key)
    now = dt.datetime.now(dt.UTC)
    retrain_by = now + dt.timedelta(days=settings.privacy.erasure_retrain_days)
    details = {"new_version": new, "retired": holding, "raw_rows_removed": rows, "request_log_rows_removed": log_rows,
               "access_bundles_deleted": len(bundles),
               "dvc_objects_deleted": sum(len(v) for v in deleted.values()), "reason": reason,
               "retrain_by": retrain_by.isoformat(timespec="seconds")}
    with engine(settings).begin() as conn:
        consent_rows = conn.execute(delete(CONSENT).where(CONSENT.c.customer == pseudonym)).rowcount
        conn.execute(delete(ERASURES).where(ERASURES.c.subject == bare))
        conn.execute(insert(ERASURES).values(subject=bare, requested_at=now,
                                             retrain_by=retrain_by, details=details))
    details["consent_records_deleted"] = consent_rows
    audit.record(settings, "privacy.erased", subject, details, who=actor)
    return details


def _retire(settings: Settings, name: str, why: str) -> list[str]:
    """Retire data version ``name`` (the registry's tag, its DVC objects deleted from cache and remote), delete its
    derived tables and its Great Expectations results and Data Docs pages; returns the DVC objects deleted."""
    from training.batch import forget_version
    from training.data import ingest
    from zmlops.stores import object_store

    deleted = ingest.registry_for(settings).retire(name, why)
    object_store(settings).delete(f"work/{name}")
    forget_version(settings, name)
    ingest.forget_validations(settings, name)
    return deleted


def expire_versions(settings: Settings, now: dt.datetime | None = None) -> list[str]:
    """Retention of data versions: retire every version created more than ``privacy.data_retention_days`` ago but
    the current one and those a model version holding an alias (production, previous, staging, candidate) was
    trained on; the retention task's :func:`forget_models` then deletes the model versions trained on them.
    Returns the versions retired."""
    from governance import audit
    from training import tracking
    from training.data import ingest
    from zmlops.catalog import FAMILIES

    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=settings.privacy.data_retention_days)
    registry = ingest.registry_for(settings)
    current = registry.current()
    client = tracking.client(settings)
    in_use = {mv.tags.get("data_version") for family in FAMILIES
              for mv in client.search_model_versions(f"name = '{family}'")
              if client.get_model_version(family, mv.version).aliases}
    expired = [v.name for v in registry.versions() if v.status != "retired"
               and v.name != (current.name if current else None) and v.name not in in_use
               and registry.created_at(v.name) < cutoff]
    for name in expired:
        objects = _retire(settings, name, f"retention: created before {cutoff:%Y-%m-%d} "
                                          f"(privacy.data_retention_days {settings.privacy.data_retention_days})")
        audit.record(settings, "data.retired", f"data:{name}",
                     {"why": "retention", "dvc_objects_deleted": len(objects)})
    return expired


def _retired(settings: Settings) -> set[str]:
    from training.data import ingest

    return {v.name for v in ingest.registry_for(settings).versions() if v.status == "retired"}


@dataclass(frozen=True)
class Overdue:
    """A family whose production version was trained on a data version an erasure retired."""

    reason: str  # the monitoring check's reason to retrain
    retrain_by: dt.datetime | None  # the earliest deadline of the erasures that retired it (None: retired otherwise)


def retired_production(settings: Settings, family: str) -> Overdue | None:
    """Why ``family`` must retrain because of an erasure (its production version was trained on a retired data
    version) and by when, or None. The monitoring DAG's check adds the reason to the family's reasons, so it
    re-enters training, and publishes the deadline (``zm_erasure_retrain_deadline_timestamp_seconds``), which the
    alert rules watch."""
    from sqlalchemy import select

    from training import tracking
    from training.run import trained_on_retired
    from zmlops.statedb import ERASURES, engine

    version = tracking.alias_version(settings, family, "production")
    data = None if version is None else trained_on_retired(settings, family, version)
    if data is None:
        return None
    with engine(settings).connect() as conn:
        deadlines = [row.retrain_by for row in conn.execute(select(ERASURES.c.retrain_by, ERASURES.c.details))
                     if data in (row.details or {}).get("retired", [])]
    due = min(deadlines, default=None)
    if due is not None and due.tzinfo is None:  # SQLite gives naive UTC back
        due = due.replace(tzinfo=dt.UTC)
    return Overdue(f"erasure: production v{version} was trained on data {data}, retired", due)


def _logged_model(version: Any) -> str | None:
    """The logged model behind a registered version: its ``model_id`` (a local store fills it in; MLflow's REST
    client leaves it None) or the ``models:/m-...`` source it was registered from."""
    source = str(version.source or "")
    return getattr(version, "model_id", None) or (source.removeprefix("models:/").split("/")[0]
                                                   if source.startswith("models:/m-") else None)


def forget_models(settings: Settings) -> list[str]:
    """Delete every registered version trained on a retired data version but production (its aliases first: no
    rollback to it): its model and run artifacts (the artifact store's own delete, local or S3), the version and the
    run. Returns them."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from governance import audit
    from training import tracking
    from zmlops.catalog import FAMILIES

    retired = _retired(settings)
    if not retired:
        return []
    client = tracking.client(settings)
    gone = []
    for family in FAMILIES:
        for mv in client.search_model_versions(f"name = '{family}'"):
            full = client.get_model_version(family, mv.version)
            if full.tags.get("data_version") not in retired or "production" in full.aliases:
                continue  # production is replaced first (the monitoring DAG's check sends the family to training)
            for alias in full.aliases:  # previous (a rollback target), staging, candidate: never back into service
                client.delete_registered_model_alias(family, alias)
            run = client.get_run(full.run_id)
            locations = [run.info.artifact_uri]
            model_id = _logged_model(full)
            if model_id:
                locations.append(client.get_logged_model(model_id).artifact_location)
            for uri in locations:
                get_artifact_repository(uri).delete_artifacts()
            client.delete_model_version(family, full.version)
            client.delete_run(full.run_id)
            gone.append(f"{family} v{full.version}")
            audit.record(settings, "privacy.model_forgotten", audit.model_subject(family, full.version),
                         {"why": f"trained on retired data {full.tags.get('data_version')}"})
    return gone

