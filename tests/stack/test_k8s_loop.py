"""The whole loop in the Kubernetes topology, and no state on a pod's disk (issue 19).

The topology is the chart's own: every workload started with the command and environment of its rendered
manifest, Airflow with charts/airflow-values.yaml, real PostgreSQL, Redis, S3, git, Prometheus and
Alertmanager. `make test` runs the loop at its short size; `make test-all` (ZM_FULL=1) at full size, with
every workload's working directory deleted between the steps.
"""

from __future__ import annotations

import os

import pytest

from stack.client import Control
from stack.loop import FAMILIES, LoopSize, run_loop

pytestmark = [pytest.mark.stack, pytest.mark.e2e]
FULL = os.environ.get("ZM_FULL") == "1"


def test_the_loop_runs_in_the_topology_and_survives_wiped_disks(topology: Control) -> None:
    size = LoopSize(requests=150, wipe_between_steps=True) if FULL else LoopSize()
    out = run_loop(topology, size)
    print({k: out[k] for k in ("steps", "seconds", "peak_rss_mb")})
    # every command of docs/install.md that can run here ran (first run, and the upgrade's migration)
    from stack.install_doc import commands

    assert out["install"] + out["upgrade"] == [c.text for c in commands()]
    assert out["v2"] == "v2"
    assert all(out["production_v1"][f] for f in FAMILIES)
    # the k8s profile's review board: every staged version waited for the approver (role model-approvers), who
    # answered through Airflow's REST API; the audit trail shows each step with its actor and verifies
    assert len(out["approved"]) >= 2, out["approved"]
    assert out["outsider"] and set(out["outsider"]) == {403}  # the Admin is not on the board: refused each time
    # Airflow's roles: analysts (Viewer) read; ML engineers (User) and the Admin may also clear runs
    assert {u: c["read runs"] for u, c in out["roles"].items()} == dict.fromkeys(out["roles"], 200), out["roles"]
    assert {u: c["clear runs"] for u, c in out["roles"].items()} == {
        "analyst": 403, "engineer": 200, "admin": 200}, out["roles"]
    # Airflow's API server: every route of its public, FAB and UI APIs asks for credentials but the health check,
    # the version, the login and logout redirects and the token endpoints (which take the credentials)
    assert out["airflow_routes"]["routes"] > 150, out["airflow_routes"]
    assert set(out["airflow_routes"]["answered"]) <= {
        "GET /api/v2/monitor/health", "GET /api/v2/version", "GET /api/v2/auth/login", "GET /api/v2/auth/logout",
        "POST /auth/token", "POST /auth/token/cli", "GET /auth/logout"}, out["airflow_routes"]
    actions = out["audit"]["actions"]
    assert out["audit"]["verify_code"] == 0, out["audit"]
    assert {"data.created", "data.validated", "model.gated", "deploy.production_moved"} <= {a for a, _, _ in actions}
    started = {subject for a, subject, _ in actions if a == "workload.started"}  # each with its settings
    assert {"workload:zm-alert-receiver", "workload:zmlops_training", "workload:zmlops_monitoring",
            *(f"workload:{f}-predictor" for f in FAMILIES)} <= started, started
    approved = [(subject, actor) for a, subject, actor in actions if a == "model.approved"]
    assert len(approved) >= 4 and all(actor == "approver" for _, actor in approved), approved
    assert out["traffic"]["failed"] == 0
    # the Feast feature server checks the identity provider's tokens (feature_repo/permissions.py: feast-reader)
    assert out["feature_server"] == {"anonymous": 401, "with token": 200, "present": True}, out["feature_server"]
    # the analysts' Evidently UI (the chart's analysts-ui pod): the monitoring run's projects, behind basic auth
    assert out["analysts_ui"] == {"anonymous": 401, "probe": 200, "projects": sorted(FAMILIES), "write": 403}, \
        out["analysts_ui"]
    # the chart's rule fired on numbers the monitoring DAG pushed, and Alertmanager reached the receiver, which
    # re-entered the training DAG for segmentation; the monitoring DAG re-entered it for the recommender itself
    assert out["alert"]["model"] == "customer-segmentation" and out["alert"]["action"] == "retrain"
    # (a run that crosses midnight UTC also meets the monitoring DAG's @daily run, which may ask for more retraining)
    reasons: dict[str, list[str]] = {}
    for event in out["re_entry"]["events"]:
        reasons.setdefault(event["uri"].rsplit("/", 1)[-1], []).append(event["reason"])
    assert any(r.startswith("alert ZmServedSegmentShift") for r in reasons["customer-segmentation"]), reasons
    assert any(r.startswith("drift:") and "never saw" in r for r in reasons["product-recommendation"]), reasons
    assert all(r["state"] == "success" for r in out["re_entry"]["runs"])
    assert out["production_v2"]["product-recommendation"] != out["production_v1"]["product-recommendation"]
    assert out["served_v2"] == out["production_v2"]
    # Alertmanager's other routes: the chat receiver got the ticket (the harness's sink stands in for Slack)
    assert any(r["path"] == "/slack" and "ZmServedSegmentShift" in str(r["body"]) for r in out["sink"])
    # after every disk was wiped and every workload restarted: the same versions served, and every later DAG
    # run (monitoring, the retraining) ran on empty disks and succeeded
    assert out["after_wipe"] == out["production_v1"]
    assert out["monitoring"]["state"] == "success"
    if FULL:
        assert out["final"] == {"served": out["production_v2"], "state": "success"}
