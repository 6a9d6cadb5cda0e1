"""Rollout drills on the local backend, under steady load on loopback (``zm rollout drills``, ``make drills``).

Each drill runs the real thing: KServe ModelServer processes for the demand forecaster behind HAProxy,
the rollout controller, a paced load generator counting every answer, and faults injected into the
candidate by ``delivery.faults`` (named in the candidate's ``ZM_SERVING__WRAPPERS``; a predictor started without it
has no fault code on its request path).

- unready candidate (an artifact that does not load): 0 requests reach it, 0 failed requests;
- candidate failing 5% of requests, and a 5x slower candidate (each answer delayed by five times the stable
  version's p99 as the load generator saw it just before): rolled back, seconds from the first request it
  received to the rollback and failed client requests counted (targets 40 s, 10);
- healthy candidate, through the deploy step with approval required: nothing starts before the review
  board approves; then promoted 10 -> 50 -> 100% with 0 failed requests; the share it served at 10%;
- controller killed (SIGKILL) at the 10% step, candidate left serving: the next start (``reconcile``)
  sends all traffic back to the stable version and stops the candidate; failed requests (target 0);
- manual rollback to the warm previous version: seconds and failed requests (targets 10 s, 0);
- SIGKILL of one of two replicas: failed requests (target 0) and HAProxy's retries;
- SIGTERM of one of two replicas: failed requests and retries (target 0 and 0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from delivery.controller import Rollout
from delivery.haproxy import slot_port
from delivery.load import Load
from zmlops.settings import RolloutSettings, Settings

__all__ = ["prepare", "run_drills", "slow_delay", "CANDIDATES", "DRILL_ROLLOUT", "SLOWER"]

FAMILY = "demand-forecast"
# The candidate's settings that wrap its answers with one of delivery/faults.py's faults
FAULTS = {name: {"ZM_SERVING__WRAPPERS": f'["delivery.faults:{name}"]'} for name in ("failing", "slow")}
# Short windows so a drill takes seconds, not minutes (three per step: at 250 requests/s the 10% step
# sees over 2,000 requests); the limits are the production defaults.
# A generous ready timeout: on a busy machine a healthy candidate takes a while to load; the unready one
# exits as soon as its artifact fails to load, so the drill does not wait for the timeout.
DRILL_ROLLOUT = {"window_seconds": 3.0, "checks_per_step": 3, "failed_checks": 2, "ready_timeout_seconds": 60.0}


def prepare(home: Path, say: Callable[[str], None] = print) -> Settings:
    """A ZM_HOME with the forecaster trained (v1), four new copies of it for this run's candidates and a version
    that cannot load. The copies are new on every call: a version the deploy step has promoted once is not deployed
    again (the step is idempotent), so a second run on the same home would not drill the healthy candidate."""
    import logging

    from training import tracking

    logging.getLogger("mlflow").setLevel(logging.WARNING)

    env = {**os.environ, "ZM_HOME": str(home)}
    zm = str(Path(sys.prefix) / "bin" / "zm")
    if not (home / "mlflow.db").exists():
        say("training the demand forecaster on simulated data (about a minute)")
        for argv in (["data", "ingest", "--customers", "300", "--products", "120", "--weeks", "70", "--seed", "5"],
                     ["train", FAMILY, "--reason", "rollout-drills"]):
            done = subprocess.run([zm, *argv], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"zm {' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    settings = Settings(home=home, rollout=RolloutSettings(**DRILL_ROLLOUT))  # type: ignore[arg-type]
    good, broken = _versions(settings)
    for _ in range(CANDIDATES):
        tracking.copy_version(settings, FAMILY, good[0])
    if broken is None:
        artifact = home / "broken-artifact"
        artifact.mkdir(exist_ok=True)
        tracking.copy_version(settings, FAMILY, source=str(artifact), description=BROKEN)
    return settings


CANDIDATES = 4  # the faulty (errors, slow), healthy and interrupted candidates
BROKEN = "rollout drill: does not load"


def _versions(settings: Settings) -> tuple[list[str], str | None]:
    """The drill's good versions (oldest first) and the one that cannot load."""
    from training import tracking

    found = sorted(tracking.client(settings).search_model_versions(f"name='{FAMILY}'"), key=lambda v: int(v.version))
    broken = [str(v.version) for v in found if v.description == BROKEN]
    return [str(v.version) for v in found if v.description != BROKEN], (broken[0] if broken else None)


def _category(settings: Settings) -> str:
    """A category the forecaster knows, from the stable server's V2 metadata or a smoke request."""
    import httpx

    from zmlops import auth

    url = f"http://127.0.0.1:{settings.serving.ports[FAMILY]}/v1/models/{FAMILY}:predict"
    answer = httpx.post(url, json={"instances": [{"category": "?"}]}, headers=auth.headers(settings), timeout=5)
    if answer.status_code == 400:  # naming the known categories
        return str(answer.json()["error"].split("known: ")[1].split(",")[0].strip())
    raise RuntimeError(f"the forecaster answered {answer.status_code} to an unknown category")


def run_drills(settings: Settings, rate: float = 250.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every drill once; returns the figures by drill."""
    good, broken = _versions(settings)
    assert broken is not None and len(good) > CANDIDATES, "prepare() makes the drill's versions"
    good = [good[0], *good[-CANDIDATES:]]  # the trained stable version and the candidates prepare() just copied
    rollout = Rollout(settings)
    results: dict[str, Any] = {}
    say(f"serving v{good[0]} behind haproxy on 127.0.0.1:{settings.serving.ports[FAMILY]}")
    rollout.serve(FAMILY, good[0])
    body: dict[str, object] = {"instances": [{"category": _category(settings), "horizon": 4}]}
    from zmlops import auth

    load = Load(settings.serving.ports[FAMILY], f"/v1/models/{FAMILY}:predict", body, rate=rate,
                headers=auth.headers(settings)).start()
    try:
        time.sleep(2)

        say(f"drill: candidate v{broken} never turns ready")
        t0 = time.monotonic()
        out = rollout.deploy(FAMILY, broken)
        answers = load.between(t0, time.monotonic())
        results["unready"] = {"result": out.result, "requests": len(answers), "failed": load.failed(answers),
                              "served_by_candidate": load.versions(answers).get(broken, 0), "why": out.reason,
                              "seconds": round(out.seconds, 1)}

        for name, version in (("errors_5pct", good[1]), ("slow_5x", good[2])):
            if name == "slow_5x":
                delay = slow_delay(load, good[0])
                env, extra = {**FAULTS["slow"], "ZM_DRILL_DELAY_SECONDS": f"{delay:.4f}"}, {"delay_ms": delay * 1000}
            else:
                env, extra = {**FAULTS["failing"], "ZM_DRILL_ERROR_EVERY": "20"}, {}
            late = f" (answers {extra['delay_ms']:.1f} ms late)" if extra else ""
            say(f"drill: candidate v{version} with fault {name}{late}")
            t0 = time.monotonic()
            out = rollout.deploy(FAMILY, version, env)
            t1 = time.monotonic()
            answers = load.between(t0, t1)
            first = next((a.at for a in answers if a.version == version or a.status >= 500), None)
            results[name] = {"version": version, "result": out.result, "reason": out.reason,
                             **{k: round(v, 2) for k, v in extra.items()},
                             "failed": load.failed(answers),
                             "requests": len(answers),
                             "seconds_to_rollback": round(t1 - first, 1) if first else None}

        say(f"drill: healthy candidate v{good[3]} through the deploy step: it waits for the review board, is "
            "approved, then 10 -> 50 -> 100%")
        results["healthy"] = _approved_drill(settings, load, good[3])

        say(f"drill: the controller rolling out v{good[4]} killed at 10%; the next start ends its rollout")
        results["interrupted"] = _interrupted_drill(settings, load, good[4], say)

        say(f"drill: manual rollback to the warm v{good[0]}, with MLflow unreachable")
        offline = Rollout(settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9"}))
        os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
        t0 = time.monotonic()
        out = offline.rollback(FAMILY, "drill: manual rollback")
        for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
            os.environ.pop(var, None)
        time.sleep(2)
        answers = load.between(t0, time.monotonic())
        results["manual_rollback"] = {"result": out.result, "seconds": round(out.seconds, 2),
                                      "registry": offline.decisions(FAMILY)[-1].get("registry"),
                                      "failed": load.failed(answers),
                                      "served_after": dict(load.versions(load.between(t0 + out.seconds + 0.5,
                                                                                       time.monotonic())))}
        say("MLflow is back: the next start reconciles the registry with what is served")
        results["reconciled"] = rollout.reconcile(FAMILY)
        results["replicas"] = _replica_drills(rollout, settings, load, good[0], say)
    finally:
        load.stop()
        rollout.shutdown(FAMILY)
        rollout.backend.proxy.stop()
    return results


SLOWER = 5.0  # the slow candidate's answers come this many times the stable version's p99 late


def slow_delay(load: Load, stable: str, seconds: float = 5.0) -> float:
    """The slow candidate's delay: ``SLOWER`` times the p99 latency the load generator saw from the stable version
    over the last ``seconds`` (at least 1 ms). Measured, not fixed, because a busy machine's scheduling can put the
    stable version's p99 anywhere from under a millisecond to tens of them; a multiple of the predictor's own time
    (a forecast takes well under a millisecond of it) would vanish in that noise and test nothing."""
    now = time.monotonic()
    answers = [a for a in load.between(now - seconds, now) if a.version == stable]
    return max(SLOWER * Load.p99_seconds(answers), 0.001)


def _approved_drill(settings: Settings, load: Load, version: str) -> dict[str, Any]:
    """The training DAG's deploy step (:func:`delivery.promotion.deploy`) with approval required: unanswered,
    nothing starts; approved (as ``drill-approver``), the canary runs. Step times from the audit trail."""
    import datetime as dt

    from delivery.promotion import deploy
    from governance import approval, audit
    from zmlops.settings import ApprovalSettings

    board = settings.model_copy(update={"approval": ApprovalSettings(required=True)})
    staged = {"family": FAMILY, "version": version, "decision": "staged"}
    waiting = deploy(board, staged)
    started_before = audit.entries(settings, "rollout.rollout_started", audit.model_subject(FAMILY, version))
    approval.decide(board, FAMILY, version, True, "drill-approver", "drill: the figures pass")
    wall0, t0 = time.time(), time.monotonic()
    done = deploy(board, staged)
    t1 = time.monotonic()
    marks = {int(e.details["what"].split()[1].rstrip("%")):
             t0 + dt.datetime.fromisoformat(e.created_at).timestamp() - wall0
             for e in audit.entries(settings, "rollout.traffic", audit.model_subject(FAMILY, version))
             if dt.datetime.fromisoformat(e.created_at).timestamp() >= wall0}
    answers = load.between(t0, t1)
    at10 = load.between(marks[10], marks[50]) if 10 in marks and 50 in marks else []
    served = load.versions(at10)
    return {"version": version, "before_approval": waiting["why"], "canary_before_approval": len(started_before),
            "result": done.get("rollout"), "deployed": done["deployed"], "failed": load.failed(answers),
            "requests": len(answers), "requests_at_10pct": sum(served.values()),
            "candidate_share_at_10pct": round(served.get(version, 0) / max(sum(served.values()), 1), 4),
            "seconds": done.get("seconds")}


def _interrupted_drill(settings: Settings, load: Load, version: str, say: Callable[[str], None]) -> dict[str, Any]:
    """``zm rollout deploy`` in its own process, SIGKILLed once the candidate serves 10%; then a new controller
    starts (``reconcile``). The killed controller's candidate keeps serving its share until then."""
    import signal

    from governance import audit

    subject = audit.model_subject(FAMILY, version)
    seen = len(audit.entries(settings, "rollout.traffic", subject))
    r = settings.rollout
    env = {**os.environ, "ZM_HOME": str(settings.home.resolve()), "ZM_ROLLOUT__WINDOW_SECONDS": str(r.window_seconds),
           "ZM_ROLLOUT__CHECKS_PER_STEP": "1000", "ZM_ROLLOUT__READY_TIMEOUT_SECONDS": str(r.ready_timeout_seconds)}
    zm = str(Path(sys.prefix) / "bin" / "zm")
    controller = subprocess.Popen([zm, "rollout", "deploy", FAMILY, version], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + r.ready_timeout_seconds + 30
    while len(audit.entries(settings, "rollout.traffic", subject)) == seen:
        if controller.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the controller never routed 10% to v{version} (exit {controller.poll()})")
        time.sleep(0.2)
    time.sleep(2)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    rollout = Rollout(settings)
    left = rollout.state(FAMILY).candidate
    assert left is not None
    t0 = time.monotonic()
    orphan_share = load.versions(load.between(t0 - 1.5, t0)).get(version, 0)
    say(f"   killed; candidate pid {left.pid} still serves ({orphan_share} requests in the last 1.5 s); restarting")
    rollout.reconcile(FAMILY)
    t1 = time.monotonic()
    time.sleep(2)
    after = load.between(t1 + 0.5, time.monotonic())
    ended = [d for d in rollout.decisions(FAMILY) if d["version"] == version][-1]
    return {"version": version, "orphan_requests": orphan_share,
            "candidate_alive_after": rollout.backend.alive(left.pid), "served_after": dict(load.versions(after)),
            "failed": load.failed(load.between(t0 - 2, time.monotonic())), "seconds": round(t1 - t0, 2),
            "decision": {k: ended[k] for k in ("what", "why")},
            "candidate_in_state_after": rollout.state(FAMILY).candidate is not None}


def _replica_drills(rollout: Rollout, settings: Settings, load: Load, version: str,
                    say: Callable[[str], None]) -> dict[str, Any]:
    """Two replicas of the stable version at 50/50; one killed with SIGKILL, later one with SIGTERM."""
    backend = rollout.backend
    state = rollout.state(FAMILY)
    assert state.stable is not None
    first = state.stable
    out: dict[str, Any] = {}
    for sig in ("SIGKILL", "SIGTERM"):
        spare = next(s for s in ("a", "b", "c") if s != first.slot)
        pid = backend.start(FAMILY, spare, version)
        if not backend.wait_ready(FAMILY, spare, pid, settings.rollout.ready_timeout_seconds):
            raise RuntimeError("second replica did not become ready")
        backend.set_traffic(FAMILY, {first.slot: 50, spare: 50})
        time.sleep(3)
        retries_before = _retries(rollout)
        say(f"drill: {sig} to one of two replicas (port {slot_port(settings, FAMILY, spare)})")
        t0 = time.monotonic()
        backend.stop(pid, kill=(sig == "SIGKILL"))
        time.sleep(3)
        answers = load.between(t0, time.monotonic())
        out[sig] = {"failed": load.failed(answers), "requests": len(answers),
                    "proxy_retries": _retries(rollout) - retries_before,
                    "failed_statuses": sorted({f"{a.status} {a.error}" for a in answers
                                               if a.status == 0 or a.status >= 500})}
        backend.set_traffic(FAMILY, {first.slot: 100})
    return out


def _retries(rollout: Rollout) -> int:
    rows = rollout.backend.proxy.servers(FAMILY)
    return sum(int(r.get("wretr") or 0) + int(r.get("wredis") or 0) for r in rows.values())
