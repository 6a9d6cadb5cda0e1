"""The analysts' home: an Evidently workspace with one project per model family (docs/monitoring.md).

Every monitoring check adds two snapshots to its family's project, stamped with the week of the data it checked
(the current data version's newest transaction): Evidently's drift report (each monitored column's drift score
and method) and the check's numbers (the family's signals and its per-label breakdowns such as WAPE per category
or the segment shares, as Evidently ``MeanValue`` metrics of a one-row table, tagged with the model version, the
data versions and the decision). The project's dashboard is rebuilt after each check from the common panels and
the family's :class:`monitoring.checks.View` entries, with a line for every column and label seen so far.
``make ui`` serves the workspace with ``evidently ui``.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.checks import Checks, View
from zmlops import catalog
from zmlops.settings import Settings

__all__ = ["COMMON", "number_name", "open_workspace", "project_of", "prune", "record", "record_stored", "serve",
           "store_reports", "sync"]

DRIFT = "Drift score per monitored column"
WORKSPACE = "evidently"  # the workspace's prefix in the object store (the k8s profile)
CHANGING = ("dashboard.json", "metadata.json")  # rewritten by each check; snapshots are written once
COMMON = (
    View("Production model version", signals=("model_version",),
         description="The registered version the check monitored: a step is a retrain that reached production."),
    View("Requests answered", signals=("requests",),
         description="Answers the production version served since the previous check (the request log)."),
)


def open_workspace(settings: Settings) -> Any:
    """The workspace at ``settings.evidently_workspace`` (created on first use)."""
    from evidently.ui.workspace import Workspace

    return Workspace(settings.evidently_workspace)


def project_of(workspace: Any, family: str) -> Any:
    """The family's project, created with its catalog title as description on first use."""
    found = workspace.search_project(family)
    if found:
        return found[0]
    return workspace.create_project(family, description=catalog.entry(family).title)


def prune(settings: Settings) -> dict[str, int]:
    """Delete the snapshots whose data week is more than ``monitoring.workspace_retention_days`` before the newest
    week of their project (a backfill or a simulated history keeps its span, whatever today's date). Returns the
    count deleted per project."""
    workspace = open_workspace(settings)
    keep = dt.timedelta(days=settings.monitoring.workspace_retention_days)
    gone: dict[str, int] = {}
    for project in workspace.list_projects():
        stamped = [(snapshot.timestamp, run) for run in workspace.list_runs(project.id)
                   if (snapshot := workspace.get_run(project.id, run)) is not None]
        newest = max((t for t, _ in stamped), default=None)
        old = [run for t, run in stamped if newest is not None and t < newest - keep]
        for run in old:
            workspace.delete_run(project.id, run)
        gone[project.name] = len(old)
    return gone


def store_reports(settings: Settings, result: dict[str, Any], reports: list[Any]) -> list[str]:
    """Keeps a check's Evidently snapshots in the object store (``reports/monitoring/evidently/``, pruned with the
    check's other reports) for :func:`record_stored`; returns their keys. The checks of one monitoring run run side
    by side, the workspace takes one writer: the snapshots wait here for the run's ``publish``."""
    from monitoring.loop import PREFIX, check_name
    from zmlops.stores import object_store

    store = object_store(settings)
    keys = [f"{PREFIX}/evidently/{i}/{check_name(result)}.json" for i in range(len(reports))]  # pruned by its stamp
    for key, snapshot in zip(keys, reports, strict=True):
        store.put(key, snapshot.dumps().encode(), keep=False)
    return keys


def record_stored(settings: Settings, result: dict[str, Any]) -> str:
    """:func:`record` with the snapshots :func:`store_reports` kept (those gone since are left out)."""
    from evidently.core.report import Snapshot

    from zmlops.stores import object_store

    store = object_store(settings)
    kept = [store.get(key) for key in result.get("evidently", [])]
    return record(settings, result, [Snapshot.loads(data.decode()) for data in kept if data is not None])


def sync(settings: Settings) -> Path:
    """The object store's workspace (``<store>/evidently``) copied into the pod's cache: new snapshots and every
    project's dashboard and metadata (rewritten by each check). Returns the local folder.

    A running ``evidently ui`` learns of a project or a snapshot from its folder watcher, which loads a file that is
    created there and ignores one renamed within the folder. Each copy is therefore written beside the folder and
    moved in (a creation to the watcher), projects' metadata before their snapshots."""
    from zmlops.stores import object_store

    store = object_store(settings)
    incoming = store.path(f".{WORKSPACE}-incoming")
    for key in sorted(store.keys(WORKSPACE), key=lambda k: not k.endswith("metadata.json")):
        target = store.path(key)
        if (key.endswith(CHANGING) or not target.exists()) and store.download_to(key, incoming / key):
            target.parent.mkdir(parents=True, exist_ok=True)
            (incoming / key).replace(target)
    return store.path(WORKSPACE)


def serve(settings: Settings, host: str, port: int, refresh_seconds: float = 60.0) -> int:
    """``evidently ui`` over the workspace, telemetry off. A folder is served as it is (Evidently watches it); the
    object store's workspace is copied to the pod's cache and copied again every ``refresh_seconds``, so checks
    made after the start appear (Evidently reloads a local folder, never a remote one). Returns its exit code."""
    import os
    import signal
    import subprocess
    import sys

    evidently = Path(sys.executable).with_name("evidently")
    remote = settings.object_store is not None and not settings.monitoring.workspace_url
    folder = settings.evidently_workspace
    if remote:  # a local folder from the start, so Evidently watches it even before the first check
        local = sync(settings)
        local.mkdir(parents=True, exist_ok=True)
        folder = str(local)
    print(f"the analysts' Evidently UI over {settings.evidently_workspace}"
          + (f" (copied to {folder} every {refresh_seconds:g} s)" if remote else "") + f": http://{host}:{port}",
          flush=True)
    ui = subprocess.Popen([str(evidently), "ui", "--workspace", folder, "--host", host, "--port", str(port)],
                          env={**os.environ, "DO_NOT_TRACK": "1"})
    signal.signal(signal.SIGTERM, lambda *_: ui.terminate())
    try:
        while ui.poll() is None:
            try:
                ui.wait(refresh_seconds)
            except subprocess.TimeoutExpired:
                if remote:
                    sync(settings)
    except KeyboardInterrupt:
        ui.terminate()
    return ui.wait()


def number_name(name: str, label: str | None = None) -> str:
    """The column of a number in the numbers snapshot: the signal's name, or ``breakdown: label``."""
    return name if label is None else f"{name}: {label}"


def record(settings: Settings, result: dict[str, Any], reports: list[Any]) -> str:
    """Adds one check (``CheckResult.to_dict()`` with its final reasons, and the Evidently snapshots the check
    made) to its family's project and rebuilds the project's dashboard. Returns the project's id."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    family = result["family"]
    when = dt.datetime.fromisoformat(result["data_until"]) if result.get("data_until") else dt.datetime.now(dt.UTC)
    workspace = open_workspace(settings)
    project = project_of(workspace, family)
    for snapshot in reports:
        workspace.add_run(project.id, snapshot, include_data=False)
    numbers = _numbers(settings, result)
    methods = {c: f"{v['method']} {v['threshold']:g}" for c, v in result.get("columns", {}).items()}
    table = pd.DataFrame({k: [v] for k, v in numbers.items()})
    decision = "; ".join(result.get("reasons") or []) or "no action"
    report = Report([MeanValue(column=c) for c in numbers], tags=[
        f"model v{result['model_version']}", f"data {result['current_version']}",
        "retrain" if result.get("reasons") else "no retrain"],
        metadata={"model_version": str(result["model_version"]), "reference_version": result["reference_version"],
                  "current_version": result["current_version"], "decision": decision[:500]})
    snapshot = report.run(Dataset.from_pandas(table, data_definition=DataDefinition(numerical_columns=list(numbers))),
                          None, timestamp=when,
                          name=f"v{result['model_version']} on {result['current_version']}: {decision}"[:200])
    workspace.add_run(project.id, snapshot, include_data=False)
    _dashboard(project, family, methods, list(numbers))
    return str(project.id)


def _numbers(settings: Settings, result: dict[str, Any]) -> dict[str, float]:
    checks: Checks = catalog.load(catalog.entry(result["family"]).checks)
    out = {k: float(v) for k, v in result.get("signals", {}).items()}
    out["model_version"] = float(result["model_version"])
    for name, values in result.get("breakdown", {}).items():
        out.update({number_name(name, label): float(v) for label, v in values.items()})
    for view in checks.views:
        if view.threshold:
            out[number_name("threshold", view.threshold)] = float(getattr(settings.monitoring, view.threshold))
    return {k: v for k, v in out.items() if math.isfinite(v)}  # a number that could not be computed is not drawn


def _dashboard(project: Any, family: str, methods: dict[str, str], numbers: list[str]) -> None:
    """Every panel again, with the lines of the panels before and this check's: its drift-tested columns
    (``methods``: column -> its method and threshold) and the ``numbers`` its snapshot holds (a view's signals, a
    breakdown's labels, the threshold drawn last)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    before: dict[str, list[str]] = {}  # panel title -> its columns, in order
    for panel in project.dashboard.model().panels:
        before[panel.title] = [v.metric_labels.get("column", "") for v in panel.values]

    def columns(title: str, now: list[str]) -> list[str]:
        return list(dict.fromkeys([*before.get(title, []), *now]))

    checks: Checks = catalog.load(catalog.entry(family).checks)
    panels = [line_plot_panel(DRIFT, [PanelMetric(legend=c, metric="ValueDrift", metric_labels={"column": c})
                                      for c in columns(DRIFT, list(methods))],
                              description="Evidently's drift score of each input the model reads, by its method and "
                                          "threshold (" + (", ".join(f"{c}: {m}" for c, m in methods.items())
                                                           or "none yet")
                                          + "): a distance drifts above its threshold, a p-value below",
                              size="full")]
    for view in (*checks.views, *COMMON):
        mine = [n for n in numbers if n.startswith(number_name(view.breakdown, ""))] if view.breakdown else \
            [s for s in view.signals if s in numbers]
        threshold = [number_name("threshold", view.threshold)] if view.threshold else []
        names = [n for n in columns(view.title, mine) if n not in threshold] + threshold if mine else []
        if not names:
            continue
        lines = [PanelMetric(legend=_legend(n, view), metric="MeanValue", metric_labels={"column": n}) for n in names]
        panels.append(line_plot_panel(view.title, lines, description=view.description, size="half"))
    project.dashboard.clear_dashboard()
    for panel in panels:
        project.dashboard.add_panel(panel)


def _legend(name: str, view: View) -> str:
    if view.threshold and name == number_name("threshold", view.threshold):
        return "retrain threshold"
    return name.split(": ", 1)[-1] if view.breakdown else name
