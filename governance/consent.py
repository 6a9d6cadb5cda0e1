"""The consent register: what each customer allowed, every change kept, keyed by their pseudonym.

Two purposes: ``profiling`` (segmentation reads their behaviour) and ``personalisation`` (recommendations are
computed for them). A customer's consent is their latest record; without one it is the regime's default
(``privacy.consent_required``: opt-in when true, opt-out otherwise). The register lives in the state database
(``zm_consent``: SQLite locally, PostgreSQL in the k8s profile) and holds pseudonyms only (a keyed hash,
:mod:`governance.pseudonyms`); every change is an audit entry. Training leaves customers without a purpose out
of that family's training set (:func:`allowed`); the predictors answer them without personalisation and log
nothing that identifies them (:func:`withdrawn`, re-read every poll).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy import func, insert, select

from governance.pseudonyms import pseudonymise, subject
from zmlops.statedb import CONSENT, ERASURES, engine

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["PURPOSES", "Consent", "record", "history", "withdrawn", "granted", "allowed", "pseudonym",
           "subject_hash", "audit_subject"]

Purpose = Literal["profiling", "personalisation"]
PURPOSES: tuple[Purpose, ...] = ("profiling", "personalisation")


@dataclass(frozen=True)
class Consent:
    customer: str  # pseudonym
    profiling: bool
    personalisation: bool
    source: str
    actor: str
    at: str


def pseudonym(settings: Settings, customer_id: int) -> str:
    return pseudonymise(settings.pseudonym_key, customer_id)


def subject_hash(settings: Settings, customer_id: int) -> str:
    """The keyed hash the audit trail and the erasure register name a customer by
    (:func:`governance.pseudonyms.subject`)."""
    return subject(settings.pseudonym_key, customer_id)


def audit_subject(settings: Settings, customer_id: int) -> str:
    """``customer:<subject hash>``: the audit trail's subject for a customer."""
    return f"customer:{subject_hash(settings, customer_id)}"


def record(settings: Settings, customer_id: int, profiling: bool, personalisation: bool, source: str,
           actor: str | None = None) -> Consent:
    """Append a customer's consent as it now stands (both purposes), and its audit entry."""
    from governance import audit

    if not source.strip():
        raise ValueError("source: say where the choice was made (web form, call centre, import)")
    who = actor or audit.actor()
    now = dt.datetime.now(dt.UTC)
    customer = pseudonym(settings, customer_id)
    with engine(settings).begin() as conn:
        conn.execute(insert(CONSENT).values(customer=customer, profiling=profiling, personalisation=personalisation,
                                            source=source, actor=who, created_at=now))
    audit.record(settings, "consent.changed", audit_subject(settings, customer_id),
                 {"profiling": profiling, "personalisation": personalisation, "source": source}, who=who)
    return Consent(customer, profiling, personalisation, source, who, now.isoformat())


def history(settings: Settings, customer_id: int) -> list[Consent]:
    """Every record of one customer, oldest first."""
    customer = pseudonym(settings, customer_id)
    with engine(settings).connect() as conn:
        rows = conn.execute(select(CONSENT).where(CONSENT.c.customer == customer).order_by(CONSENT.c.seq)).mappings()
        return [Consent(r["customer"], r["profiling"], r["personalisation"], r["source"], r["actor"],
                        r["created_at"].isoformat()) for r in rows]


def _latest(settings: Settings, purpose: Purpose, allowed_: bool) -> frozenset[str]:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}: one of {', '.join(PURPOSES)}")
    newest = (select(CONSENT.c.customer, func.max(CONSENT.c.seq).label("seq"))
              .group_by(CONSENT.c.customer).subquery())
    query = (select(CONSENT.c.customer).join(newest, CONSENT.c.seq == newest.c.seq)
             .where(CONSENT.c[purpose] == allowed_))
    with engine(settings).connect() as conn:
        return frozenset(conn.execute(query).scalars())


def withdrawn(settings: Settings, purpose: Purpose) -> frozenset[str]:
    """Pseudonyms whose latest record refuses ``purpose``."""
    return _latest(settings, purpose, False)


def granted(settings: Settings, purpose: Purpose) -> frozenset[str]:
    """Pseudonyms whose latest record allows ``purpose``."""
    return _latest(settings, purpose, True)


def erased_subjects(settings: Settings) -> frozenset[str]:
    """The subject hashes of every erased customer (the erasure register; the predictors' suppression list)."""
    with engine(settings).connect() as conn:
        return frozenset(conn.execute(select(ERASURES.c.subject)).scalars())


def allowed(settings: Settings, purpose: Purpose, customer_ids: Iterable[int]) -> list[bool]:
    """Per customer id: may ``purpose`` use them? (the regime's default where they have no record; never an erased
    customer, whom a model trained before the erasure may still know)"""
    key = settings.pseudonym_key
    ids = list(customer_ids)
    names = [pseudonymise(key, c) for c in ids]
    if settings.privacy.consent_required:
        yes = granted(settings, purpose)
        answer = [n in yes for n in names]
    else:
        no = withdrawn(settings, purpose)
        answer = [n not in no for n in names]
    erased = erased_subjects(settings)
    return [a and subject(key, c) not in erased for a, c in zip(answer, ids, strict=True)] if erased else answer
