"""The audit trail: append-only and tamper-evident, in the state database (SQLite locally, PostgreSQL on a cluster).

Every entry names an actor, an action (``data.validated``, ``model.gated``, ``model.approved``,
``rollout.promoted``, ``workload.started``...), a subject (``model:demand-forecast:v3``,
``data:v2``, ``workload:demand-forecast-predictor``) and its details, and carries
``hash = sha256(prev_hash + canonical JSON of the entry)``, where ``prev_hash`` is the hash of the
entry before it (64 zeros for the first). ``verify`` recomputes the chain: a changed entry no longer
matches its hash, an inserted or deleted one breaks the link or the numbering. Deleting the newest
entries leaves a shorter valid chain; comparing with a head exported earlier (``zm audit export``
prints it; ``zm audit verify --head``) detects that too.

Writers race safely: an entry takes sequence number n+1 and the hash of entry n; a writer that loses
the race for n+1 (the primary key) reads the new head and tries again.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from zmlops.statedb import AUDIT, engine

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["Entry", "Problem", "record", "record_start", "entries", "entry", "verify", "head", "actor", "model_subject",
           "GENESIS"]

GENESIS = "0" * 64
_ATTEMPTS = 50


@dataclass(frozen=True)
class Entry:
    seq: int
    created_at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.what}"


def model_subject(family: str, version: str) -> str:
    """The subject of a model version's entries, ``model:<family>:v<version>``; ``*`` matches any (for queries)."""
    return f"model:{family}:*" if version == "*" else f"model:{family}:v{version}"


def actor() -> str:
    """Who acts: the Airflow run (``AIRFLOW_CTX_DAG_RUN_ID``), else the ``ZM_ACTOR`` variable, else user@host."""
    return (os.environ.get("ZM_ACTOR") or os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
            or f"{getpass.getuser()}@{socket.gethostname()}")


def record_start(settings: Settings, workload: str, **extra: Any) -> Entry | None:
    """``workload.started`` on ``workload:<name>``: the settings this process runs with (secrets masked),
    the code's version, host, pid and ``extra`` (its arguments). A workload starts even when the state
    database does not answer: then it logs why and returns None."""
    import logging
    from importlib.metadata import PackageNotFoundError, version

    from zmlops.version import code_version

    try:
        package = version("zero-margin-mlops")
    except PackageNotFoundError:
        package = "not installed"
    details = {"settings": settings.snapshot(), "code_version": code_version(), "package_version": package,
               "host": socket.gethostname(), "pid": os.getpid(), **extra}
    try:
        return record(settings, "workload.started", f"workload:{workload}", details)
    except Exception as exc:  # noqa: BLE001 - any database failure: serve anyway, say so
        logging.getLogger("zmlops.audit").warning("audit: %s started without its entry (%s)", workload,
                                                  str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


def _digest(prev_hash: str, seq: int, created_at: str, who: str, action: str, subject: str,
            details: dict[str, Any]) -> str:
    body = json.dumps([seq, created_at, who, action, subject, details], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def record(settings: Settings, action: str, subject: str, details: dict[str, Any] | None = None,
           who: str | None = None) -> Entry:
    """Append one entry (details made JSON-safe); returns it as stored."""
    clean = json.loads(json.dumps(details or {}, default=str))
    who = who or actor()
    eng = engine(settings)
    for _ in range(_ATTEMPTS):
        now = dt.datetime.now(dt.UTC)
        created = _iso(now)
        with eng.connect() as conn:
            last = conn.execute(select(AUDIT.c.seq, AUDIT.c.hash).order_by(AUDIT.c.seq.desc()).limit(1)).first()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        digest = _digest(prev, seq, created, who, action, subject, clean)
        try:
            with eng.begin() as conn:
                conn.execute(insert(AUDIT).values(seq=seq, created_at=now, actor=who, action=action, subject=subject,
                                                  details=clean, prev_hash=prev, hash=digest))
        except IntegrityError:  # another writer took seq (or linked to prev) first
            continue
        return Entry(seq, created, who, action, subject, clean, prev, digest)
    raise RuntimeError(f"audit: could not append {action} {subject} after {_ATTEMPTS} attempts")


def _rows(settings: Settings, action: str | None = None, subject: str | None = None,
          seq: int | None = None) -> Iterator[Entry]:
    query = select(AUDIT).order_by(AUDIT.c.seq)
    if seq is not None:
        query = query.where(AUDIT.c.seq == seq)
    if action:
        query = query.where(AUDIT.c.action.like(action.replace("*", "%")))
    if subject:
        query = query.where(AUDIT.c.subject.like(subject.replace("*", "%")))
    with engine(settings).connect() as conn:
        for r in conn.execute(query).mappings():
            yield Entry(int(r["seq"]), _iso(r["created_at"]), r["actor"], r["action"], r["subject"],
                        dict(r["details"] or {}), r["prev_hash"], r["hash"])


def entries(settings: Settings, action: str | None = None, subject: str | None = None) -> list[Entry]:
    """Entries oldest first; ``action`` and ``subject`` match exactly or with ``*`` wildcards."""
    return list(_rows(settings, action, subject))


def entry(settings: Settings, seq: int) -> Entry | None:
    return next(_rows(settings, seq=seq), None)


def head(settings: Settings) -> tuple[int, str]:
    """The newest entry's number and hash (0 and the genesis hash when the trail is empty)."""
    with engine(settings).connect() as conn:
        last = conn.execute(select(AUDIT.c.seq, AUDIT.c.hash).order_by(AUDIT.c.seq.desc()).limit(1)).first()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)


def verify(settings: Settings, expected_head: str | None = None) -> list[Problem]:
    """Recompute the chain; an empty list means every entry is intact, in place and linked."""
    problems: list[Problem] = []
    prev, want = GENESIS, 1
    seen_head = False
    for e in _rows(settings):
        if e.seq != want:
            problems.append(Problem(e.seq, f"numbering jumps from {want - 1} to {e.seq} (entries deleted)"))
        if e.prev_hash != prev:
            problems.append(Problem(e.seq, "does not link to the entry before it (an entry inserted or deleted)"))
        if _digest(e.prev_hash, e.seq, e.created_at, e.actor, e.action, e.subject, e.details) != e.hash:
            problems.append(Problem(e.seq, "content does not match its hash (the entry was changed)"))
        seen_head = seen_head or e.hash == expected_head
        prev, want = e.hash, e.seq + 1
    if expected_head and not seen_head:
        problems.append(Problem(want - 1, f"the exported head {expected_head[:12]}... is no longer in the trail "
                                          "(newest entries deleted or rewritten)"))
    return problems
