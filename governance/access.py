"""The right of access: one machine-readable bundle of everything the stack holds about one customer.

:func:`export` gathers, for one customer id: their transactions in every retained data version (the raw file of
each version, fetched from the data registry with its recorded checksum), their rows of the offline feature
sources and of the online store, the segment the production segmentation model gives them (only with their
profiling consent), what the predictors answered about them (the request log, found through their pseudonym),
which registered model versions were trained on a data version holding their transactions, and their consent
history. The request is an audit entry (``privacy.exported``, subject :func:`governance.consent.audit_subject`).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from zmlops.settings import Settings

__all__ = ["export", "raw_rows", "customer_ids", "online_profile", "EXPORTS", "STAMP", "export_keys", "prune_exports"]

EXPORTS = "privacy/exports"  # access bundles the privacy DAG writes: EXPORTS/<subject hash>/<STAMP>.json
STAMP = "%Y%m%dT%H%M%S"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return out


def _retained(settings: Settings) -> Iterator[tuple[str, Path]]:
    """Each retained data version's raw transactions file (a retired one's bytes are gone), fetched from the
    registry and checked against its recorded sha256: (version, path), the path valid until the next step."""
    from training.data import ingest

    registry = ingest.registry_for(settings)
    with tempfile.TemporaryDirectory(prefix="zm-access-") as tmp:
        for version in registry.versions():
            if version.status != "retired":
                folder = registry.fetch(version, Path(tmp) / version.name, only=[version.transactions_file])
                yield version.name, folder / version.transactions_file


def raw_rows(settings: Settings, customer_id: int) -> dict[str, pd.DataFrame]:
    """The customer's rows of the raw transactions of every retained data version."""
    from training.data.cleaning import read_transactions

    found = {}
    for name, path in _retained(settings):
        raw = read_transactions(path)
        if "Customer ID" in raw:
            found[name] = raw[raw["Customer ID"] == customer_id]
    return found


def customer_ids(settings: Settings) -> set[int]:
    """Every customer id in the raw transactions of the retained data versions (only that column is read)."""
    import pyarrow.parquet as pq

    from training.data.cleaning import read_transactions

    found: set[int] = set()
    for _, path in _retained(settings):
        if path.suffix == ".parquet" and "Customer ID" in pq.read_schema(path).names:
            ids = pq.read_table(path, columns=["Customer ID"]).column(0).drop_null().to_pylist()
        else:  # a spreadsheet or another spelling: the reader the pipeline uses
            raw = read_transactions(path)
            ids = raw["Customer ID"].dropna().tolist() if "Customer ID" in raw else []
        found |= {int(c) for c in ids}
    return found


def online_profile(settings: Settings, customer_id: int) -> dict[str, Any] | None:
    """The customer's row of the online store's ``customer_profile`` view (values None where it holds nothing);
    None before any features are published."""
    from feature_repo.names import PROFILE_FEATURES
    from training.features import store

    if store.published_version(settings) is None:
        return None
    got = store.open_store(settings).get_online_features(
        features=[f"customer_profile:{name}" for name in PROFILE_FEATURES],
        entity_rows=[{"customer_id": customer_id}]).to_dict()
    return {k: v[0] for k, v in got.items()}


def _features(settings: Settings, customer_id: int) -> dict[str, Any]:
    from training.features import store

    out: dict[str, Any] = {"offline": {}, "online": {}}
    online = online_profile(settings, customer_id)
    if online is None:
        return out
    offline = store.source_table(settings, "customer_features")
    out["offline"]["customer_features"] = _records(offline[offline["customer_id"] == customer_id])
    out["online"]["customer_profile"] = online
    return out


def _segment(settings: Settings, customer_id: int, features: dict[str, Any], profiled: bool) -> dict[str, Any]:
    import pandas as pd

    from training import tracking

    version = tracking.alias_version(settings, "customer-segmentation", "production")
    rows = features["offline"].get("customer_features") or []
    if version is None or not rows:
        return {"segment": None, "why": "no production segmentation model or no features for this customer"}
    if not profiled:
        return {"segment": None, "why": "not profiled: the customer withdrew profiling consent"}
    newest = max(rows, key=lambda r: str(r["event_timestamp"]))
    from feature_repo.names import PROFILE_FEATURES

    estimator = tracking.load_estimator(settings, "customer-segmentation", version)
    name = str(estimator.predict_names(pd.DataFrame([newest])[PROFILE_FEATURES])[0])
    return {"segment": name, "model_version": version, "as_of": newest["event_timestamp"]}


def _served(settings: Settings, pseudonym: str, prefix: str = "requests") -> dict[str, list[dict[str, Any]]]:
    """Their rows of the request log (or, ``prefix="events"``, of the outcome events), by model."""
    from monitoring.requests import read_log
    from zmlops.catalog import FAMILIES
    from zmlops.stores import object_store

    store = object_store(settings)
    out: dict[str, list[dict[str, Any]]] = {}
    for family in FAMILIES:
        log = read_log(store, family, prefix=prefix)
        if log.empty or "customer" not in log:
            continue
        mine = log[log["customer"] == pseudonym]
        if not mine.empty:
            out[family] = _records(mine)
    return out


def _model_versions(settings: Settings, data_versions: list[str]) -> list[dict[str, Any]]:
    from training import tracking
    from zmlops import catalog

    client = tracking.client(settings)
    out = []
    for family in catalog.FAMILIES:
        for mv in client.search_model_versions(f"name = '{family}'"):
            if mv.tags.get("data_version") in data_versions:
                out.append({"model": family, "version": str(mv.version), "data_version": mv.tags["data_version"],
                            "individually": catalog.entry(family).personal})
    return sorted(out, key=lambda r: (r["model"], int(r["version"])))


def export(settings: Settings, customer_id: int, out: Path) -> dict[str, Any]:
    """Write the bundle of ``customer_id`` to ``out`` (JSON); returns what it holds, counted."""
    from governance import audit, consent

    customer_id = int(customer_id)
    pseudonym = consent.pseudonym(settings, customer_id)
    transactions = {v: _records(rows) for v, rows in raw_rows(settings, customer_id).items()}
    holding = [v for v, rows in transactions.items() if rows]
    features = _features(settings, customer_id)
    profiled = consent.allowed(settings, "profiling", [customer_id])[0]
    bundle = {
        "customer_id": customer_id,
        "pseudonym": pseudonym,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "transactions": transactions,
        "features": features,
        "segment": _segment(settings, customer_id, features, profiled),
        "answers_served": _served(settings, pseudonym),
        "events_recorded": _served(settings, pseudonym, "events"),
        "model_versions_trained_on_their_data": _model_versions(settings, holding),
        "consent": [c.__dict__ for c in consent.history(settings, customer_id)],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bundle, indent=1, default=str))
    summary = {"transactions": {v: len(rows) for v, rows in transactions.items()},
               "answers_served": {f: len(rows) for f, rows in bundle["answers_served"].items()},
               "events_recorded": {f: len(rows) for f, rows in bundle["events_recorded"].items()},
               "model_versions": len(bundle["model_versions_trained_on_their_data"]),
               "consent_records": len(bundle["consent"])}
    audit.record(settings, "privacy.exported", consent.audit_subject(settings, customer_id), summary)
    return summary


def export_keys(settings: Settings, subject: str | None = None) -> list[str]:
    """The access bundles in the object store (of one customer, by audit subject hash)."""
    from zmlops.stores import object_store

    prefix = EXPORTS if subject is None else f"{EXPORTS}/{subject}"
    return object_store(settings).keys(prefix)


def prune_exports(settings: Settings, now: dt.datetime | None = None) -> list[str]:
    """Delete the access bundles older than ``privacy.export_retention_days``; returns their keys."""
    from zmlops.stores import object_store

    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=settings.privacy.export_retention_days)
    store = object_store(settings)
    gone = [key for key in export_keys(settings)
            if Path(key).stem < cutoff.strftime(STAMP)]
    for key in gone:
        store.delete(key)
    return gone
