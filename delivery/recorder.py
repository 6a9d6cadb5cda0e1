"""What both deployment backends share (the local :class:`~delivery.controller.Rollout` and
:class:`~delivery.kserve.KServeRollout`): walking the plan, judging windows, decisions in the audit trail,
the registry's aliases and tags, and the outcome of a rollout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from delivery.analysis import Verdict, VersionStats, judge
from zmlops.settings import Settings

__all__ = ["Outcome", "Recorder", "PRODUCTION", "PREVIOUS"]

log = logging.getLogger("delivery")
PRODUCTION, PREVIOUS = "production", "previous-production"


@dataclass
class Outcome:
    family: str
    version: str
    result: str  # promoted | rolled_back | not_ready
    reason: str
    seconds: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    step_started: dict[int, float] = field(default_factory=dict)  # percent -> time.monotonic() it began


class Recorder:
    """What both backends share: decisions in the audit trail, the registry's aliases and tags, the verdicts."""

    def __init__(self, settings: Settings, registry: Any = None) -> None:
        self.settings = settings
        self.dir = settings.home.resolve() / "rollout"
        self._registry = registry

    def judge_window(self, candidate: VersionStats, stable: VersionStats) -> Verdict:
        return judge(candidate, stable, self.settings.rollout)

    def walk_plan(self, family: str, version: str, route: Callable[[int], None], check: Callable[[], Verdict]
                  ) -> tuple[str | None, list[dict[str, Any]], dict[int, float]]:
        """Step through the plan: ``route`` each percent, then ``check`` (one window each) until the step has
        its passes. Returns why to roll back (None: promote), every check, and when each step began."""
        r = self.settings.rollout
        checks: list[dict[str, Any]] = []
        step_started: dict[int, float] = {}
        failed = 0
        for percent in r.steps:
            route(percent)
            step_started[percent] = time.monotonic()
            self.record(family, version, f"traffic {percent}%", "next step of the plan")
            passes, windows = 0, 0
            while passes < r.checks_per_step:
                verdict = check()
                windows += 1
                checks.append({"percent": percent, **verdict.to_dict()})
                if verdict.passed:
                    passes, failed = passes + 1, 0
                elif verdict.passed is False:
                    failed += 1
                if failed >= r.failed_checks:
                    return "; ".join(verdict.reasons), checks, step_started
                if windows >= r.checks_per_step * 3 and passes == 0:
                    return (f"not enough traffic to judge at {percent}%: " + "; ".join(verdict.reasons), checks,
                            step_started)
        return None, checks, step_started

    def not_ready(self, family: str, version: str, why: str, started: float) -> Outcome:
        self._registry_update(family, {}, {version: {"rollout.status": "not_ready", "rollout.reason": why}})
        self.record(family, version, "rolled back", why)
        return Outcome(family, version, "not_ready", why, time.monotonic() - started)

    def promoted_why(self, checks: list[dict[str, Any]]) -> str:
        return f"passed {len(checks)} checks over {', '.join(f'{p}%' for p in self.settings.rollout.steps)}"

    def record(self, family: str, version: str, what: str, why: str, **numbers: Any) -> dict[str, Any]:
        """One decision, as an entry of the audit trail (``rollout.<what>`` on ``model:<family>:v<version>``)."""
        from governance import audit

        action = "rollout." + ("traffic" if what.startswith("traffic") else what.replace(" ", "_"))
        entry = audit.record(self.settings, action, audit.model_subject(family, version),
                             {"what": what, "why": why, **numbers})
        log.info("%s v%s: %s (%s)", family, version, what, why)
        return _decision(entry)

    def decisions(self, family: str | None = None) -> list[dict[str, Any]]:
        """The rollout's decisions, oldest first (of one model, or all): audit entries ``rollout.*``."""
        from governance import audit

        subject = audit.model_subject(family or "*", "*")
        return [_decision(e) for e in audit.entries(self.settings, "rollout.*", subject)]

    def _registry_update(self, family: str, aliases: dict[str, str | None], tags: dict[str, dict[str, str]]) -> str:
        """Move aliases and tag versions; returns "" or why it could not (MLflow unreachable after retries).

        The decision stands either way (traffic already moved); :meth:`reconcile` at the next start sets the
        aliases from what is served."""
        from training import tracking

        try:
            tracking.update_registry(self.settings, family, aliases, tags, registry=self._registry)
            return ""
        except tracking.RegistryUnavailable as exc:
            return f"registry not updated (reconciled at the next start): {str(exc)[:200]}"

    def reconcile_aliases(self, family: str, served: str | None, previous: str | None) -> dict[str, str | None]:
        """Point ``production`` (and ``previous-production``) at what is actually served; returns what moved."""
        from governance import audit
        from training import tracking

        if served is None:
            return {}
        changed: dict[str, str | None] = {}
        try:
            c = self._registry or tracking.client(self.settings)
            have: dict[str, str | None] = {}
            for alias in (PRODUCTION, PREVIOUS):
                try:
                    have[alias] = str(c.get_model_version_by_alias(family, alias).version)
                except Exception:  # noqa: BLE001 - no such alias yet (or a fake registry without it)
                    have[alias] = None
            if have[PRODUCTION] != served:
                changed[PRODUCTION] = served
            if previous is not None and have[PREVIOUS] != previous:
                changed[PREVIOUS] = previous
            elif previous is None and have[PREVIOUS] == served:  # "the version before" cannot be the one served
                changed[PREVIOUS] = None
            if changed:
                tracking.update_registry(self.settings, family, changed, {}, registry=self._registry)
        except tracking.RegistryUnavailable as exc:
            log.warning("%s: cannot reconcile the registry now (%s)", family, exc)
            return {}
        if changed:
            audit.record(self.settings, "registry.reconciled", audit.model_subject(family, served),
                         {"why": "aliases set from what is served", "moved": changed})
            log.warning("%s: registry reconciled with what is served: %s", family,
                        ", ".join(f"{a} -> v{v}" if v else f"{a} removed" for a, v in changed.items()))
        return changed


def _decision(entry: Any) -> dict[str, Any]:
    _, model, version = entry.subject.split(":", 2)
    details = dict(entry.details)
    return {"time": entry.created_at, "model": model, "version": version.removeprefix("v"),
            "what": details.pop("what"), "why": details.pop("why"), "who": entry.actor, **details}
