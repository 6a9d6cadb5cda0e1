"""The training DAG's deploy step: the only step that moves ``production`` (the DAG file wires it; the drills and
the in-process demo call it too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["deploy"]


def deploy(settings: Settings, outcome: Mapping[str, Any]) -> dict[str, Any]:
    """Put a staged version into service, once: the only step that moves ``production``.

    Where approval is required (``ZM_APPROVAL__*``), the board must have approved the version
    (:mod:`governance.approval`); a rejected or unanswered one leaves production unchanged. With
    progressive delivery (the k8s profile's default; locally once ``zm rollout serve`` put the family
    behind HAProxy) the version goes through the canary plan, which moves ``production`` only on
    promotion. Otherwise the predictors follow the ``production`` alias: this step moves it, waits
    until they serve the new version (asked directly locally, through Prometheus in a cluster) and
    moves it back if they never do (a version that cannot load). The deployment is recorded once.
    """
    family, version = str(outcome["family"]), str(outcome["version"])
    record = {"family": family, "version": version, "decision": outcome["decision"]}
    if outcome["decision"] != "staged":
        return {**record, "deployed": False, "why": "not staged by the gate: production unchanged"}
    from delivery.controller import rollout_for, serves
    from governance import approval, audit
    from training import tracking
    from zmlops import statedb

    if settings.approval_required(family):
        answer = approval.answer(settings, family, version)
        if answer is None and settings.approval.auto_approver:
            answer = approval.decide(settings, family, version, True, settings.approval.auto_approver,
                                     "ZM_APPROVAL__AUTO_APPROVER, local profile")
            print(f"{family} v{version}: approved as {answer.by} (ZM_APPROVAL__AUTO_APPROVER)")
        if answer is None or not answer.approved:
            why = "waiting for the review board" if answer is None else f"rejected by {answer.by}: {answer.why}"
            return {**record, "deployed": False, "why": f"{why}: production unchanged"}
    if serves(settings, family):  # progressive delivery: canary, analysis, promote or roll back
        rolled = rollout_for(settings).deploy(family, version)
        return {**record, "deployed": rolled.result == "promoted", "rollout": rolled.result, "why": rolled.reason,
                "seconds": round(rolled.seconds, 1)}
    production = tracking.alias_version(settings, family, "production")
    subject = audit.model_subject(family, version)
    if production != version:
        tracking.move_production(settings, family, version, production)
        audit.record(settings, "deploy.production_moved", subject,
                     {"why": "approved and staged" if settings.approval_required(family) else "staged",
                      "replaced": production})
    serving = _served_version(settings, family)
    if serving is not None and serving != version:
        def loaded() -> bool:
            nonlocal serving
            serving = _served_version(settings, family)
            return serving == version

        until(loaded, settings.rollout.ready_timeout_seconds, 1.0)
        if serving is not None and serving != version:  # the predictors never loaded it: back to what they serve
            why = (f"the predictors still serve v{serving} after {settings.rollout.ready_timeout_seconds:.0f} s "
                   f"(the new version did not load)")
            tracking.move_production(settings, family, serving, None)
            tracking.tag_version(settings, family, version, {"rollout.status": "not_ready", "rollout.reason": why})
            audit.record(settings, "rollout.not_ready", subject, {"why": why, "production": serving})
            return {**record, "deployed": False, "serving": serving, "why": why}
    first = statedb.record_deployment(settings, family, version, serving)
    return {**record, "deployed": True, "serving": serving, "already_recorded": not first}


def _served_version(settings: Settings, family: str) -> str | None:
    """The version the predictors answer with: None when none answers (or, in a cluster, replicas disagree)."""
    import httpx

    if settings.profile == "k8s":
        from delivery.kserve import PrometheusSource

        try:
            served = set(PrometheusSource(settings.rollout.prometheus_url).served_versions(family))
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as error:
            print(f"{family}: cannot ask Prometheus what is served ({error})")
            return None
        return served.pop() if len(served) == 1 else None
    answer = _ask_predictor(settings, family, f"/v2/models/{family}")
    if answer is None:
        return None
    versions = answer.json().get("versions") or []
    return str(versions[0]) if versions else _version_by_metrics(settings, family)


def _ask_predictor(settings: Settings, family: str, path: str) -> Any:
    """GET ``path`` of the family's local predictor (authenticated): the response when it answered 200, else None."""
    import httpx

    from zmlops import auth

    url = f"http://{settings.serving.host}:{settings.serving.ports[family]}{path}"
    try:
        answer = httpx.get(url, headers=auth.headers(settings), timeout=1)
    except httpx.HTTPError:
        return None
    return answer if answer.status_code == 200 else None


def _version_by_metrics(settings: Settings, family: str) -> str | None:
    import re

    answer = _ask_predictor(settings, family, "/metrics")
    if answer is None:
        return None
    text = answer.text
    found = re.findall(r'zm_model_version_info\{[^}]*version="([^"]+)"[^}]*\} 1\.0', text)
    return found[-1] if found else None
