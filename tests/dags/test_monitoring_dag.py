"""The monitoring DAG over real stores: drift found, one re-entry per incident, reports and metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import load_dag
from zmlops.catalog import FAMILIES, retrain_asset_uri

pytestmark = pytest.mark.dags


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
            for ti in run.get_task_instances()}


def _asset_events(uri: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.uri == uri)
        ).scalars().all()
        return [dict(e.extra or {}) for e in rows]


@pytest.mark.full  # make test runs this DAG end to end in tests/stack (the chart's Airflow, real scheduler)
def test_a_new_product_line_re_enters_training_once_for_the_recommender(airflow_db: Path, zm_home: Path) -> None:
    from delivery.promotion import deploy
    from training import pipeline
    from training.data import ingest
    from training.data.world import SimulationConfig
    from training.run import train_family
    from zmlops.settings import get_settings

    settings = get_settings()
    config = SimulationConfig(seed=11, n_customers=400, n_products=150, weeks=70)  # the size docs/install.md ingests
    v1 = ingest.snapshot_simulated(settings, config)
    ingest.validate_version(settings, v1.name)
    dag = load_dag("monitoring").monitoring_dag  # type: ignore[attr-defined]
    fresh = dag.test()  # a fresh install: nothing in production, nothing checked, nothing re-entered
    assert str(fresh.state) == "success"
    assert {k: v for k, v in _states(fresh).items() if k != "retention"} == {
        "resolve": "skipped", "publish": "skipped", **{f"check[{i}]": "skipped" for i in range(len(FAMILIES))},
        **{f"reenter_{f.replace('-', '_')}": "skipped" for f in FAMILIES}, "experiments": "success"}
    for family in FAMILIES:
        deploy(settings, train_family(settings, family, v1.name, reason="initial").to_dict())
    v2 = ingest.snapshot_simulated(settings, config, then=[(8, "new_product_mix")])
    ingest.validate_version(settings, v2.name)

    run = dag.test()
    states = _states(run)
    assert str(run.state) == "success", states
    assert states["reenter_product_recommendation"] == "success"
    events = _asset_events(retrain_asset_uri("product-recommendation"))
    assert len(events) == 1 and "never saw" in events[0]["reason"]
    assert events[0]["incident"] == "product-recommendation:v1:" + v2.name

    reports = settings.reports / "monitoring"
    index = (reports / "index.html").read_text()
    # each family's check: its page (why, then the evidence) and its Evidently report, both stored; the Data Docs
    links = re.findall(r'href="([^"]+)"', index)
    assert len(links) == 2 * len(FAMILIES) + 1, links
    for family in FAMILIES:
        assert sum(1 for link in links if f"/{family}-" in f"/{link.rsplit('/', 1)[-1]}") == 2, (family, links)
    assert all((reports / link).exists() for link in links if "validation" not in link), links
    # the analysts' workspace: a project per family, each with this check's drift report and numbers
    from monitoring.workspace import open_workspace, project_of

    workspace = open_workspace(settings)
    assert all(len(workspace.list_runs(project_of(workspace, f).id)) == 2 for f in FAMILIES)
    metrics = (reports / "metrics.prom").read_text()
    assert 'zm_retrain_recommended{model="product-recommendation"} 1.0' in metrics
    summary = json.loads(next(reports.glob("product-recommendation-*.json")).read_text())
    assert summary["signals"]["new_product_share"] > settings.monitoring.new_product_share

    from delivery.experiments import Design, start

    start(settings, Design("segments-dag", "customer-segmentation", {"control": "1", "treatment": "1"}))
    again = dag.test()  # the same incident: checked again, not re-entered again; the running A/B test looked at
    assert str(again.state) == "success"
    assert _states(again)["experiments"] == "success"
    assert (settings.home / "reports" / "experiments" / "segments-dag.html").exists()
    assert 'zm_experiment_decision{experiment="segments-dag",model="customer-segmentation"} 0.0' in (
        reports / "experiments.prom").read_text()  # the experiments dashboard's numbers
    assert _states(again)["reenter_product_recommendation"] == "skipped"
    assert len(_asset_events(retrain_asset_uri("product-recommendation"))) == 1

    # the training DAG's planner turns the event into one job for that model, reason carried
    jobs = pipeline.plan([], {retrain_asset_uri("product-recommendation"): events}, "manual")
    assert jobs == [{"family": "product-recommendation", "reason": events[0]["reason"]}]
