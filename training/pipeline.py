"""The training DAG's steps as plain functions (the DAG file only wires them).

Every step takes and returns JSON-able values (Airflow passes them as XComs) and is
idempotent for its data version: features are published once per version, a training
with the same data version, code and parameters returns the registered version, and a
deployment already recorded is not repeated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zmlops.catalog import FAMILIES, RETRAIN_ASSET_PREFIX
from zmlops.settings import Settings

__all__ = ["resolve_version", "in_production", "validate", "features", "plan", "train", "review", "answer"]


def resolve_version(settings: Settings, requested: str) -> str:
    from training.data import ingest

    return ingest.registry_for(settings).resolve(requested or "current").name


def in_production(settings: Settings) -> list[str]:
    """The families with a ``production`` version (what the monitoring DAG has to check)."""
    from training import tracking

    return [f for f in FAMILIES if tracking.alias_version(settings, f, "production") is not None]


def validate(settings: Settings, version: str) -> dict[str, Any]:
    """The Great Expectations gate; raises ``ValidationFailed`` (a readable report) on bad data."""
    import logging

    from training.data import ingest

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    result = ingest.validate_version(settings, version)
    for line in result.summary_lines():
        print(line)
    return {"version": version, "clean": str(result.clean)}


def features(settings: Settings, version: str) -> dict[str, Any]:
    from training.features.store import prepare_features

    marker = prepare_features(settings, version)
    return {"data_version": marker["data_version"], "materialized": marker["materialized"],
            "rows": {k: v["rows"] for k, v in marker["tables"].items()}}


def plan(requested: Iterable[str], events: Mapping[str, list[Mapping[str, Any]]] | None,
         default_reason: str) -> list[dict[str, str]]:
    """Which families this run trains, and why.

    A run started by retrain asset events trains exactly the families whose assets fired,
    with the reason carried in each event's ``extra``; any other run trains the requested
    families (all by default) for ``default_reason``.
    """
    jobs: dict[str, str] = {}
    for uri, fired in (events or {}).items():
        if not uri.startswith(RETRAIN_ASSET_PREFIX) or not fired:
            continue
        family = uri[len(RETRAIN_ASSET_PREFIX):]
        reasons = [str(e.get("reason", "asset event")) for e in fired]
        jobs[family] = "; ".join(dict.fromkeys(reasons))
    if not jobs:
        chosen = list(requested) or list(FAMILIES)
        unknown = sorted(set(chosen) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown model families {unknown}; choose from {list(FAMILIES)}")
        jobs = {f: default_reason for f in chosen}
    return [{"family": f, "reason": r} for f, r in jobs.items() if f in FAMILIES]


def train(settings: Settings, family: str, version: str, reason: str, tune: bool | None = None) -> dict[str, Any]:
    """Training set from Feast, (tuning,) fit, evaluate, register, gate (``staging`` on a pass), model card."""
    import logging

    from training.run import train_family

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        outcome = train_family(settings, family, version, reason=reason, tune=tune)
    finally:
        _release_worker_pool()
    print(f"{family} v{outcome.version}: {outcome.decision} ({outcome.reason}); "
          f"{outcome.primary_metric} {outcome.metric:.4f} vs baseline {outcome.baseline:.4f}")
    return outcome.to_dict()


def _release_worker_pool() -> None:
    """Stop joblib's worker processes (the forecaster fits its series on them). Airflow forks the task from its
    supervisor and ends it with ``os._exit`` after the exit handlers registered since the fork; multiprocessing's
    handler joins the idle workers, which leave only after loky's 300 s idle timeout, so the finished task hung
    until ``task_success_overtime`` (20 s) killed it."""
    import sys

    if "joblib.externals.loky" in sys.modules:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def review(settings: Settings, outcomes: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What the review board is asked about this run: the staged versions whose family requires approval
    (none when the local auto-approver answers), with the text it reads; None when nothing waits."""
    from governance import approval

    waiting = [dict(o) for o in outcomes if o and o.get("decision") == "staged"
               and settings.approval_required(str(o["family"])) and not settings.approval.auto_approver
               and approval.answer(settings, str(o["family"]), str(o["version"])) is None]
    if not waiting:
        return None
    names = ", ".join(f"{o['family']} v{o['version']}" for o in waiting)
    return {"subject": f"Deploy {names}?", "body": _review_text(settings, waiting),
            "versions": [{"family": o["family"], "version": o["version"]} for o in waiting]}


def _review_text(settings: Settings, outcomes: list[dict[str, Any]]) -> str:
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


def answer(settings: Settings, versions: Iterable[Mapping[str, Any]], approved: bool, by: str, why: str) -> None:
    """Record the board's answer on every version it was asked about (the audit trail; a rejection is also
    tagged on the model version)."""
    from governance import approval
    from training import tracking

    for v in versions:
        family, version = str(v["family"]), str(v["version"])
        approval.decide(settings, family, version, approved, by, why)
        if not approved:
            tracking.tag_version(settings, family, version, {"approval.status": "rejected",
                                                             "approval.reason": why, "approval.by": by})
        print(f"{family} v{version}: {'approved' if approved else 'rejected'} by {by} ({why})")
