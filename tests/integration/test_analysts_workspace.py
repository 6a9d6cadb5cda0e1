"""The analysts' home (issue 26): the monitoring checks' snapshots in an Evidently workspace, one project per
family, rendered by `evidently ui` in headless Chromium and read as a person would.

Four simulated deliveries continue one world: 70 weeks (the models' training data), 8 unchanged weeks, 8 weeks
with a new product line, 8 more weeks of it. Each family is checked on the second and third delivery with the real
checks (``monitoring.drift.assess``); the recommender, which the new line drives to retrain, is trained again on
the third delivery, as the monitoring DAG's re-entry would have it, and checked on the fourth.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests import needs
from tests.browser import CHROMIUM, screenshot, visible_text
from zmlops.catalog import FAMILIES, entry
from zmlops.polling import until
from zmlops.settings import Settings

pytestmark = [pytest.mark.integration, needs.binary(CHROMIUM)]


def _clean(folder: Path) -> pd.DataFrame:
    from training.data.cleaning import clean_transactions, read_transactions

    return clean_transactions(read_transactions(folder / "transactions.parquet"))[0]


def _check(settings: Settings, family: str, model: Any, version: str, reference: tuple[str, pd.DataFrame],
           current: tuple[str, pd.DataFrame], logged: dict[str, float]) -> dict[str, Any]:
    from monitoring.drift import assess
    from monitoring.workspace import record_stored, store_reports

    result = assess(settings, family, reference[1], current[1], model, logged, None)
    result.model_version, result.reference_version, result.current_version = version, reference[0], current[0]
    out = result.to_dict()
    out["evidently"] = store_reports(settings, out, result.reports)  # as the DAG's check task, then its publish
    record_stored(settings, out)
    return out


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, list[dict[str, Any]]]]:
    from training.data.simulator import simulate
    from training.data.world import SimulationConfig
    from training.features.build import category_week_features, customer_features
    from training.models.forecasting import CategoryForecaster, backtest
    from training.models.recommendation import ALSRecommender, interactions
    from training.models.segmentation import CustomerSegmenter

    root = tmp_path_factory.mktemp("workspace")
    settings = Settings(home=root / "home")
    config = SimulationConfig(seed=11, n_customers=400, n_products=150, weeks=70)
    data = {}
    line = [(8, "none"), (8, "new_product_mix")]
    for name, then in (("v1", []), ("v2", line[:1]), ("v3", line), ("v4", [*line, (8, "new_product_mix")])):
        simulate(config, root / name, then=then)
        data[name] = (name, _clean(root / name))
    ref = data["v1"][1]
    customers = customer_features(ref)
    models = {
        "demand-forecast": CategoryForecaster(n_jobs=1, candidates=("sarimax", "seasonal naive", "naive")).fit(
            category_week_features(ref)),
        "customer-segmentation": CustomerSegmenter().fit(
            customers[customers["event_timestamp"] == customers["event_timestamp"].max()]),
        "product-recommendation": ALSRecommender(alpha=2.0).fit(interactions(ref)),
    }
    bt = backtest(category_week_features(ref), lambda: CategoryForecaster(n_jobs=1, candidates=(
        "sarimax", "seasonal naive", "naive")), folds=1, horizon=8)["model"]
    logged = {"demand-forecast": {"units_wape": bt["units_wape"], "revenue_wape": bt["revenue_wape"]}}
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in FAMILIES}
    for current in ("v2", "v3"):
        for family, model in models.items():
            results[family].append(_check(settings, family, model, "1", data["v1"], data[current],
                                          logged.get(family, {})))
    retrained = ALSRecommender(alpha=2.0).fit(interactions(data["v3"][1]))  # the drift's re-entry
    results["product-recommendation"].append(
        _check(settings, "product-recommendation", retrained, "2", data["v3"], data["v4"], {}))
    return settings, results


def test_each_check_is_a_snapshot_of_its_family_s_project_with_its_numbers(
        checked: tuple[Settings, dict[str, list[dict[str, Any]]]]) -> None:
    from monitoring.workspace import open_workspace, project_of

    settings, results = checked
    workspace = open_workspace(settings)
    assert sorted(p.name for p in workspace.list_projects()) == sorted(FAMILIES)
    for family, checks in results.items():
        project = project_of(workspace, family)
        runs = [workspace.get_run(project.id, run) for run in workspace.list_runs(project.id)]
        numbers = sorted((r for r in runs if r.name), key=lambda r: r.timestamp)  # the numbers snapshots are named
        assert len(runs) == 2 * len(checks), (family, len(runs))  # a drift report and the numbers per check
        assert [(r.metadata["model_version"], r.metadata["current_version"]) for r in numbers] == [
            (c["model_version"], c["current_version"]) for c in checks]
        # stamped with the week of the data checked, not the time of the check
        assert [r.timestamp.isoformat()[:10] for r in numbers] == [c["data_until"][:10] for c in checks]
        titles = [p.title for p in project.dashboard.model().panels]
        assert titles[0] == "Drift score per monitored column", titles
        assert "Production model version" in titles
    forecast = results["demand-forecast"][-1]
    assert set(forecast["breakdown"]["units_wape"]) == set(forecast["breakdown"]["units_bias"]) and len(
        forecast["breakdown"]["units_wape"]) >= 5
    recommender = results["product-recommendation"]
    assert not recommender[0]["reasons"] and recommender[1]["reasons"], recommender  # the new line asks to retrain
    assert recommender[2]["signals"]["new_product_share"] < settings.monitoring.new_product_share  # retrained: seen
    segments = results["customer-segmentation"][-1]["breakdown"]["segment_share"]
    assert abs(sum(segments.values()) - 1) < 1e-9


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui(checked: tuple[Settings, dict[str, list[dict[str, Any]]]]) -> Any:
    settings, _ = checked
    port = _port()
    evidently = Path(sys.executable).with_name("evidently")
    server = subprocess.Popen([str(evidently), "ui", "--workspace", settings.evidently_workspace, "--host",
                               "127.0.0.1", "--port", str(port)], env={**os.environ, "DO_NOT_TRACK": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/projects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return server.poll() is not None  # exited: stop waiting, the assertion below says why

    until(up, 60, 0.2)
    assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
    yield url, {p["name"]: p["id"] for p in httpx.get(f"{url}/api/projects", timeout=5).json()}
    server.terminate()
    server.wait(30)


def test_the_ui_shows_three_projects_and_each_family_s_panels_in_a_browser(
        ui: tuple[str, dict[str, str]], checked: tuple[Settings, dict[str, list[dict[str, Any]]]]) -> None:
    from monitoring.checks import Checks
    from monitoring.workspace import COMMON, DRIFT, number_name
    from zmlops.catalog import load

    url, projects = ui
    _, results = checked
    home = visible_text(url)
    for family in FAMILIES:
        assert family in home and entry(family).title in home, home[:1000]
    screenshot(url, "evidently-projects", size=(1400, 700))
    for family in FAMILIES:
        page = visible_text(f"{url}/projects/{projects[family]}")
        assert "error" not in page.lower(), page[:2000]
        checks: Checks = load(entry(family).checks)
        last = results[family][-1]  # a panel is drawn once a check holds its numbers (no served ones here)
        numbers = {*last["signals"], "model_version"} | {
            number_name(name, label) for name, labels in last["breakdown"].items() for label in labels}
        drawn = [v.title for v in (*checks.views, *COMMON) if (
            any(n.startswith(number_name(v.breakdown, "")) for n in numbers) if v.breakdown
            else any(s in numbers for s in v.signals))]
        assert len(drawn) >= 2 and DRIFT in page, (family, drawn, page[:2000])
        assert [t for t in drawn if t not in page] == [], (family, page[:2000])
        for column in results[family][-1]["columns"]:
            assert column in page, (family, column)  # a legend entry of the drift panel
        screenshot(f"{url}/projects/{projects[family]}", f"evidently-{family}")
    forecast = visible_text(f"{url}/projects/{projects['demand-forecast']}")
    for category in results["demand-forecast"][-1]["breakdown"]["units_wape"]:
        assert category in forecast, category  # one line per category
    # the reports list names each check with its decision, numbers as the monitoring result has them
    reports = visible_text(f"{url}/projects/{projects['product-recommendation']}/reports")
    reason = results["product-recommendation"][1]["reasons"][0]
    assert reason[:60] in reports, (reason, reports[:2000])


def test_in_the_k8s_profile_the_workspace_lives_in_the_object_store(
        s3: str, tmp_path: Path, checked: tuple[Settings, dict[str, list[dict[str, Any]]]]) -> None:
    """No state on a pod's disk: the monitoring pod writes its snapshots to ``<object store>/evidently``, where any
    other pod (the UI's) reads them."""
    from monitoring.workspace import open_workspace, project_of, record

    _, results = checked
    writer = Settings(home=tmp_path / "pod-a", object_store_url=s3)
    assert writer.evidently_workspace == f"{s3}/evidently"
    for result in results["product-recommendation"]:
        record(writer, result, [])
    reader = open_workspace(Settings(home=tmp_path / "pod-b", object_store_url=s3))
    project = project_of(reader, "product-recommendation")
    assert len(reader.list_runs(project.id)) == len(results["product-recommendation"])
    assert [p.title for p in project.dashboard.model().panels][0] == "Drift score per monitored column"
    assert not any(p.is_file() for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))
    # the UI's pod serves a copy in its cache (Evidently reloads a local folder only), refreshed with each check
    from evidently.ui.workspace import Workspace

    from monitoring.workspace import sync

    ui_pod = Settings(home=tmp_path / "pod-ui", object_store_url=s3)
    copy = sync(ui_pod)
    assert copy.is_relative_to(tmp_path / "pod-ui")
    local = Workspace(str(copy))
    checks = len(results["product-recommendation"])
    assert len(local.list_runs(project_of(local, "product-recommendation").id)) == checks
    record(writer, {**results["product-recommendation"][-1], "signals": {"new_product_share": 0.5}}, [])
    sync(ui_pod)
    again = Workspace(str(copy))
    assert len(again.list_runs(project_of(again, "product-recommendation").id)) == checks + 1
    # retention: snapshots whose data week is past monitoring.workspace_retention_days go, the newest week stays
    from monitoring.workspace import prune

    weeks = [dt.datetime.fromisoformat(r["data_until"]) for r in results["product-recommendation"]]

    def keeping(span: dt.timedelta) -> Settings:
        days = writer.monitoring.model_copy(update={"workspace_retention_days": span.days})
        return writer.model_copy(update={"monitoring": days})

    assert prune(writer) == {"product-recommendation": 0}  # two years by default
    second = weeks[-1] - weeks[1] + dt.timedelta(days=1)  # back to the second check's week
    assert prune(keeping(second)) == {"product-recommendation": 1}  # the first check's week goes
    assert prune(keeping(dt.timedelta(days=7))) == {"product-recommendation": checks - 2}
    left = [reader.get_run(project.id, r) for r in open_workspace(writer).list_runs(project.id)]
    assert [r.timestamp.date() for r in left] == [weeks[-1].date()] * 2  # the last check, and the one recorded again


def test_the_running_ui_shows_projects_and_checks_made_after_its_start(
        s3: str, tmp_path: Path, checked: tuple[Settings, dict[str, list[dict[str, Any]]]]) -> None:
    """The chart's UI pod (``zm ui --refresh``) starts on an empty workspace (a fresh install, or disks wiped) and
    shows each project and each check the monitoring pod writes afterwards, without a restart: its copies land in
    the watched folder as new files, which Evidently's watcher loads."""
    from monitoring.workspace import record

    _, results = checked
    store = s3.rsplit("/", 1)[0] + "/live-ui"  # a workspace of its own in the bucket: empty at the start
    writer = Settings(home=tmp_path / "monitoring-pod", object_store_url=store)
    port = _port()
    env = {**os.environ, "ZM_HOME": str(tmp_path / "ui-pod"), "ZM_OBJECT_STORE_URL": store}
    server = subprocess.Popen([str(Path(sys.executable).with_name("zm")), "ui", "--port", str(port), "--refresh",
                               "0.5"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/api/projects"
    try:
        def answer() -> list[dict[str, Any]] | None:
            try:
                r = httpx.get(url, timeout=2)
            except httpx.HTTPError:
                return None
            return list(r.json()) if r.status_code == 200 else None

        assert until(lambda: answer() == [] or server.poll() is not None, 60, 0.2) and server.poll() is None, \
            server.stderr.read().decode()[-2000:] if server.stderr else ""
        for family in FAMILIES:
            record(writer, results[family][0], [])

        def shown(counts: dict[str, int]) -> bool:
            projects = {p["name"]: p["id"] for p in answer() or []}
            return set(projects) == set(counts) and all(
                len(httpx.get(f"{url}/{projects[f]}/snapshots", timeout=5).json()) == n for f, n in counts.items())

        assert until(lambda: shown({f: 1 for f in FAMILIES}), 30, 0.5), answer()
        record(writer, results["product-recommendation"][1], [])  # a later check of a project the UI knows
        assert until(lambda: shown({**{f: 1 for f in FAMILIES}, "product-recommendation": 2}), 30, 0.5)
    finally:
        server.terminate()
        server.wait(30)


def test_each_check_s_page_says_why_first_then_shows_the_evidence(
        checked: tuple[Settings, dict[str, list[dict[str, Any]]]]) -> None:
    """The page a person opens from the monitoring index: the decision in one sentence, then the evidence the
    family's check gathered, rendered in Chromium."""
    from monitoring.loop import CHECKS, PREFIX, save_result, write_index
    from zmlops.stores import object_store

    settings, results = checked
    drifted = results["product-recommendation"][1]
    for family in FAMILIES:
        save_result(settings, results[family][-1])
    save_result(settings, drifted)
    store = object_store(settings)
    pages = {key.rsplit("/", 1)[-1]: store.path(key) for key in store.keys(f"{PREFIX}/{CHECKS}")}
    assert len(pages) == len(FAMILIES) + 1, pages

    def page(result: dict[str, Any]) -> str:
        name = f"{result['family']}-{result['current_version']}.html"
        return visible_text(pages[name].as_uri(), budget_ms=2_000)

    retrain = page(drifted)
    top = drifted["evidence"]["new_products"][0]
    assert f"Retrain product-recommendation v1: {'; '.join(drifted['reasons'])}." in retrain
    for column, drift in drifted["columns"].items():  # each input the recommender reads, by its own method
        assert f"{column} {drift['method']} {drift['score']:.4f} {drift['threshold']:g}" in retrain, column
    assert "New products the model never saw" in retrain and str(top["stock_code"]) in retrain
    assert f"{top['share']:.1%}" in retrain  # the share of all units, as the check computed it
    screenshot(pages[f"product-recommendation-{drifted['current_version']}.html"].as_uri(), "check-recommendation",
               budget_ms=2_000)
    forecast = results["demand-forecast"][-1]
    text = page(forecast)
    worst = max(forecast["breakdown"]["units_wape"], key=forecast["breakdown"]["units_wape"].get)
    assert "Forecast against actual, units per category" in text and "Moved most" in text
    assert f"{worst} {forecast['breakdown']['units_wape'][worst]:.1%}" in text  # the worst category first
    weeks = forecast["evidence"]["forecast_against_actual"]
    inside = [r["units_lower"] <= r["units"] <= r["units_upper"] for r in weeks]
    assert f"of which {sum(inside) / len(inside):.0%} fell inside the forecast's interval" in text
    segments = page(results["customer-segmentation"][-1])
    assert "Segment profiles: at training and now" in segments
    for row in results["customer-segmentation"][-1]["evidence"]["segment_profiles"]:
        assert row["segment"] in segments
    for text in (retrain, segments):
        assert "method" in text and "Drift of the model's inputs" in text
    index = write_index(settings).read_text()  # every check links its page, which exists
    for key in pages:
        assert f'href="{CHECKS}/{key}"' in index and (write_index(settings).parent / CHECKS / key).exists(), key
