"""Data subjects' requests as Airflow runs: the ``zmlops_privacy`` DAG exports, erases or scans one customer.

Airflow keeps a run's configuration and its task logs in its own stores (the metadata database, the log store),
which an erasure cannot rewrite. So a request names the customer by the audit trail's keyed hash
(:func:`governance.consent.subject_hash`; ``zm privacy subject CUSTOMER_ID`` prints it; trigger the run with it in
Airflow's UI or REST API), never by the id or the request log's pseudonym, and each step finds the id again
by hashing the customer ids of the retained data versions (:func:`find_customer`). Nothing a step returns (Airflow
keeps it as XCom) or prints names the customer otherwise.

- **export** writes the access bundle (:func:`governance.access.export`) to the object store,
  ``privacy/exports/<subject>/<time>.json``, for whoever serves the request to fetch; bundles older than
  ``privacy.export_retention_days`` are deleted by the monitoring DAG's retention task, and an erasure deletes the
  customer's at once;
- **erase** waits for the privacy board where :meth:`zmlops.settings.Settings.privacy_approval_required` (the k8s
  profile by default): Airflow's approval task, answered by holders of ``privacy.approval_role``, recorded in the
  audit trail (``privacy.erasure_approved`` / ``privacy.erasure_rejected``, with the run). Approved, it runs
  :func:`governance.erasure.erase`, then the scanner, and records what is left (store and place, counted);
- **scan** runs :func:`governance.scan.scan` and returns where each hit is (never what the hit shows).
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["KINDS", "find_customer", "review", "answer", "carry_out"]

KINDS = ("export", "erase", "scan")
_SUBJECT = re.compile(r"^[0-9a-f]{16}$")


def _subject(subject: str) -> str:
    subject = subject.strip().removeprefix("customer:")
    if not _SUBJECT.match(subject):
        raise ValueError("subject: the customer's audit subject hash, 16 hex characters "
                         "('zm privacy subject CUSTOMER_ID' prints it)")
    return subject


def find_customer(settings: Settings, subject: str) -> int | None:
    """The customer id whose audit subject hash is ``subject``, among the customers of the retained data versions;
    None when no retained version holds them (never seen, or already erased)."""
    from governance.access import customer_ids
    from governance.pseudonyms import subject as subject_of

    subject = _subject(subject)
    key = settings.pseudonym_key
    return next((c for c in customer_ids(settings) if subject_of(key, c) == subject), None)


def review(settings: Settings, kind: str, subject: str, reason: str, run_id: str) -> dict[str, str] | None:
    """The privacy board's question for an erasure that needs approval (None: nothing waits for it)."""
    if kind != "erase" or not settings.privacy_approval_required():
        return None
    subject = _subject(subject)
    return {"subject": f"Erase customer {subject}?",
            "body": (f"An erasure request ({reason}) for the customer whose audit subject hash is `{subject}`, run "
                     f"`{run_id}`. Approving removes them from every store (a new data version without them, "
                     "earlier versions retired and their objects deleted, features, request log, consent "
                     "records) and sends the models trained on their data to retraining within "
                     f"{settings.privacy.erasure_retrain_days} days. It cannot be undone."),
            "customer": subject, "run": run_id}


def answer(settings: Settings, subject: str, run_id: str, approved: bool, by: str, why: str) -> None:
    """Record the privacy board's answer in the audit trail."""
    from governance import audit

    action = "privacy.erasure_approved" if approved else "privacy.erasure_rejected"
    audit.record(settings, action, f"customer:{_subject(subject)}", {"run": run_id, "why": why}, who=by)


def _approved(settings: Settings, subject: str, run_id: str) -> bool:
    from governance import audit

    answers = [e for e in audit.entries(settings, "privacy.erasure_*", f"customer:{subject}")
               if e.details.get("run") == run_id]
    return bool(answers) and answers[-1].action == "privacy.erasure_approved"


def _where(hits: list[Any]) -> dict[str, int]:
    """Hits counted by store and place, without what they show."""
    counted: dict[str, int] = {}
    for hit in hits:
        counted[f"{hit.store}: {hit.where}"] = counted.get(f"{hit.store}: {hit.where}", 0) + 1
    return counted


def carry_out(settings: Settings, kind: str, subject: str, reason: str, run_id: str,
              actor: str | None = None) -> dict[str, Any]:
    """Carry out one request; returns what was done, without the customer's id or pseudonym."""
    from governance.scan import scan

    if kind not in KINDS:
        raise ValueError(f"request: one of {', '.join(KINDS)}, not {kind!r}")
    subject = _subject(subject)
    if kind == "erase" and settings.privacy_approval_required() and not _approved(settings, subject, run_id):
        raise PermissionError(f"the privacy board has not approved run {run_id}'s erasure")
    customer = find_customer(settings, subject)
    if customer is None:
        raise LookupError(f"no retained data version holds the customer {subject} (never seen, or already "
                          "erased): run 'zm privacy scan CUSTOMER_ID' where the id is known")
    if kind == "export":
        from governance.access import EXPORTS, STAMP, export

        key = f"{EXPORTS}/{subject}/{dt.datetime.now(dt.UTC).strftime(STAMP)}.json"
        with tempfile.TemporaryDirectory(prefix="zm-export-") as tmp:
            out = Path(tmp) / "bundle.json"
            summary = export(settings, customer, out)
            from zmlops.stores import object_store

            object_store(settings).put(key, out.read_bytes(), keep=False)
        return {"request": kind, "customer": subject, "bundle": key, **summary}
    if kind == "erase":
        from governance.erasure import erase

        done = erase(settings, customer, reason, actor=actor)
        hits, _ = scan(settings, customer)
        left = _where(hits)
        from governance import audit

        audit.record(settings, "privacy.scanned", f"customer:{subject}", {"run": run_id, "left": left}, who=actor)
        return {"request": kind, "customer": subject, **done, "left": left}
    hits, unread = scan(settings, customer)
    return {"request": kind, "customer": subject, "hits": _where(hits), "not_searched": len(unread)}
