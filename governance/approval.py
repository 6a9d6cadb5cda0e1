"""The model review board's decisions: a staged version deploys only once approved (where approval is required).

Approvals and rejections are entries of the audit trail (``model.approved`` / ``model.rejected`` on
``model:<family>:v<version>``, with who answered and why); a rejection is also tagged on the model
version (``approval.status``, ``approval.reason``). The training DAG asks the board with Airflow's
``ApprovalOperator`` (:mod:`dags.training`); the deploy step reads the answer from here, so a version
cannot reach production by any other path without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from governance import audit

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["Answer", "answer", "decide", "review_text"]


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
    """Record the board's answer (audit trail; a rejection also on the model version)."""
    action = "model.approved" if approved else "model.rejected"
    entry = audit.record(settings, action, audit.model_subject(family, version), {"why": why}, who=by)
    if not approved:
        from training import tracking

        tracking.tag_version(settings, family, version, {"approval.status": "rejected", "approval.reason": why,
                                                          "approval.by": by})
    return Answer(approved, by, why, entry.seq)


def review_text(settings: Settings, outcomes: list[dict[str, object]]) -> str:
    """What the board reads: per staged version, the gate's figures, the difference to production, the card."""
    from training import tracking

    parts = []
    for o in outcomes:
        family, version = str(o["family"]), str(o["version"])
        production = tracking.alias_version(settings, family, "production")
        card = tracking.client(settings).get_model_version(family, version).description or ""
        champion = o.get("champion")
        diff = (f"production v{production}: {o['primary_metric']} {champion:.4f}" if isinstance(champion, float)
                else "no production version yet")
        parts.append(f"## {family} v{version}\n\n"
                     f"- gate: **{o['decision']}** ({o['reason']})\n"
                     f"- {o['primary_metric']}: {float(str(o['metric'])):.4f} "
                     f"(baseline {float(str(o['baseline'])):.4f}); {diff}\n"
                     f"- data version {o['data_version']}\n\n"
                     f"<details><summary>model card</summary>\n\n{card}\n\n</details>\n")
    return "\n".join(parts)
