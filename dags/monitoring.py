"""Monitoring DAG: drift and quality checks per model, reports, metrics, and re-entry into training.

Parsing imports only the Airflow SDK and :mod:`zmlops.catalog`.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from zmlops.catalog import FAMILIES, retrain_asset_uri

DOC = """
### zmlops_monitoring
Compares the newest good data version with the data each production model was trained on:
Evidently data drift on stationary features (the method per column is in the report), plus
per-model signals: realised forecast accuracy on the weeks since training, segment share shift,
and the share of sales from products the recommender never saw.

Results: an Evidently HTML report and a JSON summary per model in the object store's
`reports/monitoring/`, with `index.html` listing every report; the numbers in
`reports/monitoring/metrics.prom` (Prometheus text format, also pushed to the Pushgateway); and for
each model that should retrain, one event on its retrain asset, which starts the training DAG for
that model with the reason. An incident (model version x data version) re-enters training once,
however often the check repeats. The `retention` task deletes request-log days older than
`ZM_REQUEST_LOG__RETENTION_DAYS` and check reports older than `ZM_MONITORING__REPORT_RETENTION_DAYS`
(each model's newest stays), access bundles older than `ZM_PRIVACY__EXPORT_RETENTION_DAYS`, data
versions older than `ZM_PRIVACY__DATA_RETENTION_DAYS` (but the current one and those a model version
with an alias was trained on), and the model versions trained on a retired data version (all but
production). A family whose production version was trained on such a version is sent back to
training, and the erasure's deadline is published for the alert rules. Before any model is in
production (a fresh install) the checks are skipped.

Params: `data_version` (default `current`).
"""


@dag(
    dag_id="zmlops_monitoring",
    description="Drift and quality checks of the production models; re-enters training on drift",
    schedule=None if os.environ.get("ZM_DAG_SCHEDULES") == "off" else "@daily",  # off: the demo drives it
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["zmlops", "monitoring"],
    doc_md=DOC,
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "execution_timeout": dt.timedelta(minutes=20),
    },
    params={"data_version": Param("current", type="string", description="data version to check: current or vN")},
)
def zmlops_monitoring() -> None:
    @task
    def resolve(params: dict[str, Any] | None = None) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from governance import audit
        from training import pipeline
        from zmlops.settings import get_settings

        settings = get_settings()
        audit.record_start(settings, "zmlops_monitoring")  # the settings this run's task pods start with
        if not pipeline.in_production(settings):  # a fresh install: the checks and re-entries are skipped
            raise AirflowSkipException("no model is in production yet: nothing to monitor")
        return pipeline.resolve_version(settings, str((params or {}).get("data_version", "current")))

    @task
    def check(family: str, version: str) -> dict[str, Any] | None:
        from monitoring.drift import check_family
        from monitoring.loop import monitoring_dir, save_result
        from zmlops.settings import get_settings

        settings = get_settings()
        try:
            checked = check_family(settings, family, version, monitoring_dir(settings))
        except LookupError as missing:  # nothing in production yet: nothing to monitor
            print(missing)
            return None
        result = checked.to_dict()
        from governance.erasure import retired_production

        erased = retired_production(settings, family)  # an erasure retired its training data: retrain without it
        if erased:
            result["reasons"].append(erased.reason)
            if erased.retrain_by is not None:  # published: the alert rules watch the deadline
                result["erasure_retrain_by"] = erased.retrain_by.timestamp()
        from monitoring.workspace import store_reports

        result["evidently"] = store_reports(settings, result, checked.reports)  # publish adds them to the workspace
        save_result(settings, result)
        print(f"{family}: drift share {result['drift_share']:.2f}, signals {result['signals']}, "
              f"decision: {'; '.join(result['reasons']) or 'no action'}")
        return result

    @task
    def publish(results: Any) -> str:
        from monitoring.loop import write_index, write_metrics
        from zmlops.settings import get_settings

        settings = get_settings()
        found = [r for r in results if r]
        write_metrics(settings, found)
        index = write_index(settings)
        print(f"reports: {index}")
        from monitoring.workspace import prune, record_stored

        for result in found:  # one writer: the mapped checks ran side by side, the workspace takes them in turn
            try:  # the analysts' view must not hold back the re-entries that follow
                print(f"{result['family']}: in the analysts' workspace, project {record_stored(settings, result)}")
            except Exception as error:  # noqa: BLE001 - any storage or Evidently error: said in the log
                print(f"WARNING {result['family']}: the check is not in the analysts' workspace "
                      f"({settings.evidently_workspace}): {type(error).__name__}: {error}")
        try:  # the workspace's one writer prunes it too
            print(f"workspace snapshots deleted (data weeks older than "
                  f"{settings.monitoring.workspace_retention_days} days): {prune(settings)}")
        except Exception as error:  # noqa: BLE001 - as above
            print(f"WARNING the analysts' workspace was not pruned: {type(error).__name__}: {error}")
        return str(index)

    @task
    def retention() -> dict[str, list[str]]:
        from monitoring.loop import prune_reports
        from monitoring.requests import prune_log
        from zmlops.settings import get_settings

        settings = get_settings()
        gone = {family: prune_log(settings, family) for family in FAMILIES}
        print(f"request-log days deleted (older than {settings.request_log.retention_days} days): {gone}")
        reports = prune_reports(settings)
        print(f"check reports deleted (older than {settings.monitoring.report_retention_days} days): {len(reports)}")
        from governance.erasure import expire_versions, forget_models

        expired = expire_versions(settings)  # data versions past privacy.data_retention_days, not in use
        print(f"data versions retired (older than {settings.privacy.data_retention_days} days): {expired}")
        forgotten = forget_models(settings)  # versions trained on erased (retired) data, no longer served
        print(f"model versions deleted (trained on retired data): {forgotten}")
        from governance.access import prune_exports

        bundles = prune_exports(settings)
        print(f"access bundles deleted (older than {settings.privacy.export_retention_days} days): {len(bundles)}")
        return {**gone, "reports": reports, "data": expired, "models": forgotten, "bundles": bundles}

    @task
    def experiments() -> list[dict[str, Any]]:
        """Each running A/B test's look for the day (delivery.experiments, from the request and event logs),
        recorded; a decided one is carried out through the promotion path."""
        from delivery import experiments as x
        from monitoring.loop import write_experiment_metrics
        from zmlops.settings import get_settings

        settings = get_settings()
        out, analyses = [], []
        for name in x.running_names(settings):
            analysis = x.analyse_running(settings, name)
            analyses.append(analysis.to_dict())
            done = x.carry_out(settings, analysis) if analysis.decision != "continue" else None
            print(f"experiment {name}: {analysis.decision}: {analysis.reason}" + (f"; {done}" if done else "")
                  + "".join(f"; {note}" for note in analysis.notes))
            out.append({"experiment": name, "decision": analysis.decision, "reason": analysis.reason,
                        "looks": len(analysis.looks), "carried_out": done})
        if analyses:
            write_experiment_metrics(settings, analyses)  # the experiments dashboard
        return out

    version = resolve()
    results = check.partial(version=version).expand(family=list(FAMILIES))
    publish(results)
    retention()
    experiments()

    for family in FAMILIES:  # one task per family: a task emits events on all of its outlets
        asset = Asset(uri=retrain_asset_uri(family), name=f"retrain-{family}")

        @task(task_id=f"reenter_{family.replace('-', '_')}", outlets=[asset])
        def reenter(results: Any, family: str = family, asset: Asset = asset,
                    outlet_events: Any = None) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from monitoring.loop import claim_incident
            from zmlops.settings import get_settings

            mine = next((r for r in results if r and r["family"] == family), None)
            if mine is None or not mine["reasons"]:
                raise AirflowSkipException(f"{family}: no drift or quality problem")
            reason = "; ".join(mine["reasons"])
            if not claim_incident(get_settings(), mine["incident"], "monitoring DAG", reason):
                raise AirflowSkipException(f"{family}: incident {mine['incident']} already re-entered training")
            outlet_events[asset].extra = {"reason": f"drift: {reason}", "incident": mine["incident"]}
            print(f"{family}: retraining requested ({reason})")
            return {"family": family, "incident": mine["incident"], "reason": reason}

        reenter(results)


monitoring_dag = zmlops_monitoring()
