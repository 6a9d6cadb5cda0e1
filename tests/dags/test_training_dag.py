"""DAG integrity and real dag.test() runs of the training DAG on test-size data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import REPO, ApprovalTaskInstance, load_dag
from zmlops.catalog import FAMILIES

pytestmark = pytest.mark.dags

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ("pandas", "numpy", "mlflow", "feast", "sklearn", "great_expectations", "dvc", "statsmodels", "implicit",
         "evidently", "training.run", "training.families")

PARSE = """
import json, sys, time
import airflow.sdk  # Airflow itself is loaded once per parser process; the file's own cost is measured
from airflow.sdk import DAG
t = time.process_time()  # CPU time: what parsing costs the dag processor, whatever else the machine runs
import importlib.util
spec = importlib.util.spec_from_file_location("d", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
seconds = time.process_time() - t
dags = [o for o in vars(m).values() if isinstance(o, DAG)]
heavy = [h for h in json.loads(sys.argv[2]) if h in sys.modules]
print(json.dumps({"seconds": seconds, "heavy": heavy, "dags": [
    {"id": d.dag_id, "tags": sorted(d.tags), "doc": bool(d.doc_md), "max_active_runs": d.max_active_runs,
     "tasks": [{"id": t.task_id, "retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
                "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None}
               for t in d.tasks]} for d in dags]}))
"""


def test_training_families_match_the_catalog() -> None:
    from training.families import FAMILIES as DEFINED

    assert tuple(DEFINED) == FAMILIES


def test_every_family_s_retrain_asset_schedules_the_training_dag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule is built from the catalog (``AssetAny(*RETRAIN_ASSETS)``), not from indexed families: with a
    fourth family in the catalog, its retrain asset starts the DAG too (an indexed chain would leave it out)."""
    from airflow.sdk import AssetAny

    from zmlops import catalog

    families = (*FAMILIES, "toy-family")
    monkeypatch.setattr(catalog, "FAMILIES", families)
    condition = load_dag("training").training_dag.timetable.asset_condition  # type: ignore[attr-defined]
    assert isinstance(condition, AssetAny)  # any one of them starts a run
    assert [a.uri for a in condition.objects] == [catalog.retrain_asset_uri(f) for f in families]


def test_the_data_steps_pods_follow_the_data_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """k8s profile: validate and features run in pods whose memory request is ZM_DATA__MEMORY_BUDGET_MB and whose
    limit adds the interpreter's headroom (the chart sets the variable from settings.data.memoryBudgetMb); the
    override survives the DAG's serialization, which is what the scheduler hands the KubernetesExecutor. Training
    tasks keep the worker pods' defaults; locally there is no override."""
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setenv("ZM_PROFILE", "k8s")
    monkeypatch.setenv("ZM_DATA__MEMORY_BUDGET_MB", "3000")
    dag = load_dag("training").training_dag  # type: ignore[attr-defined]
    again = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    for task_id in ("validate", "features"):
        resources = again.get_task(task_id).executor_config["pod_override"].spec.containers[0].resources
        assert resources.requests == {"memory": "3000Mi"} and resources.limits == {"memory": "4024Mi"}, task_id
    assert not again.get_task("train").executor_config
    monkeypatch.setenv("ZM_PROFILE", "local")
    assert not load_dag("training").training_dag.get_task("validate").executor_config  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_integrity(path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PARSE, str(path), json.dumps(HEAVY)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["heavy"] == [], f"{path.name} imports heavy modules at parse time: {info['heavy']}"
    assert info["seconds"] <= 0.5, f"{path.name} took {info['seconds']:.2f} s of CPU to parse"
    assert info["dags"], f"{path.name} defines no DAG"
    for dag in info["dags"]:
        assert dag["tags"] and dag["doc"], dag["id"]
        if "training" in dag["id"]:
            assert dag["max_active_runs"] == 1
        for task in dag["tasks"]:
            assert task["retry_delay"] > 0 and task["timeout"], (dag["id"], task["id"])


def _states(run: Any) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def _production(home: Path) -> dict[str, str | None]:
    from training import tracking
    from zmlops.settings import get_settings

    return {f: tracking.alias_version(get_settings(), f, "production") for f in FAMILIES}


@pytest.fixture
def ingested(zm_home: Path) -> Path:
    from training.data import ingest
    from training.data.world import SimulationConfig
    from zmlops.settings import get_settings

    version = ingest.snapshot_simulated(
        get_settings(), SimulationConfig(seed=11, n_customers=400, n_products=150, weeks=70)  # docs/install.md's size
    )
    ingest.validate_version(get_settings(), version.name)
    return zm_home


@pytest.mark.full  # make test runs this DAG end to end in tests/stack (the chart's Airflow, real scheduler)
def test_training_dag_trains_gates_and_deploys_all_three_then_repeats_nothing(
    airflow_db: Path, ingested: Path
) -> None:
    dag = load_dag("training").training_dag  # type: ignore[attr-defined]
    run = dag.test(run_conf={"reason": "dag test"})
    assert str(run.state) == "success", _states(run)
    assert _production(ingested) == {f: "1" for f in FAMILIES}
    from training import tracking
    from zmlops import statedb
    from zmlops.settings import get_settings

    deployments = statedb.deployments(get_settings())
    assert sorted((d["model"], d["version"]) for d in deployments) == sorted((f, "1") for f in FAMILIES)
    assert all(ingested.joinpath("reports", "model-cards", f"{f}-v1.md").exists() for f in FAMILIES)
    scored = _batch_tables()

    again = dag.test(run_conf={"reason": "dag test again"})  # same data version: nothing new
    assert str(again.state) == "success"
    assert _production(ingested) == {f: "1" for f in FAMILIES}
    assert len(statedb.deployments(get_settings())) == len(FAMILIES)  # recorded once per model version

    client = tracking.client(get_settings())
    assert all(len(client.search_model_versions(f"name = '{f}'")) == 1 for f in FAMILIES)
    assert _batch_tables() == scored  # the same version on the same data: the stored answers, not a new batch


def _batch_tables() -> dict[str, tuple[str, int]]:
    """The score task's tables (training/batch.py): production's answers for every category and every customer,
    stamped with the model and data versions; returns each family's object-store key and rows."""
    import pandas as pd

    from training import batch
    from training.data.ingest import clean_path
    from training.features.store import published_version
    from zmlops.settings import get_settings
    from zmlops.stores import object_store

    settings = get_settings()
    data = str(published_version(settings)["data_version"])  # type: ignore[index]
    customers = pd.read_parquet(clean_path(settings, data), columns=["customer_id"])["customer_id"].nunique()
    tables = {f: batch.latest(settings, f) for f in FAMILIES}
    for family, table in tables.items():
        assert set(table["model_version"]) == {"1"} and set(table["data_version"]) == {data}, family
    forecast = tables["demand-forecast"]
    assert forecast.groupby("category")["step"].max().eq(8).all() and (forecast["units_upper"] >=
                                                                        forecast["units_lower"]).all()
    segments = tables["customer-segmentation"]
    assert segments["customer_id"].is_unique and len(segments) == customers and segments["segment_name"].notna().all()
    recs = tables["product-recommendation"]
    assert recs["customer_id"].nunique() == customers and recs.groupby("customer_id")["rank"].max().eq(10).all()
    markers = {f: json.loads(object_store(settings).get(f"batch/{f}/latest.json") or b"{}") for f in FAMILIES}
    return {f: (m["key"], m["rows"]) for f, m in markers.items()}


def test_bad_data_stops_the_run_before_training_and_production_stays(airflow_db: Path, ingested: Path) -> None:
    from training.data import ingest
    from training.data.cleaning import read_transactions
    from training.data.corruption import corrupt
    from zmlops.settings import get_settings

    settings = get_settings()
    dag = load_dag("training").training_dag  # type: ignore[attr-defined]
    assert str(dag.test(run_conf={"families": ["customer-segmentation"]}).state) == "success"
    before = _production(ingested)
    registry = ingest.registry_for(settings)
    good = registry.current()
    assert good is not None
    raw = read_transactions(registry.fetch(good, settings.work / good.name / "raw") / good.transactions_file)
    bad_file = ingested / "bad.parquet"
    corrupt(raw, "negative_prices").to_parquet(bad_file, index=False)
    bad = ingest.snapshot_file(settings, bad_file)

    run = dag.test(run_conf={"data_version": bad.name, "families": ["customer-segmentation"]})
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["validate"] == ["failed"]
    assert all(s in ("upstream_failed", "None") for s in states.get("train", ["upstream_failed"])), states
    assert _production(ingested) == before


@pytest.mark.parametrize(("answer", "who", "expected"), [
    ("Approve", {"id": "2", "name": "approver"}, ("model.approved", "approver")),
    ("Reject", {"id": "3", "name": "reviewer"}, ("model.rejected", "reviewer")),
    ("Reject", None, ("model.rejected", "timeout")),  # the timeout sweep answers with the default, Reject
])
def test_the_board_s_answer_is_recorded_and_a_rejection_skips_deployment(
        zm_home: Path, answer: str, who: dict[str, str] | None, expected: tuple[str, str]) -> None:
    import datetime as dt

    import mlflow
    from airflow.providers.common.compat.sdk import DownstreamTasksSkipped

    from governance import audit
    from zmlops.settings import get_settings

    settings = get_settings()
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    client.create_registered_model("customer-segmentation")
    version = client.create_model_version("customer-segmentation", source=str(zm_home / "artifact")).version
    approve = load_dag("training").training_dag.get_task("approve")  # type: ignore[attr-defined]
    ti = ApprovalTaskInstance({"versions": [{"family": "customer-segmentation", "version": str(version)}]})
    # the scheduler's timeout sweep sends the defaults: Reject, the params' defaults, no user
    event = {"chosen_options": [answer], "params_input": {"reason": "looks right" if who else ""},
             "responded_at": dt.datetime.now(dt.UTC), "responded_by_user": who}
    context = {"ti": ti, "task_instance": ti, "task": approve}
    if answer == "Reject":
        with pytest.raises(DownstreamTasksSkipped) as skipped:  # how Airflow skips the deploy tasks
            approve.execute_complete(context=context, event=event)
        assert "deploy" in str(skipped.value.tasks)
        tags = client.get_model_version("customer-segmentation", version).tags
        assert tags["approval.status"] == "rejected" and tags["approval.by"] == expected[1]
    else:
        assert approve.execute_complete(context=context, event=event)["chosen_options"] == ["Approve"]
    [entry] = audit.entries(settings, "model.*", f"model:customer-segmentation:v{version}")
    assert (entry.action, entry.actor) == expected
    assert entry.details["why"] == ("looks right" if who else "no answer within 3 days, 0:00:00")


BOARD_DAG = """
import datetime as dt

from airflow.sdk import DAG, Param, task

from dags.training import ModelApproval
from governance.respondents import respondents

with DAG("zm_board_timeout", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
    @task
    def review():
        return {"subject": "Deploy?", "body": "figures",
                "versions": [{"family": "demand-forecast", "version": "VERSION"}]}

    @task
    def deploy():
        raise AssertionError("a version the board never approved deployed")

    board = ModelApproval(task_id="approve", subject="Deploy?", body="figures", defaults="Reject",
                          response_timeout=dt.timedelta(seconds=3), assigned_users=respondents("model-approvers"),
                          params={"reason": Param("", type="string")})
    review() >> board >> deploy()
"""


def test_an_unanswered_board_rejects_when_its_timeout_passes(airflow_db: Path, zm_home: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The training DAG's approval operator in a DAG run of its own: nobody answers; ``dag.test`` parks the task
    awaiting input, and the scheduler's timeout sweep (``SchedulerJobRunner.check_awaiting_input_timeouts``, which
    its loop calls) answers with the defaults, Reject: the rejection is recorded and deployment skipped."""
    import json
    import threading
    import time

    import mlflow
    from airflow.dag_processing.dagbag import DagBag

    from governance import audit
    from zmlops.settings import get_settings

    settings = get_settings()
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    client.create_registered_model("demand-forecast")
    version = client.create_model_version("demand-forecast", source=str(zm_home / "artifact")).version
    folder = tmp_path / "board-dags"
    folder.mkdir()
    (folder / "board.py").write_text(BOARD_DAG.replace("VERSION", str(version)))
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "board", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(folder), "refresh_interval": 0}}]))
    dag = DagBag(dag_folder=str(folder)).get_dag("zm_board_timeout")
    done = threading.Event()

    def scheduler_ticks() -> None:  # the scheduler's own timeout sweep, as its loop calls it
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        runner = SchedulerJobRunner(job=Job())
        deadline = time.monotonic() + 120
        while not done.wait(1.0) and time.monotonic() < deadline:
            runner.check_awaiting_input_timeouts()

    sweeper = threading.Thread(target=scheduler_ticks, daemon=True)
    sweeper.start()
    try:
        run = dag.test()
    finally:
        done.set()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"review": "success", "approve": "success", "deploy": "skipped"}, states
    [entry] = audit.entries(settings, "model.rejected", f"model:demand-forecast:v{version}")
    assert entry.actor == "timeout" and entry.details["why"] == "no answer within 0:00:03"
    assert client.get_model_version("demand-forecast", version).tags["approval.status"] == "rejected"
