"""The whole loop through Airflow (``make demo``): train, serve, drift, detect, retrain, serve again.

Airflow runs standalone on SQLite (started and stopped here), the three KServe services
run as local processes, and every step goes through the same code a cluster would run:
the training and monitoring DAGs, the retrain assets, the registry aliases the services
follow. The DAGs' clocks are turned off (``ZM_DAG_SCHEDULES=off``) so only this script and
the drift loop start runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from zmlops import auth
from zmlops.catalog import FAMILIES
from zmlops.console import console, step, table
from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["run_loop"]

REPO = Path(__file__).resolve().parents[1]
SERVING_PY = REPO / ".venvs" / "serving" / "bin" / "python"
SCENARIO = "new_product_mix"


def _airflow_env(settings: Settings, home: Path, passwords: Path) -> dict[str, str]:
    port = settings.airflow.api_url.rsplit(":", 1)[1].split("/")[0]
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "governance.board_auth.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow.username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": port,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow.api_url.rstrip('/')}/execution/",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "ZM_HOME": str(settings.home.resolve()),
        "ZM_SERVING__PORTS": json.dumps(settings.serving.ports),
        "ZM_DAG_SCHEDULES": "off",
        # the review board, answered by a named demo user (local profile only; docs/governance.md)
        "ZM_APPROVAL__REQUIRED": "true",
        "ZM_APPROVAL__AUTO_APPROVER": DEMO_APPROVER,
    }


DEMO_APPROVER = "demo-approver"


def _print_batch(settings: Settings) -> None:
    """What the score task wrote: each family's batch table, as planners and campaign tools would read it."""
    from training import batch

    for family in FAMILIES:
        table = batch.latest(settings, family)
        who = f"{table['customer_id'].nunique():,} customers" if "customer_id" in table else \
            f"{table['category'].nunique()} categories"
        console.print(f"   batch answers: {family} v{table['model_version'].iloc[0]} on "
                      f"{table['data_version'].iloc[0]}: {len(table):,} rows for {who} (object store batch/{family}/)")


def _print_approvals(settings: Settings, shown: set[int]) -> None:
    """The review board's answers not in ``shown`` yet (the demo approves as a named user: say so)."""
    from governance import audit

    for e in audit.entries(settings, "model.approved"):
        if e.seq not in shown:
            shown.add(e.seq)
            console.print(f"   review board: {e.subject} approved by {e.actor} ({e.details.get('why', '')})")


@contextlib.contextmanager
def airflow_standalone(settings: Settings) -> Iterator[Any]:
    """``airflow standalone`` for the duration of the block; yields an authenticated API client."""
    from zmlops.airflow_client import UNAVAILABLE, AirflowAPI

    home = settings.home.resolve() / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    if not passwords.exists():
        passwords.write_text(json.dumps({settings.airflow.username: secrets.token_urlsafe(12)}))
    log = (home / "standalone.log").open("ab")
    proc = subprocess.Popen(["airflow", "standalone"], env=_airflow_env(settings, home, passwords), stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    api = AirflowAPI(settings.model_copy(update={"airflow": settings.airflow.model_copy(
        update={"password_file": passwords})}))
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited; see {home / 'standalone.log'}")
            try:
                dags = api.dag_ids()
                if {"zmlops_training", "zmlops_monitoring"} <= dags:
                    break
            except (*UNAVAILABLE, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow not up with both DAGs in 240 s; see {home / 'standalone.log'}")
            time.sleep(2)
        for dag_id in ("zmlops_training", "zmlops_monitoring"):
            api.unpause(dag_id)
        yield api
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@contextlib.contextmanager
def services(settings: Settings) -> Iterator[dict[str, str]]:
    env = {**os.environ, "ZM_HOME": str(settings.home.resolve()), "ZM_SERVING__POLL_SECONDS": "2"}
    procs = {f: subprocess.Popen([str(SERVING_PY), "-m", "inference_services.server", f, "--port",
                                  str(settings.serving.ports[f])], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for f in FAMILIES}
    urls = {f: f"http://{settings.serving.host}:{settings.serving.ports[f]}" for f in FAMILIES}
    try:
        deadline = time.monotonic() + 120
        for f, url in urls.items():
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/v2/models/{f}/ready", timeout=2).status_code == 200:
                        break
                if procs[f].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{f} service did not become ready")
                time.sleep(0.5)
        yield urls
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _traffic(settings: Settings, urls: dict[str, str], n: int, headers: dict[str, str]) -> dict[str, Any]:
    """Simulated client traffic: n single-row requests per model; returns versions seen and failures."""
    from training.features.store import source_table

    customers = source_table(settings, "customer_features", ["customer_id"])["customer_id"]
    ids = [int(c) for c in customers.drop_duplicates().sample(min(n, customers.nunique()), random_state=1)]
    categories = sorted(source_table(settings, "category_week_features", ["category"])["category"].unique())
    seen: dict[str, set[str]] = {f: set() for f in FAMILIES}
    failed = 0
    with httpx.Client(timeout=10, headers=headers) as http:
        for i in range(n):
            rows = {"demand-forecast": {"category": categories[i % len(categories)], "horizon": 8},
                    "customer-segmentation": {"customer_id": ids[i % len(ids)]},
                    "product-recommendation": {"customer_id": ids[i % len(ids)], "k": 10}}
            for f, row in rows.items():
                r = http.post(f"{urls[f]}/v1/models/{f}:predict", json={"instances": [row]})
                if r.status_code != 200:
                    failed += 1
                else:
                    seen[f].add(r.headers["x-model-version"])
    return {"failed": failed, "versions": {f: sorted(v) for f, v in seen.items()}}


def _versions(settings: Settings) -> dict[str, dict[str, Any]]:
    from training import tracking

    c = tracking.client(settings)
    out = {}
    for f in FAMILIES:
        v = tracking.alias_version(settings, f, "production")
        tags = c.get_model_version(f, v).tags if v else {}
        newest = max(c.search_model_versions(f"name='{f}'"), key=lambda m: int(m.version), default=None)
        out[f] = {"version": v, "metric": tags.get("gate.challenger"), "metric_name": tags.get("gate.metric"),
                  "champion": tags.get("gate.champion"), "reason": tags.get("reason", ""),
                  "latest": str(newest.version) if newest else None,
                  "latest_decision": newest.tags.get("gate.decision") if newest else None,
                  "latest_reason": newest.tags.get("reason", "") if newest else "",
                  "latest_metric": newest.tags.get("gate.challenger") if newest else None,
                  "latest_champion": newest.tags.get("gate.champion") if newest else None}
    return out


def _wait_served(urls: dict[str, str], wanted: dict[str, str], headers: dict[str, str],
                 timeout: float = 60) -> dict[str, str]:
    served: dict[str, str] = {}
    row = {"demand-forecast": {"category": "kitchen"}, "customer-segmentation": {"customer_id": 1},
           "product-recommendation": {"customer_id": 1}}

    def serving_wanted() -> bool:
        for f, url in urls.items():
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.post(f"{url}/v1/models/{f}:predict", json={"instances": [row[f]]}, headers=headers,
                               timeout=5)
                served[f] = r.headers.get("x-model-version", "?")
        return all(served.get(f) == v for f, v in wanted.items())

    until(serving_wanted, timeout, 1)
    return served


def run_loop(settings: Settings, config: Any = None, requests: int = 200) -> dict[str, Any]:
    """Run the loop; returns what happened (``code`` 0 when every step did what it should)."""
    from training.data import ingest
    from training.data.world import SimulationConfig

    started = time.perf_counter()
    approvals_shown: set[int] = set()
    console.rule("Zero Margin MLOps: the whole loop on the embedded stack")
    console.print(f"state under {settings.home.resolve()}")
    config = config or SimulationConfig(seed=settings.seed)
    with step("v1: simulate two years of transactions, version them with DVC, Great Expectations gate"):
        v1 = ingest.snapshot_simulated(settings, config)
        ingest.validate_version(settings, v1.name)
    with contextlib.ExitStack() as stack:
        t = time.perf_counter()
        console.print("[bold cyan]>>[/] start Airflow standalone (SQLite) with the training and monitoring DAGs")
        api = stack.enter_context(airflow_standalone(settings))
        console.print(f"   Airflow up in {time.perf_counter() - t:.0f} s: {settings.airflow.api_url}")
        with step(f"training DAG on {v1.name}: validate, features, train, gate (staging), review board, deploy "
                  "(3 mapped models), batch answers"):
            run = api.wait("zmlops_training", api.trigger("zmlops_training", {"reason": "initial training"}))
            if run["state"] != "success":
                raise RuntimeError(f"training run {run['dag_run_id']} failed; see the Airflow UI")
        before = _versions(settings)
        console.print("   production: " + ", ".join(f"{f} v{v['version']}" for f, v in before.items()))
        _print_approvals(settings, approvals_shown)
        _print_batch(settings)
        with step("start the three KServe services on 127.0.0.1"):
            urls = stack.enter_context(services(settings))
        client = auth.headers(settings)  # the local client key (ZM_HOME/secrets)
        with step(f"simulated client traffic: {requests} requests per model, logged for monitoring"):
            traffic = _traffic(settings, urls, requests, client)
        console.print(f"   failed requests: {traffic['failed']}; versions served: {traffic['versions']}")
        with step(f"v2: eight more weeks under the '{SCENARIO}' drift scenario (a new design line arrives)"):
            v2 = ingest.snapshot_simulated(settings, config, then=[(8, SCENARIO)])
            ingest.validate_version(settings, v2.name)
        with step("monitoring DAG: drift and quality checks against each model's training data"):
            run = api.wait("zmlops_monitoring", api.trigger("zmlops_monitoring"))
            if run["state"] != "success":
                raise RuntimeError("monitoring run failed; see the Airflow UI")
        from monitoring.loop import results

        decisions = {}
        for r in reversed(results(settings)[:len(FAMILIES)]):
            decisions[r["family"]] = "; ".join(r["reasons"]) or "no action"
        for f, d in decisions.items():
            console.print(f"   {f}: {d}")
        flagged = [f for f, d in decisions.items() if d != "no action"]
        with step(f"re-entry: the retrain asset events start the training DAG for {', '.join(flagged) or 'none'}"):
            retrain = _wait_asset_run(api, settings, flagged) if flagged else {"state": "success"}
        after = _versions(settings)
        wanted = {f: v["version"] for f, v in after.items() if v["version"]}
        with step("the services pick up the new production versions"):
            served = _wait_served(urls, wanted, client)
            traffic2 = _traffic(settings, urls, max(requests // 4, 10), client)
        console.print(f"   failed requests: {traffic2['failed']}; versions served: {traffic2['versions']}")
        with step("v3: four more weeks of the new line; the monitoring DAG checks the models in production again "
                  "(the analysts' Evidently UI draws the retrain)"):
            v3 = ingest.snapshot_simulated(settings, config, then=[(8, SCENARIO), (4, SCENARIO)])
            ingest.validate_version(settings, v3.name)
            run = api.wait("zmlops_monitoring", api.trigger("zmlops_monitoring"))
            if run["state"] != "success":
                raise RuntimeError("monitoring run failed; see the Airflow UI")
        for r in reversed(results(settings)[:len(FAMILIES)]):
            console.print(f"   {r['family']} v{r['model_version']} on {r['current_version']}: "
                          f"{'; '.join(r['reasons']) or 'no action'}")
    rows = []
    for f in FAMILIES:
        b, a = before[f], after[f]
        retrained = a["latest"] != b["latest"]
        # before/after on the same (new) evaluation data: the gate scored the production version there too
        old_score = a["latest_champion"] if retrained and a["latest_champion"] else b["metric"]
        new = f"v{a['latest']} ({a['latest_decision']})" if retrained else "unchanged"
        rows.append([f, f"v{b['version']}", new, b["metric_name"],
                     f"{float(old_score):.4f}" if old_score else "-",
                     f"{float(a['latest_metric']):.4f}" if retrained and a["latest_metric"] else "-",
                     a["latest_reason"] if retrained else decisions.get(f, "-"), served.get(f, "?")])
    table("models before and after the drift loop (retrained models: both scored on the new data by the gate)",
          ["model", "production before", "retrained (gate)", "metric", "before", "after", "why", "served now"],
          rows)
    _print_approvals(settings, approvals_shown)
    console.print(f"retraining run: {retrain.get('dag_run_id')} ({retrain.get('state')})")
    console.print(f"Airflow UI: {settings.airflow.api_url} (user {settings.airflow.username}, password in "
                  f"{settings.home.resolve() / 'airflow' / 'passwords.json'}; `make airflow ZM_HOME=.zm/demo` "
                  "starts it again over this state)")
    console.print("Evidently UI (monitoring over time) and MLflow UI: `make ui ZM_HOME=.zm/demo` -> "
                  "http://127.0.0.1:8000 and http://127.0.0.1:5000")
    console.print(f"Predictors (`make serve ZM_HOME=.zm/demo`) want a key: curl -H \"Authorization: Bearer $(cat "
                  f"{settings.home.resolve() / 'secrets' / 'client-key'})\" ... (docs/security.md)")
    console.print(f"Reports: {settings.reports / 'monitoring' / 'index.html'}")
    console.print(f"loop finished in {time.perf_counter() - started:.0f} s")
    failed = traffic["failed"] + traffic2["failed"]
    ok = failed == 0 and retrain.get("state") == "success" and all(served.get(f) == v for f, v in wanted.items())
    return {"code": 0 if ok else 1, "failed_requests": failed, "before": before, "after": after, "served": served,
            "retrain": retrain, "decisions": decisions,
            "seconds": time.perf_counter() - started}


def experiment(settings: Settings, before: dict[str, dict[str, Any]],
               after: dict[str, dict[str, Any]]) -> str | None:
    """The demo's last step, after the loop and the data gate: a short A/B test of the retrained recommender
    against the one it replaced, on simulated clicks with a planted 10% uplift: the decision is printed, recorded
    and carried out through the promotion path."""
    from delivery.experiments import Design
    from zmlops.cli import simulate_experiment

    family = "product-recommendation"
    old, new = before[family]["version"], after[family]["version"]
    if not old or not new or old == new:
        console.print(f"A/B test: skipped ({family} has one production version only)")
        return None
    name = f"recs-v{new}-vs-v{old}"
    console.print(f"A/B test {name}: does the retrained recommender get more clicks? (simulated clicks, a planted "
                  "+10% uplift; `zm experiment simulate`, docs/experiments.md)")
    analysis = simulate_experiment(settings, Design(name, family, {"control": str(old), "treatment": str(new)}),
                                   uplift=0.10, deploy=True)
    return f"{name}: {analysis.decision}"


def _wait_asset_run(api: Any, settings: Settings, expected: list[str], timeout: float = 900) -> dict[str, Any]:
    """Wait until the retrain events became finished training runs for every flagged model.

    Each asset event may start its own run (runs queue behind ``max_active_runs=1``); done when
    no asset-triggered run is unfinished and each flagged model has a version trained for drift.
    Returns the last asset-triggered run.
    """
    from training import tracking

    client = tracking.client(settings)

    def retrained() -> dict[str, Any] | None:
        runs = [r for r in api.runs("zmlops_training") if r.get("run_type") == "asset_triggered"]
        finished = runs and all(r["state"] in ("success", "failed") for r in runs)
        trained = all(
            any(str(v.tags.get("reason", "")).startswith("drift") for v in client.search_model_versions(f"name='{f}'"))
            for f in expected
        )
        return dict(runs[0]) if finished and trained else None

    found = until(retrained, timeout, 3)
    if found is None:
        raise TimeoutError(f"the retraining of {expected} did not finish in time")
    return found
