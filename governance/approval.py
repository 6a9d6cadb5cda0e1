"""The model review board's decisions: a staged version deploys only once approved (where approval is required).

Approvals and rejections are entries of the audit trail (``model.approved`` / ``model.rejected`` on
``model:<family>:v<version>``, with who answered and why); a rejection is also tagged on the model
version (``approval.status``, ``approval.reason``) by :func:`training.pipeline.answer`, which writes the registry.
The training DAG asks the board with Airflow's ``ApprovalOperator`` (:mod:`dags.training`); the deploy step
reads the answer from here, so a version cannot reach production by any other path without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from governance import audit

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["Answer", "answer", "decide"]


@dataclass(frozen=True)
class Answer:
    approved: bool
    by: str
    why: str
    seq: int


def answer(settings: Settings, family: str, version: str) -> Answer | None:
    """The board's latest answer on this version, or None while it has not answered."""
    found = [e for e in audit.entries(settings, "model.*", audit.model_subject(family, version))
             if e.action in ("model.approved", "model.rejected")]
    if not found:
        return None
    last = found[-1]
    return Answer(last.action == "model.approved", last.actor, str(last.details.get("why", "")), last.seq)


def decide(settings: Settings, family: str, version: str, approved: bool, by: str, why: str) -> Answer:
    """Record the board's answer in the audit trail (the caller tags a rejection on the model version:
    :func:`training.pipeline.answer`)."""
    action = "model.approved" if approved else "model.rejected"
    entry = audit.record(settings, action, audit.model_subject(family, version), {"why": why}, who=by)
    return Answer(approved, by, why, entry.seq)
