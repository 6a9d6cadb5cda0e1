"""The whole loop in the Kubernetes topology, as an operator and a client application would drive it.

data delivery (a one-off pod) -> the DAGs unpaused (the scheduler starts the training DAG) -> three
models served -> client traffic -> a drifted delivery -> the monitoring DAG -> its numbers pushed,
scraped by Prometheus and judged by the chart's own rules -> Alertmanager -> the alert receiver ->
the training DAG (and the monitoring DAG's own re-entry) -> new versions promoted -> served. Then every
workload's working directory is deleted and every workload restarted: the same versions serve and the
next DAG run succeeds. With ``wipe_between_steps`` the working directories are also deleted between
the steps, so no step can lean on a file an earlier one left on a pod's disk.

Used by ``tests/stack/`` (which asserts on what it returns) and by ``python -m benchmarks`` (its timings).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from stack.client import Control
from zmlops import catalog
from zmlops.polling import until

__all__ = ["LoopSize", "run_loop", "FAMILIES", "TRAINING", "MONITORING"]

FAMILIES = catalog.FAMILIES
TRAINING, MONITORING = "zmlops_training", "zmlops_monitoring"
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
MLFLOW = "http://zm-mlflow.mlops.svc:5000"
FEATURE_SERVER = "http://zm-feature-server.mlops.svc:6566"
ANALYSTS_UI = "http://zm-analysts-ui.mlops.svc:8000"
AIRFLOW_API = "http://airflow-api-server:8080"
# Airflow's UI API: a router outside its OpenAPI document (it authenticates every route by construction); its
# route table as the api-server's own code has it, read in a pod of the image
UI_ROUTES = ("import json; from airflow.api_fastapi.core_api.routes.ui import ui_router as r; "
             "print(json.dumps([[m, x.path] for x in r.routes for m in sorted(x.methods - {'HEAD', 'OPTIONS'})]))")


@dataclass(frozen=True)
class LoopSize:
    """How much traffic, and whether disks are wiped between the steps (the data's size is the delivery
    command of docs/install.md, which the drifted delivery continues)."""

    requests: int = 60
    wipe_between_steps: bool = False


@dataclass
class Loop:
    control: Control
    size: LoopSize
    say: Callable[[str], None] = print
    steps: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    approved: list[dict[str, Any]] = field(default_factory=list)
    outsider: list[int] = field(default_factory=list)  # what the board's approval task answered the Admin
    clients: dict[str, Any] = field(default_factory=dict)  # Airflow's API per user, each keeping its token

    # ------------------------------------------------------------------ plumbing
    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.monotonic()
        self.say(f">> {name}")
        out = fn()
        self.steps[name] = round(time.monotonic() - t, 1)
        self.say(f"   done in {self.steps[name]:.0f} s")
        return out

    def stack(self, command: str, *args: str) -> str:
        """``python -m stack COMMAND --root ROOT ARGS`` (the CLI an operator uses); its output."""
        argv = [sys.executable, "-m", "stack", command, "--root", str(self.control.layout.root), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[3:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def airflow(self) -> Any:
        """Airflow's REST API as its Admin."""
        return self.airflow_user("admin")

    def approver(self) -> Any:
        """The review board's member (docs/install.md creates ``approver`` in the role ``model-approvers``)."""
        return self.airflow_user("approver")

    def airflow_user(self, name: str) -> Any:
        """Airflow's REST API as one of docs/install.md's users (password from the Secret airflow-users), one client
        per user: it keeps its token for five minutes, where a new client would ask for one at every poll (each a
        password check, about 0.1 CPU-s of the API server's scrypt)."""
        if name in self.clients:
            return self.clients[name]
        from pydantic import SecretStr

        from zmlops.airflow_client import AirflowAPI
        from zmlops.settings import AirflowSettings, Settings

        cfg = AirflowSettings(api_url="http://airflow-api-server:8080", username=name,
                              password=SecretStr(self.control.secret("airflow-users", f"{name}-password")))
        self.clients[name] = AirflowAPI(Settings().model_copy(update={"airflow": cfg}))
        return self.clients[name]

    def airflow_routes(self) -> dict[str, Any]:
        """Airflow's API server, route by route without credentials: its public API and FAB's (their OpenAPI
        documents) and its UI API (Airflow's router). Returns how many routes and those that answered."""
        import re

        routes = [(m.upper(), p) for p, item in httpx.get(f"{AIRFLOW_API}/openapi.json", timeout=30).json()["paths"]
                  .items() for m in item if m in ("get", "post", "put", "patch", "delete")]
        routes += [(m.upper(), "/auth" + p) for p, item in
                   httpx.get(f"{AIRFLOW_API}/auth/openapi.json", timeout=30).json()["paths"].items() for m in item]
        printed = self.stack("exec", "airflow-scheduler", "python", "-c", UI_ROUTES).strip().splitlines()[-1]
        routes += [(m, p) for m, p in json.loads(printed)]  # the last line: warnings come before it
        answered = {}
        with httpx.Client(base_url=AIRFLOW_API, timeout=30) as http:
            for method, path in routes:
                status = http.request(method, re.sub(r"\{[^}]+\}", "x", path), json={}).status_code
                if status not in (401, 403):
                    answered[f"{method} {path}"] = status
        return {"routes": len(routes), "answered": answered}

    def roles(self) -> dict[str, dict[str, int]]:
        """What each of docs/install.md's people may do in Airflow: read the training DAG's runs, and clear them
        (a dry run: nothing changes)."""
        from zmlops.airflow_client import UNAVAILABLE, refused_status

        def status(call: Callable[[], object]) -> int:
            try:
                call()
            except UNAVAILABLE as refused:
                return refused_status(refused) or 0
            return 200

        people = {user: self.airflow_user(user) for user in ("analyst", "engineer", "admin")}
        return {user: {"read runs": status(partial(api.runs, TRAINING)),
                       "clear runs": status(partial(api.clear, TRAINING, dry_run=True))}
                for user, api in people.items()}

    def approve_waiting(self) -> None:
        """Answer every approval task the training DAG waits on (Approve, as the board's member), after the
        Admin, who does not hold the role, tried to answer first and was refused (the status is kept)."""
        from zmlops.airflow_client import UNAVAILABLE, refused_status

        board, admin = self.approver(), self.airflow()
        for waiting in board.approvals(TRAINING):
            try:
                admin.answer(waiting, "Approve", "stack loop: not a member of the board")
                self.outsider.append(200)
            except UNAVAILABLE as refused:
                self.outsider.append(refused_status(refused) or 0)
            board.answer(waiting, "Approve", "stack loop: the figures pass")
            self.approved.append({"run": waiting["task_instance"]["dag_run_id"], "subject": waiting["subject"]})
            self.say(f"   approved as approver: {waiting['subject']}")

    def client_headers(self) -> dict[str, str]:
        """A client application's key for the predictors (the Secret's serving-client-key)."""
        return {"authorization": f"Bearer {self.control.secret('zero-margin-secrets', 'serving-client-key')}"}

    def mlflow(self) -> Any:
        """MLflow as the predictors read it: the read-only service account serving."""
        import os

        import mlflow

        os.environ["MLFLOW_TRACKING_USERNAME"] = "serving"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = self.control.secret("zero-margin-secrets", "mlflow-serving-password")
        return mlflow.MlflowClient(tracking_uri=MLFLOW)

    def wipe(self, why: str) -> None:
        """Delete every workload's working directory (pods' disks) and restart them all."""
        self.say(f"   wiping every workload's disk and restarting it ({why})")
        self.control.restart(None, wipe=True)
        self.control.wait_ready(600, names=[p for p in self.workloads() if not p.endswith("-predictor")])

    def workloads(self) -> list[str]:
        return [p["name"] for p in self.control.status()["processes"] if p["group"] != "backing"]

    # ------------------------------------------------------------------ the steps
    def ingest_next(self, scenario: str, weeks: int = 8) -> str:
        """The next delivery of the same simulated world (docs/install.md's first delivery, continued under a
        drift scenario), from a one-off pod; returns the current data version after its gate."""
        import shlex

        from stack import install_doc

        first = next(c for c in install_doc.commands() if c.text.startswith("zm data ingest"))
        out = self.stack("run", "--", *shlex.split(first.text), "--then", f"{weeks}:{scenario}")
        line = next(x for x in out.splitlines() if "current data version" in x)
        return line.rsplit(" ", 1)[-1]

    def production(self) -> dict[str, str | None]:
        client = self.mlflow()
        out: dict[str, str | None] = {}
        for f in FAMILIES:
            try:
                out[f] = str(client.get_model_version_by_alias(f, "production").version)
            except Exception:  # noqa: BLE001 - MLflow answers an unknown alias with an exception
                out[f] = None
        return out

    def served(self) -> dict[str, str]:
        out = {}
        for f in FAMILIES:
            try:
                r = httpx.post(f"http://{f}-predictor.mlops.svc:8080/v1/models/{f}:predict",
                               json={"instances": [catalog.entry(f).example]}, headers=self.client_headers(),
                               timeout=5)
                out[f] = r.headers.get("x-model-version", f"HTTP {r.status_code}")
            except httpx.HTTPError as error:
                out[f] = type(error).__name__
        return out

    def wait_served(self, wanted: dict[str, str | None], timeout: float = 300) -> dict[str, str]:
        served: dict[str, str] = {}

        def serving_wanted() -> bool:
            nonlocal served
            served = self.served()
            return all(served.get(f) == v for f, v in wanted.items())

        if not until(serving_wanted, timeout, 2):
            raise TimeoutError(f"served {served}, wanted {wanted}")
        return served

    def wait_runs(self, dag: str, count: int, timeout: float = 1200) -> list[dict[str, Any]]:
        """Wait until the DAG has at least ``count`` runs and none is unfinished; returns them, newest first."""
        api, runs = self.airflow(), list[dict[str, Any]]()

        def ended() -> bool:
            nonlocal runs
            if dag == TRAINING:
                self.approve_waiting()
            runs = list(api.runs(dag))
            return len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs)

        if not until(ended, timeout, 3):
            raise TimeoutError(f"{dag}: runs {[(r['run_type'], r['state']) for r in runs]}")
        return runs

    def customers(self, count: int) -> list[int]:
        """Customer ids of the published feature tables (the object store), a fixed sample."""
        import pandas as pd

        keys = json.loads(self.control.layout.secrets.read_text())["zero-margin-secrets"]
        s3 = {"key": keys["s3-access-key-id"], "secret": keys["s3-secret-access-key"],
              "client_kwargs": {"endpoint_url": "http://zm-s3.mlops.svc:9000"}}
        customers = pd.read_parquet("s3://zero-margin-state/feast/sources/customer_features.parquet",
                                    columns=["customer_id"], storage_options=s3)["customer_id"].drop_duplicates()
        return [int(c) for c in customers.sample(min(len(customers), count), random_state=1)]

    def feature_server(self) -> dict[str, Any]:
        """An analyst's tool reads online features through the Feast feature server with an access token of the
        identity provider (client credentials, stack/oidc.py); without a token it is refused."""
        from stack.backing import OIDC_ISSUER

        client = json.loads(self.control.secret("zm-oidc", "clients"))[0]
        token = httpx.post(f"{OIDC_ISSUER}/token", data={"grant_type": "client_credentials"},
                           auth=(client["client_id"], client["client_secret"]), timeout=10).json()["access_token"]
        body = {"features": ["customer_profile:frequency"], "entities": {"customer_id": self.customers(3)}}
        url = f"{FEATURE_SERVER}/get-online-features"
        answer = httpx.post(url, json=body, headers={"authorization": f"Bearer {token}"}, timeout=30)
        present = answer.status_code == 200 and all(
            s == "PRESENT" for r in answer.json()["results"][1:] for s in r["statuses"])
        return {"anonymous": httpx.post(url, json=body, timeout=30).status_code, "with token": answer.status_code,
                "present": present}

    def analysts_ui(self) -> dict[str, Any]:
        """An analyst opens the chart's Evidently UI after a monitoring run: no answer without a user of the userlist
        `analysts` (but the probe's route), reads only, and the three models' projects as the monitoring DAG wrote
        them to the object store (the UI's pod serves a copy, refreshed)."""
        from zmlops.polling import until

        user = ("analyst", self.control.secret("analysts-ui-users", "analyst-password"))

        def projects() -> list[str] | None:
            answer = httpx.get(f"{ANALYSTS_UI}/api/projects", auth=user, timeout=10)
            names = sorted(p["name"] for p in answer.json()) if answer.status_code == 200 else []
            return names if len(names) >= len(FAMILIES) else None

        return {"anonymous": httpx.get(f"{ANALYSTS_UI}/api/projects", timeout=10).status_code,
                "probe": httpx.get(f"{ANALYSTS_UI}/api/version", timeout=10).status_code,
                "projects": until(projects, 120, 2),
                "write": httpx.post(f"{ANALYSTS_UI}/api/projects", auth=user, json={}, timeout=10).status_code}

    def traffic(self) -> dict[str, Any]:
        """Client requests; segmentation's come from one segment only (a campaign aimed at one group), which
        moves the served segment shares away from the training shares."""
        ids = self.customers(self.size.requests * 3)
        failed, segments = 0, dict[str, list[int]]()
        with httpx.Client(timeout=10, headers=self.client_headers()) as http:
            for c in ids:
                r = http.post("http://customer-segmentation-predictor.mlops.svc:8080/v1/models/"
                              "customer-segmentation:predict", json={"instances": [{"customer_id": c}]})
                failed += r.status_code != 200
                if r.status_code == 200:
                    segments.setdefault(r.json()["predictions"][0]["segment"], []).append(c)
            target = max(segments, key=lambda k: len(segments[k]))
            for i in range(self.size.requests):
                c = segments[target][i % len(segments[target])]
                for f, row in (("customer-segmentation", {"customer_id": c}),
                               ("product-recommendation", {"customer_id": ids[i], "k": 10}),
                               ("demand-forecast", {"category": "kitchen", "horizon": 4})):
                    r = http.post(f"http://{f}-predictor.mlops.svc:8080/v1/models/{f}:predict",
                                  json={"instances": [row]})
                    failed += r.status_code != 200
        return {"failed": failed, "segment": target, "requests": len(ids) + 3 * self.size.requests}

    def alerts(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{PROMETHEUS}/api/v1/alerts", timeout=10)
        return list(r.json()["data"]["alerts"])

    def wait_alert(self, name: str, timeout: float = 300) -> dict[str, Any]:
        firing = until(lambda: [a for a in self.alerts()
                                if a["labels"].get("alertname") == name and a["state"] == "firing"], timeout, 3)
        if not firing:
            raise TimeoutError(f"{name} did not fire; alerts: {[(a['labels'], a['state']) for a in self.alerts()]}")
        return firing[0]

    def retrain_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.airflow().asset_events(limit=100)
        return events


def run_loop(control: Control, size: LoopSize = LoopSize(), say: Callable[[str], None] = print) -> dict[str, Any]:
    """Drive the loop on a running topology; returns what happened and how long each step took.

    Every workload's disk is wiped and every workload restarted once the first versions serve, before the
    drifted delivery: the same versions must serve and every later step (the monitoring DAG, the alert path,
    the retraining) runs on empty disks. With ``size.wipe_between_steps`` the disks are also wiped after the
    first delivery and the drifted one, and once more at the end before a last training run.
    """
    from stack import install_doc

    loop = Loop(control, size, say)
    wipe = size.wipe_between_steps
    out: dict[str, Any] = {"size": size.__dict__}
    out["install"] = loop.step("docs/install.md, first run: users, delivery v1, feature store, DAGs unpaused",
                               lambda: [c.text for c in install_doc.run(control, "4.", say)])
    if wipe:
        loop.wipe("after the first delivery")
    api = loop.airflow()

    def first_training() -> dict[str, str | None]:
        # unpaused, the scheduler starts the last missed weekly run; one that waits for the next weekly slot: by hand
        if not until(lambda: api.runs(TRAINING), 90, 2):
            api.trigger(TRAINING, {"reason": "first training"})
        runs = loop.wait_runs(TRAINING, 1)
        if runs[0]["state"] != "success":
            raise RuntimeError(f"the first training run failed: {runs[0]['dag_run_id']}")
        production = loop.production()
        loop.wait_served(production)
        return production

    out["production_v1"] = loop.step("the scheduler trains; the predictors load production", first_training)
    out["roles"] = loop.step("Airflow's roles: who may read and who may clear the training DAG's runs", loop.roles)
    out["airflow_routes"] = loop.step("Airflow's routes without credentials", loop.airflow_routes)
    out["traffic"] = loop.step("client traffic (logged to the object store)", loop.traffic)
    out["feature_server"] = loop.step("an analyst's tool reads features through the feature server (OIDC token)",
                                      loop.feature_server)
    time.sleep(control_flush_seconds(control) + 1)  # the request log's last batch reaches the store

    def wipe_and_restart() -> dict[str, str]:
        loop.wipe("every working directory deleted, every workload restarted")
        return loop.wait_served(out["production_v1"])

    out["after_wipe"] = loop.step("every disk wiped, every workload restarted: the same versions serve",
                                  wipe_and_restart)
    out["v2"] = loop.step("data delivery v2 (a one-off pod): a new design line arrives (drift)",
                          lambda: loop.ingest_next("new_product_mix"))
    if wipe:
        loop.wipe("after the drifted delivery")

    def monitoring() -> dict[str, Any]:
        run = api.trigger(MONITORING, {})
        done = api.wait(MONITORING, run, timeout=900)
        return {"run": run, "state": done["state"]}

    out["monitoring"] = loop.step("monitoring DAG (the first run on wiped disks): checks, reports, metrics pushed",
                                  monitoring)
    out["analysts_ui"] = loop.step("an analyst opens the Evidently UI: a project per model, behind basic auth",
                                   loop.analysts_ui)
    out["alert"] = loop.step("Prometheus fires ZmServedSegmentShift on the scraped numbers",
                             lambda: loop.wait_alert("ZmServedSegmentShift")["labels"])

    def re_entry() -> dict[str, Any]:
        """The receiver's event and the monitoring DAG's own, then every training run they created, ended (a run
        count would not do: the scheduler may start one run for two events or one run each, at any moment)."""
        events: list[dict[str, Any]] = []
        reasons: list[str] = []
        runs: list[dict[str, Any]] = []

        def ended() -> bool:
            nonlocal events, reasons, runs
            loop.approve_waiting()
            events = [e for e in loop.retrain_events() if e["uri"].startswith(catalog.RETRAIN_ASSET_PREFIX)]
            reasons = [str((e.get("extra") or {}).get("reason", "")) for e in events]
            created = [r["run_id"] for e in events for r in e.get("created_dagruns", [])]
            runs = [r for r in api.runs(TRAINING) if r["dag_run_id"] in created]
            return (any(r.startswith("alert ") for r in reasons) and any(r.startswith("drift:") for r in reasons)
                    and all(e.get("created_dagruns") for e in events)
                    and all(r["state"] in ("success", "failed") for r in runs))

        if not until(ended, 1200, 3):
            raise TimeoutError(f"retrain events {reasons}, their runs {[(r['dag_run_id'], r['state']) for r in runs]}")
        return {"events": [{"uri": e["uri"], "reason": (e.get("extra") or {}).get("reason"),
                            "runs": [r["run_id"] for r in e.get("created_dagruns", [])]} for e in events],
                "runs": [{"id": r["dag_run_id"], "type": r["run_type"], "state": r["state"]} for r in runs]}

    out["re_entry"] = loop.step("Alertmanager -> receiver -> training DAG (and the monitoring DAG's own event)",
                                re_entry)
    out["production_v2"] = loop.production()
    out["served_v2"] = loop.step("the predictors serve the new production versions",
                                 lambda: loop.wait_served(out["production_v2"]))
    out["sink"] = received(control)
    out["upgrade"] = loop.step("docs/install.md, upgrade: MLflow's schema migration",
                               lambda: [c.text for c in install_doc.run(control, "Upgrade", say)])
    if wipe:
        def last_run() -> dict[str, Any]:
            loop.wipe("the final check")
            served = loop.wait_served(out["production_v2"])
            run = api.trigger(TRAINING, {"reason": "after every disk was wiped"})
            return {"served": served, "state": api.wait(TRAINING, run, timeout=900)["state"]}

        out["final"] = loop.step("every disk wiped again; the next training run", last_run)
    out["approved"], out["outsider"] = loop.approved, loop.outsider
    out["audit"] = control_audit(control)
    out["steps"] = loop.steps
    out["seconds"] = round(time.monotonic() - loop.started, 1)
    status = control.status()
    out["peak_rss_mb"] = status["peak_rss_mb"]
    out["cpu_seconds"] = {p["name"]: p["cpu_seconds"] for p in status["processes"]}  # up and loop, per workload
    return out


def control_audit(control: Control) -> dict[str, Any]:
    """The audit trail as ``zm audit`` shows it in a pipelines pod: the verification and the actions."""
    verify = subprocess.run([sys.executable, "-m", "stack", "exec", "--root", str(control.layout.root),
                             "airflow-scheduler", "--", "zm", "audit", "verify"], capture_output=True, text=True,
                            check=False)
    export = subprocess.run([sys.executable, "-m", "stack", "exec", "--root", str(control.layout.root),
                             "airflow-scheduler", "--", "zm", "audit", "export"], capture_output=True, text=True,
                            check=False)
    entries = [json.loads(line) for line in export.stdout.splitlines() if line.startswith("{")]
    return {"verify_code": verify.returncode, "verify": verify.stdout[-500:],
            "actions": [(e["action"], e["subject"], e["actor"]) for e in entries]}


def control_flush_seconds(control: Control) -> float:
    env = control.specs()["product-recommendation-predictor"]["env"]
    return float(env.get("ZM_REQUEST_LOG__FLUSH_SECONDS", "10"))


def received(control: Control) -> list[dict[str, Any]]:
    """What the paging and chat sink received (Alertmanager's notifications)."""
    path = control.layout.services / "sink" / "received.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
