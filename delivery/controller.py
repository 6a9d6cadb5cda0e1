"""Progressive delivery: ``deploy(family, version)`` runs the rollout plan and ends promoted or rolled back.

The plan (settings ``rollout.steps``, default 10% -> 50% -> 100%) moves traffic to the candidate step by
step; each step is held for ``rollout.checks_per_step`` analysis windows of ``rollout.window_seconds``.
Every window is judged by :func:`delivery.analysis.judge` (error rate, p99, quality proxy against
the stable version and absolute limits); ``rollout.failed_checks`` failed windows in a row roll back.
A candidate that never turns ready is stopped before it receives a request.

Promotion moves the registry's ``production`` alias to the candidate and ``previous-production`` to the
version it replaces, whose server stays up without traffic (warm) so :meth:`Rollout.rollback` is a
weight change: it needs neither a model load nor MLflow. Every decision is an entry of the audit trail
(:mod:`governance.audit`: who, what, when, why, the numbers) and is tagged on the model version.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from delivery.analysis import Counters, Verdict, window
from delivery.haproxy import SLOTS
from delivery.local import LocalBackend
from delivery.recorder import PREVIOUS, PRODUCTION, Outcome, Recorder
from zmlops.settings import Settings

__all__ = ["Slot", "State", "Recorder", "Rollout", "Outcome", "PRODUCTION", "PREVIOUS", "rollout_for", "serves"]

log = logging.getLogger("delivery")


@dataclass
class Slot:
    slot: str
    version: str
    pid: int


@dataclass
class State:
    """Which slot serves what, per family (home/rollout/<family>.json). ``candidate`` is set while a rollout
    runs, with the pid of the process running it (``controller``): found with that process gone, it means the
    controller stopped mid-rollout (:meth:`Rollout.reconcile`)."""

    family: str
    stable: Slot | None = None
    previous: Slot | None = None
    candidate: Slot | None = None
    controller: int | None = None

    @classmethod
    def load(cls, path: Path, family: str) -> State:
        if not path.exists():
            return cls(family)
        raw = json.loads(path.read_text())
        stable, previous, candidate = (Slot(**raw[k]) if raw.get(k) else None for k in ("stable", "previous",
                                                                                       "candidate"))
        return cls(family, stable, previous, candidate, raw.get("controller"))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


class Rollout(Recorder):
    """The rollout controller over the local backend (HAProxy and server slots; kserve.py for the cluster)."""

    def __init__(self, settings: Settings, backend: LocalBackend | None = None, registry: Any = None) -> None:
        from zmlops.catalog import FAMILIES

        super().__init__(settings, registry)
        self.backend = backend or LocalBackend(settings, FAMILIES)

    def state(self, family: str) -> State:
        return State.load(self.dir / f"{family}.json", family)

    def _save(self, state: State) -> None:
        state.save(self.dir / f"{state.family}.json")

    # ------------------------------------------------------------------ bootstrapping

    def serve(self, family: str, version: str) -> State:
        """Start serving ``version`` as the stable version (first start of the local stack)."""
        self.backend.start_proxy()
        self.reconcile(family)
        state = self.state(family)
        if state.stable and self.backend.alive(state.stable.pid) and state.stable.version == version:
            return state
        slot = self._free_slot(state)
        pid = self.backend.start(family, slot, version)
        if not self.backend.wait_ready(family, slot, pid, self.settings.rollout.ready_timeout_seconds):
            self.backend.stop(pid, kill=True)
            raise RuntimeError(f"{family} v{version} did not become ready in slot {slot}")
        self.backend.set_traffic(family, {slot: 100})
        if state.stable:
            self.backend.stop(state.stable.pid)
        state.stable = Slot(slot, version, pid)
        self._save(state)
        self.record(family, version, "serving", "started as the stable version")
        self.reconcile(family)
        return state

    def reconcile(self, family: str) -> dict[str, str | None]:
        """After a crash or a registry outage: end a rollout the controller left mid-way (all traffic back to
        the stable slot, the candidate stopped, recorded), then set the registry's aliases from the slots that
        serve. Returns the aliases it moved."""
        state = self.state(family)
        if state.candidate is not None and not self.backend.alive(state.controller):
            self._end_interrupted(state)
        alive = [s if s and self.backend.alive(s.pid) else None for s in (state.stable, state.previous)]
        return self.reconcile_aliases(family, alive[0].version if alive[0] else None,
                                      alive[1].version if alive[1] else None)

    def _end_interrupted(self, state: State) -> None:
        candidate = state.candidate
        assert candidate is not None
        stable = state.stable if state.stable and self.backend.alive(state.stable.pid) else None
        if stable is not None:
            self.backend.set_traffic(state.family, {stable.slot: 100})
        # no new requests reach it now: SIGTERM lets it answer the ones it holds (SIGKILL here once failed one
        # request of 225 under load); a candidate that has not exited after the stop's wait is killed
        self.backend.stop(candidate.pid)
        state.candidate = None
        self._save(state)
        why = ("interrupted: the controller stopped mid-rollout; "
               + (f"all traffic back to the stable v{stable.version}, " if stable else "nothing serves, ")
               + "the candidate stopped")
        note = self._registry_update(state.family, {}, {candidate.version: {"rollout.status": "interrupted",
                                                                              "rollout.reason": why}})
        self.record(state.family, candidate.version, "rolled back", why, registry=note or "tagged")
        log.warning("%s v%s: %s", state.family, candidate.version, why)

    def _free_slot(self, state: State) -> str:
        taken = {s.slot for s in (state.stable, state.previous) if s and self.backend.alive(s.pid)}
        free = [s for s in SLOTS if s not in taken]
        if not free:  # all three busy: the previous version gives its slot up
            assert state.previous is not None
            self.backend.stop(state.previous.pid)
            free, state.previous = [state.previous.slot], None
        return free[0]

    # ------------------------------------------------------------------ the rollout

    def _snapshot(self, family: str, slots: list[Slot]) -> dict[str, Counters]:
        out: dict[str, Counters] = {}
        for s in slots:
            for version, counters in self.backend.scrape(family, s.slot).items():
                out.setdefault(version, Counters()).add(counters)
        return out

    def _check(self, family: str, candidate: Slot, stable: Slot) -> Verdict:
        before = self._snapshot(family, [candidate, stable])
        time.sleep(self.settings.rollout.window_seconds)
        after = self._snapshot(family, [candidate, stable])
        c = window(candidate.version, before.get(candidate.version), after.get(candidate.version))
        s = window(stable.version, before.get(stable.version), after.get(stable.version))
        return self.judge_window(c, s)

    def deploy(self, family: str, version: str, candidate_env: dict[str, str] | None = None) -> Outcome:
        """Run the plan for ``version`` of ``family`` against the current stable version.

        ``candidate_env`` adds environment to the candidate's server (the drills inject faults with it).
        """
        r = self.settings.rollout
        started = time.monotonic()
        self.reconcile(family)  # a crash mid-rollout may have left a candidate, or the aliases behind what serves
        state = self.state(family)
        if state.stable is None or not self.backend.alive(state.stable.pid):
            raise RuntimeError(f"{family}: nothing is serving; start the stable version first (zm rollout serve)")
        stable = state.stable
        if stable.version == version:
            return Outcome(family, version, "promoted", "already the stable version", 0.0)
        slot = self._free_slot(state)
        self._save(state)
        self.record(family, version, "rollout started", f"candidate against stable v{stable.version}",
                    plan=list(r.steps), window_seconds=r.window_seconds)
        pid = self.backend.start(family, slot, version, candidate_env)
        candidate = state.candidate = Slot(slot, version, pid)
        state.controller = os.getpid()
        self._save(state)  # found at the next start if this process dies before the end
        if not self.backend.wait_ready(family, slot, pid, r.ready_timeout_seconds):
            exited = not self.backend.alive(pid)
            self.backend.stop(pid, kill=True)
            state.candidate = None
            self._save(state)
            reason = ("exited before it was ready (its log says why)" if exited
                      else f"not ready within {r.ready_timeout_seconds:.0f} s")
            return self.not_ready(family, version, f"{reason} (no traffic was sent)", started)
        why, checks, step_started = self.walk_plan(
            family, version, lambda percent: self.backend.set_traffic(family, {stable.slot: 100 - percent,
                                                                                slot: percent}),
            lambda: self._check(family, candidate, stable))
        if why:
            out = self._roll_back(family, state, candidate, why, checks, started)
        else:
            out = self._promote(family, state, candidate, checks, started)
        out.step_started = step_started
        return out

    def _roll_back(self, family: str, state: State, candidate: Slot, why: str, checks: list[dict[str, Any]],
                   started: float) -> Outcome:
        stable = state.stable
        assert stable is not None
        self.backend.set_traffic(family, {stable.slot: 100})
        self.backend.stop(candidate.pid)
        state.candidate = None
        self._save(state)
        # production points at the stable version again (the training DAG's gate may have moved it)
        note = self._registry_update(family, {PRODUCTION: stable.version},
                                     {candidate.version: {"rollout.status": "rolled_back",
                                                          "rollout.reason": why[:500]}})
        self.record(family, candidate.version, "rolled back", why, last_check=checks[-1] if checks else None,
                    registry=note or "tagged")
        return Outcome(family, candidate.version, "rolled_back", why, time.monotonic() - started, checks)

    def _promote(self, family: str, state: State, candidate: Slot, checks: list[dict[str, Any]],
                 started: float) -> Outcome:
        old = state.stable
        assert old is not None
        self.backend.set_traffic(family, {candidate.slot: 100})
        if state.previous and state.previous.slot not in (candidate.slot, old.slot):
            self.backend.stop(state.previous.pid)
        state.stable, state.previous, state.candidate = candidate, old, None  # the old one stays warm, unrouted
        self._save(state)
        why = self.promoted_why(checks)
        note = self._registry_update(
            family, {PRODUCTION: candidate.version, PREVIOUS: old.version},
            {candidate.version: {"rollout.status": "promoted", "rollout.reason": why}})
        self.record(family, candidate.version, "promoted", why, replaced=old.version, registry=note or "aliases moved")
        return Outcome(family, candidate.version, "promoted", why, time.monotonic() - started, checks)

    def rollback(self, family: str, reason: str = "manual rollback") -> Outcome:
        """Send all traffic back to the warm previous version and stop the current one.

        A weight change on the proxy: no model load and no MLflow call on the critical path. The alias
        moves afterwards when MLflow answers; if it does not, the audit trail says so and the next start reconciles.
        """
        started = time.monotonic()
        state = self.state(family)
        previous, current = state.previous, state.stable
        if previous is None or not self.backend.alive(previous.pid):
            raise RuntimeError(f"{family}: no warm previous version to roll back to")
        assert current is not None
        if not self.backend.ready(family, previous.slot):
            raise RuntimeError(f"{family}: previous v{previous.version} in slot {previous.slot} is not ready")
        self.backend.set_traffic(family, {previous.slot: 100})
        state.stable, state.previous = previous, None
        self._save(state)
        self.backend.stop(current.pid)
        seconds = time.monotonic() - started
        note = self._registry_update(family, {PRODUCTION: previous.version, PREVIOUS: None},
                                     {current.version: {"rollout.status": "rolled_back",
                                                        "rollout.reason": reason[:500]}})
        self.record(family, previous.version, "rolled back", reason, replaced=current.version,
                    seconds=round(seconds, 3), registry=note or "alias moved")
        return Outcome(family, previous.version, "rolled_back", reason, seconds)

    def shutdown(self, family: str) -> None:
        """Stop every server of ``family`` (the proxy stays for the others)."""
        state = self.state(family)
        for s in (state.candidate, state.stable, state.previous):
            if s:
                self.backend.stop(s.pid)
        (self.dir / f"{family}.json").unlink(missing_ok=True)


def rollout_for(settings: Settings) -> Any:
    """The deployment interface of this profile: KServe in k8s, HAProxy and local processes otherwise."""
    if settings.profile == "k8s":
        from delivery.kserve import KServeRollout

        return KServeRollout(settings, settings.rollout.namespace)
    return Rollout(settings)


def serves(settings: Settings, family: str) -> bool:
    """Whether progressive delivery handles ``family``: in k8s unless ``rollout.canary`` is off; locally once
    `zm rollout serve` ran."""
    if settings.profile == "k8s":
        return settings.rollout.canary
    rollout = Rollout(settings)
    state = rollout.state(family)
    return state.stable is not None and rollout.backend.alive(state.stable.pid)
