"""The state database: the stack's small tables, in SQLite locally and PostgreSQL in the k8s profile.

``ZM_STATE_DB_URL`` is any SQLAlchemy URL (``postgresql://user:password@host/db``, driven by psycopg 3, from a
Secret in a cluster); the default is ``sqlite:///$ZM_HOME/state.db``. Tables are created on first
use. Every write is one short transaction, so many processes (task pods, the alert receiver,
servers) can share one database.

Tables:

- ``zm_incidents``: a drift or quality incident re-enters training once, whoever sees it first
  (the monitoring DAG or the Alertmanager receiver): the key is the primary key;
- ``zm_audit``: the audit trail (:mod:`governance.audit`): append-only, each entry chained to the one
  before by its hash; the rollout controller's decisions are entries of it;
- ``zm_deployments``: one row per model version the deploy step put into service;
- ``zm_consent``: the consent register (:mod:`governance.consent`): append-only, one row per change of a
  customer's consent, keyed by the customer's pseudonym (never the id);
- ``zm_erasures``: erased customers (:mod:`governance.erasure`), by their audit subject hash: the predictors answer
  them as strangers until every served model is retrained without them;
- ``zm_experiments``: A/B tests (:mod:`delivery.experiments`): the design fixed at the start, running until decided;
  the predictors route the customers of a running one to their variant.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from zmlops.settings import Settings

__all__ = ["METADATA", "INCIDENTS", "AUDIT", "DEPLOYMENTS", "CONSENT", "ERASURES", "EXPERIMENTS", "engine", "claim",
           "claims", "record_deployment", "deployments"]

METADATA = MetaData()
INCIDENTS = Table(
    "zm_incidents", METADATA,
    Column("key", String(400), primary_key=True),
    Column("source", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
AUDIT = Table(
    "zm_audit", METADATA,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 1, 2, 3... with no gap: a writer that
    Column("created_at", DateTime(timezone=True), nullable=False),  # loses the race for seq n retries n+1
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False, index=True),
    Column("subject", String(300), nullable=False, index=True),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
)

DEPLOYMENTS = Table(
    "zm_deployments", METADATA,
    Column("model", String(100), primary_key=True),
    Column("version", String(50), primary_key=True),
    Column("serving", String(50), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

CONSENT = Table(
    "zm_consent", METADATA,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("customer", String(64), nullable=False, index=True),  # the pseudonym (governance.pseudonyms)
    Column("profiling", Boolean, nullable=False),  # segmentation may use their behaviour
    Column("personalisation", Boolean, nullable=False),  # recommendations may be personalised
    Column("source", String(200), nullable=False),  # where the choice was made (web form, call centre, import)
    Column("actor", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ERASURES = Table(
    "zm_erasures", METADATA,
    Column("subject", String(64), primary_key=True),  # governance.pseudonyms.subject: never the id or pseudonym
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("retrain_by", DateTime(timezone=True), nullable=False),  # models trained on their data: retrained by
    Column("details", JSON, nullable=False),
)
EXPERIMENTS = Table(
    "zm_experiments", METADATA,
    Column("name", String(100), primary_key=True),
    Column("family", String(100), nullable=False, index=True),
    Column("design", JSON, nullable=False),  # delivery.experiments.Design, as a dict
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("decision", String(20), nullable=True),  # None while it runs; ship or stop
    Column("decided_at", DateTime(timezone=True), nullable=True),
)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(eng, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:  # readers never wait for the one writer
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    else:  # psycopg 3 is in both environments (psycopg2, SQLAlchemy's default for postgresql://, is not)
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url
        eng = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
    METADATA.create_all(eng)
    return eng


def engine(settings: Settings) -> Engine:
    """The engine of the state database (created once per process, tables included)."""
    return _engine(settings.state_db)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def claim(settings: Settings, key: str, source: str, reason: str) -> bool:
    """Record incident ``key``; True only for the first caller, in any process."""
    try:
        with engine(settings).begin() as conn:
            conn.execute(insert(INCIDENTS).values(key=key, source=source, reason=reason, created_at=_now()))
    except IntegrityError:
        return False
    return True


def claims(settings: Settings) -> list[dict[str, Any]]:
    """Every incident claimed so far, oldest first."""
    with engine(settings).connect() as conn:
        rows = conn.execute(INCIDENTS.select().order_by(INCIDENTS.c.created_at)).mappings().all()
    return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]


def record_deployment(settings: Settings, model: str, version: str, serving: str | None) -> bool:
    """Record that ``version`` of ``model`` was deployed; False when it was recorded before."""
    try:
        with engine(settings).begin() as conn:
            conn.execute(insert(DEPLOYMENTS).values(model=model, version=str(version), serving=serving,
                                                    created_at=_now()))
    except IntegrityError:
        return False
    return True


def deployments(settings: Settings) -> list[dict[str, Any]]:
    """Every deployment recorded, oldest first."""
    with engine(settings).connect() as conn:
        rows = conn.execute(select(DEPLOYMENTS).order_by(DEPLOYMENTS.c.created_at)).mappings().all()
    return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]
