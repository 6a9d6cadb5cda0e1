"""Rollout drills on the local backend, under steady load on loopback (``zm rollout drills``, ``make drills``).

Each drill runs the real thing: KServe ModelServer processes for the demand forecaster behind HAProxy,
the rollout controller, a paced load generator counting every answer, and faults injected into the
candidate through the serving settings (``ZM_SERVING__FAULT_ERROR_EVERY``, ``ZM_SERVING__FAULT_DELAY_FACTOR``).

- unready candidate (an artifact that does not load): 0 requests reach it, 0 failed requests;
- candidate failing 5% of requests, and a 5x slower candidate: rolled back, seconds from the first
  request it received to the rollback and failed client requests counted (targets 40 s, 10);
- healthy candidate: promoted 10 -> 50 -> 100% with 0 failed requests; the share it served at 10%;
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

from zmlops.rollout.controller import Rollout
from zmlops.rollout.haproxy import slot_port
from zmlops.rollout.load import Load
from zmlops.settings import RolloutSettings, Settings

__all__ = ["prepare", "run_drills", "DRILL_ROLLOUT"]

FAMILY = "demand-forecast"
# Short windows so a drill takes seconds, not minutes (three per step: at 250 requests/s the 10% step
# sees over 2,000 requests); the limits are the production defaults.
# A generous ready timeout: on a busy machine a healthy candidate takes a while to load; the unready one
# exits as soon as its artifact fails to load, so the drill does not wait for the timeout.
DRILL_ROLLOUT = {"window_seconds": 3.0, "checks_per_step": 3, "failed_checks": 2, "ready_timeout_seconds": 60.0}


def prepare(home: Path, say: Callable[[str], None] = print) -> Settings:
    """A ZM_HOME with the forecaster trained (v1), three copies (v2-v4) and a version that cannot load."""
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
    versions = tracking.client(settings).search_model_versions(f"name='{FAMILY}'")
    if len(versions) < 4:
        first = min(versions, key=lambda v: int(v.version))
        for _ in range(3 - len(versions) + 1):
            tracking.copy_version(settings, FAMILY, str(first.version))
        broken = home / "broken-artifact"
        broken.mkdir(exist_ok=True)
        tracking.copy_version(settings, FAMILY, source=str(broken), description="rollout drill: does not load")
    return settings


def _category(settings: Settings) -> str:
    """A category the forecaster knows, from the stable server's V2 metadata or a smoke request."""
    import json
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{settings.serving.ports[FAMILY]}/v1/models/{FAMILY}:predict"
    req = urllib.request.Request(url, data=json.dumps({"instances": [{"category": "?"}]}).encode(),
                                 headers={"content-type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310 - loopback
    except urllib.error.HTTPError as err:  # 400 naming the known categories
        message = json.loads(err.read())["error"]
        return str(message.split("known: ")[1].split(",")[0].strip())
    raise RuntimeError("the forecaster accepted an unknown category")


def run_drills(settings: Settings, rate: float = 250.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every drill once; returns the figures by drill."""
    from training import tracking

    versions = sorted(int(v.version) for v in tracking.client(settings).search_model_versions(f"name='{FAMILY}'"))
    good = [str(v) for v in versions[:-1]]
    broken = str(versions[-1])
    rollout = Rollout(settings)
    results: dict[str, Any] = {}
    say(f"serving v{good[0]} behind haproxy on 127.0.0.1:{settings.serving.ports[FAMILY]}")
    rollout.serve(FAMILY, good[0])
    body: dict[str, object] = {"instances": [{"category": _category(settings), "horizon": 4}]}
    load = Load(settings.serving.ports[FAMILY], f"/v1/models/{FAMILY}:predict", body, rate=rate).start()
    try:
        time.sleep(2)

        say(f"drill: candidate v{broken} never turns ready")
        t0 = time.monotonic()
        out = rollout.deploy(FAMILY, broken)
        answers = load.between(t0, time.monotonic())
        results["unready"] = {"result": out.result, "requests": len(answers), "failed": load.failed(answers),
                              "served_by_candidate": load.versions(answers).get(broken, 0), "why": out.reason,
                              "seconds": round(out.seconds, 1)}

        for name, env, version in (("errors_5pct", {"ZM_SERVING__FAULT_ERROR_EVERY": "20"}, good[1]),
                                   ("slow_5x", {"ZM_SERVING__FAULT_DELAY_FACTOR": "5"}, good[2])):
            say(f"drill: candidate v{version} with fault {name}")
            t0 = time.monotonic()
            out = rollout.deploy(FAMILY, version, env)
            t1 = time.monotonic()
            answers = load.between(t0, t1)
            first = next((a.at for a in answers if a.version == version or a.status >= 500), None)
            results[name] = {"version": version, "result": out.result, "reason": out.reason,
                             "failed": load.failed(answers),
                             "requests": len(answers),
                             "seconds_to_rollback": round(t1 - first, 1) if first else None}

        say(f"drill: healthy candidate v{good[3]}, 10 -> 50 -> 100%")
        t0 = time.monotonic()
        out = rollout.deploy(FAMILY, good[3])
        t1 = time.monotonic()
        answers = load.between(t0, t1)
        marks = out.step_started
        at10 = load.between(marks[10], marks[50]) if 10 in marks and 50 in marks else []
        served = load.versions(at10)
        results["healthy"] = {
            "version": good[3], "result": out.result, "failed": load.failed(answers), "requests": len(answers),
            "requests_at_10pct": sum(served.values()),
            "candidate_share_at_10pct": round(served.get(good[3], 0) / max(sum(served.values()), 1), 4),
            "seconds": round(out.seconds, 1),
        }

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
