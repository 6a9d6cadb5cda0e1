"""Rotating the pseudonymisation key (``ZM_PSEUDONYMISATION_KEY``) without a moment in which a customer's choices
are not honoured.

Three keyed hashes of a customer id are stored (:mod:`governance.pseudonyms`): the pseudonym (consent register,
request log), the audit subject hash (audit trail, erasure register) and the hash of a client's request id. A key
change makes every stored hash unfindable, so the stores are rewritten from the old hashes to the new ones, which
needs the ids: those of every retained data version, plus any the operator adds (``extra_ids``: the customer master
list, for people with a consent record who never bought). In two steps around the rollout of the new key:

1. :func:`start` (run with the old key in the settings): refuses if a consent record belongs to no known id (its
   choice would be lost) or if an erasure is still pending (a production model trained on retired data: the
   predictors suppress the erased customer by the old hash); otherwise copies every consent record and erasure
   row under the new hashes. Workloads on the old key read the old rows, workloads on the new key the copies.
2. The platform team puts the new key in the Secret and rolls every workload (docs/privacy.md).
3. :func:`finish` (run with the new key in the settings and the old one given): deletes the old consent and erasure
   rows (a consent record written under the old key after :func:`start` is moved, not lost) and rewrites the
   request log's customer pseudonyms. Rows of customers no known id hashes to (visitors who never bought), and the
   request-id hashes, stay as they are: nobody can link them once the old key is destroyed, and the request log's
   retention deletes them.

The audit trail is append-only and keeps the old subject hashes: a customer's entries before the rotation are
found with the old key (``zm privacy subject ID`` run with it). Both steps are audit entries naming each key by
a fingerprint (the first 12 hex characters of its SHA-256), never the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from governance.pseudonyms import pseudonymise, subject

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["fingerprint", "start", "finish"]


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def _maps(settings: Settings, old: bytes, new: bytes, extra_ids: Iterable[int]) -> tuple[dict[str, str],
                                                                                         dict[str, str]]:
    """(old pseudonym -> new pseudonym, old subject hash -> new subject hash) for every known customer id."""
    from governance.access import customer_ids

    ids = customer_ids(settings) | {int(i) for i in extra_ids}
    return ({pseudonymise(old, i): pseudonymise(new, i) for i in ids},
            {subject(old, i): subject(new, i) for i in ids})


def _key(settings: Settings) -> bytes:
    return settings.pseudonym_key


def start(settings: Settings, new_key: bytes, extra_ids: Iterable[int] = ()) -> dict[str, Any]:
    """Step 1, with the old key in ``settings``: copy the consent and erasure rows under the new hashes."""
    from sqlalchemy import insert, select

    from governance import audit
    from governance.erasure import retired_production
    from zmlops.catalog import FAMILIES
    from zmlops.statedb import CONSENT, ERASURES, engine

    old = _key(settings)
    if new_key == old or len(new_key) < 16:
        raise ValueError("new key: at least 16 characters, and not the current key")
    pending = [f for f in FAMILIES if retired_production(settings, f)]
    if pending:
        raise RuntimeError(f"an erasure is pending ({', '.join(pending)}: production trained on retired data): the "
                           "predictors suppress the erased customers by the old key's hash; retrain first")
    pseudonyms, subjects = _maps(settings, old, new_key, extra_ids)
    with engine(settings).begin() as conn:
        rows = [dict(r) for r in conn.execute(select(CONSENT).order_by(CONSENT.c.seq)).mappings()]
        copied = {r["customer"] for r in rows if r["customer"] in pseudonyms.values()}
        unknown = {r["customer"] for r in rows} - set(pseudonyms) - copied
        if unknown:
            raise LookupError(f"{len(unknown)} customers in the consent register belong to no id of a retained data "
                              "version: give their ids (the customer master list) so their choices move with them")
        todo = [r for r in rows if r["customer"] in pseudonyms and pseudonyms[r["customer"]] not in copied]
        for r in todo:
            conn.execute(insert(CONSENT).values(**{k: v for k, v in r.items() if k != "seq"}
                                                | {"customer": pseudonyms[r["customer"]]}))
        erased = [dict(r) for r in conn.execute(select(ERASURES)).mappings()]
        have = {r["subject"] for r in erased}
        moved = [r for r in erased if r["subject"] in subjects and subjects[r["subject"]] not in have]
        for r in moved:
            conn.execute(insert(ERASURES).values(**{**r, "subject": subjects[r["subject"]]}))
    done = {"consent_records_copied": len(todo), "erasure_rows_copied": len(moved), "known_customers": len(pseudonyms),
            "old_key": fingerprint(old), "new_key": fingerprint(new_key)}
    audit.record(settings, "privacy.rekey_started", "privacy:pseudonymisation-key", done)
    return done


def finish(settings: Settings, old_key: bytes, extra_ids: Iterable[int] = ()) -> dict[str, Any]:
    """Step 3, with the new key in ``settings``: drop the old consent and erasure rows, rewrite the request log."""
    from sqlalchemy import delete, select, update

    from governance import audit
    from monitoring.requests import rewrite_customers
    from zmlops.statedb import CONSENT, ERASURES, engine
    from zmlops.stores import object_store

    new = _key(settings)
    if old_key == new:
        raise ValueError("old key: the key the stores were written with, not the current one")
    pseudonyms, subjects = _maps(settings, old_key, new, extra_ids)
    with engine(settings).begin() as conn:
        rows = [dict(r) for r in conn.execute(select(CONSENT).order_by(CONSENT.c.seq)).mappings()]
        copies = {(r["customer"], r["created_at"], r["source"]) for r in rows}
        dropped = moved = 0
        for r in rows:
            if r["customer"] not in pseudonyms:
                continue
            if (pseudonyms[r["customer"]], r["created_at"], r["source"]) in copies:
                conn.execute(delete(CONSENT).where(CONSENT.c.seq == r["seq"]))
                dropped += 1
            else:  # written under the old key after start: moved, keeping its place in the order
                conn.execute(update(CONSENT).where(CONSENT.c.seq == r["seq"])
                             .values(customer=pseudonyms[r["customer"]]))
                moved += 1
        erasures = conn.execute(delete(ERASURES).where(ERASURES.c.subject.in_(list(subjects)))).rowcount
    rewritten = rewrite_customers(object_store(settings), pseudonyms)
    done = {"consent_records_dropped": dropped, "consent_records_moved": moved, "erasure_rows_dropped": erasures,
            "log_rows_rekeyed": rewritten,  # the request log's and the event log's
            "old_key": fingerprint(old_key), "new_key": fingerprint(new)}
    audit.record(settings, "privacy.rekeyed", "privacy:pseudonymisation-key", done)
    return done
