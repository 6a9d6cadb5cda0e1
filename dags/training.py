"""Training DAG: one definition mapped over the model families.

Parsing imports only the Airflow SDK and :mod:`zmlops.catalog`; every step imports its
libraries when it runs (:mod:`training.pipeline`).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from governance.respondents import answer_of, board_arguments
from zmlops.catalog import FAMILIES, retrain_asset_uri

# ZM_DAG_SCHEDULES=off (the demo) keeps the asset trigger and drops the clock.
CLOCKS_OFF = os.environ.get("ZM_DAG_SCHEDULES") == "off"
RETRAIN_ASSETS = [Asset(uri=retrain_asset_uri(f), name=f"retrain-{f}") for f in FAMILIES]
APPROVAL_TIMEOUT = dt.timedelta(hours=float(os.environ.get("ZM_APPROVAL__TIMEOUT_HOURS", "72")))
APPROVAL_ROLE = os.environ.get("ZM_APPROVAL__ROLE", "model-approvers")


def data_step_pod() -> dict[str, Any]:
    """k8s profile: the data steps' pods (validate, features) request the data memory budget
    (``ZM_DATA__MEMORY_BUDGET_MB``) and are limited to it plus the interpreter's headroom, so a larger delivery
    takes longer but never needs a larger pod. Other executors ignore it (empty)."""
    if os.environ.get("ZM_PROFILE") != "k8s":
        return {}
    from kubernetes.client import models as k8s

    from zmlops.settings import DataSettings

    budget = os.environ.get("ZM_DATA__MEMORY_BUDGET_MB")
    data = DataSettings(memory_budget_mb=int(budget)) if budget else DataSettings()
    resources = k8s.V1ResourceRequirements(requests={"memory": f"{data.memory_budget_mb}Mi"},
                                           limits={"memory": f"{data.pod_memory_mb}Mi"})
    return {"pod_override": k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base",
                                                                                      resources=resources)]))}

DOC = """
### zmlops_training
Pulls a DVC data version, gates it with Great Expectations, builds features and materializes
Feast, then per model family (mapped tasks): training set from Feast, fit, evaluation against
the baseline and the production champion, registration, `staging` when the gate passes, model card.
Then the review board (`approve`, Airflow's approval task) where approval is required
(`ZM_APPROVAL__REQUIRED`, default in the k8s profile): it shows each staged version's gate figures,
its difference to production and its model card, and waits (without a worker slot) for Approve or
Reject in the UI or the REST API from a holder of the role `ZM_APPROVAL__ROLE` (`model-approvers`;
anyone else gets 403, `governance/board_auth.py`); unanswered within `ZM_APPROVAL__TIMEOUT_HOURS` it rejects. A
rejection skips deployment. Last, `deploy` (only it moves `production`): the canary where a rollout
serves the family, otherwise the alias moves and the step waits until the predictors serve it. Then `score`
(batch scoring, `training/batch.py`): production answers every request of the family's batch (every category's
forecast, every customer's segment and top-10 products) into Parquet in the object store (`batch/<family>/`).

**Triggers**: weekly (Monday 03:00 UTC), a retrain asset event from the monitoring DAG or the
Alertmanager receiver (only the affected family trains; the reason becomes the run's `reason`
tag), or by hand with params:

* `data_version`: `latest` (default) or its synonym `current`, the newest version that passed the gate; or `vN`.
  The validate task runs the gate on it again either way
* `families`: which families (default every family of the catalog, `zmlops/catalog.py`)
* `reason`: recorded on the MLflow run and the model version

A data version that fails validation stops the run before training; production is unchanged.
Re-running any task for the same data version reuses what it produced.
"""


class ModelApproval(ApprovalOperator):  # type: ignore[misc]
    """The review board: Airflow's approval task, its answer recorded on every version it was asked about.

    The task waits without a worker slot (``awaiting_input``); whoever answers in the UI or the REST API
    (``/api/v2/hitlDetails``) is recorded in the audit trail, and a rejection (or the timeout) leaves
    production unchanged: the deploy tasks are skipped.
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from training import pipeline
        from zmlops.settings import get_settings

        if "error" not in event:  # recorded first: on Reject, Airflow's skip of `deploy` ends this call by raising
            self.validate_chosen_options(event["chosen_options"])
            approved, by, why = answer_of(event, self.APPROVE, self.response_timeout)
            asked = context["ti"].xcom_pull(task_ids="review")
            pipeline.answer(get_settings(), asked["versions"], approved, by, why)
        return super().execute_complete(context=context, event=event)


@dag(
    dag_id="zmlops_training",
    description="Validate data, build features, train, gate, register, promote and deploy the models",
    schedule=AssetAny(*RETRAIN_ASSETS)  # every family's retrain asset, however many the catalog has
    if CLOCKS_OFF
    else AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
        assets=AssetAny(*RETRAIN_ASSETS),
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["zmlops", "training"],
    doc_md=DOC,
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "execution_timeout": dt.timedelta(minutes=30),
    },
    params={
        "data_version": Param("latest", type="string",
                              description="DVC data version: latest (default) or current, both the newest that "
                              "passed the gate, or vN; the validate task checks it again"),
        "families": Param(list(FAMILIES), type="array", items={"type": "string", "enum": list(FAMILIES)},
                          description="model families to train"),
        "reason": Param("manual", type="string", description="why this run trains (recorded on the runs)"),
        "tune": Param(None, type=["null", "boolean"],
                      description="run each family's Optuna study first (training/tuning.py; budget "
                      "ZM_TUNING__BUDGET_SECONDS per family); null: the ZM_TUNING__ENABLED setting"),
    },
)
def zmlops_training() -> None:
    @task
    def resolve(params: dict[str, Any] | None = None) -> str:
        from governance import audit
        from training import pipeline
        from zmlops.settings import get_settings

        settings = get_settings()
        audit.record_start(settings, "zmlops_training")  # the settings this run's task pods start with
        return pipeline.resolve_version(settings, str((params or {}).get("data_version", "latest")))

    @task(retries=0, executor_config=data_step_pod())  # bad data does not get better by retrying
    def validate(version: str) -> str:
        from training import pipeline
        from zmlops.settings import get_settings

        pipeline.validate(get_settings(), version)
        return version

    @task(executor_config=data_step_pod())
    def features(version: str) -> str:
        from training import pipeline
        from zmlops.settings import get_settings

        print(pipeline.features(get_settings(), version))
        return version

    @task
    def plan(params: dict[str, Any] | None = None, triggering_asset_events: Any = None,
             run_id: str | None = None) -> list[dict[str, str]]:
        from training import pipeline

        events: dict[str, list[dict[str, Any]]] = {}
        for asset, fired in (triggering_asset_events or {}).items():
            uri = str(getattr(asset, "uri", asset))
            events[uri] = [dict(getattr(e, "extra", None) or {}) for e in fired]
        params = params or {}
        reason = str(params.get("reason") or "manual")
        if run_id and run_id.startswith("scheduled"):
            reason = "scheduled weekly retrain"
        jobs = pipeline.plan(params.get("families") or [], events, reason)
        print(f"training {jobs}")
        return jobs

    @task
    def review(outcomes: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from training import pipeline
        from zmlops.settings import get_settings

        asked = pipeline.review(get_settings(), [o for o in outcomes if o])
        if asked is None:
            raise AirflowSkipException("nothing waits for the review board (not staged, or approval not required)")
        print(asked["subject"])
        return asked

    @task(max_active_tis_per_dag=1)  # one training at a time: each uses both cores
    def train(job: dict[str, str], version: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from training import pipeline
        from zmlops.settings import get_settings

        tune = (params or {}).get("tune")
        return pipeline.train(get_settings(), job["family"], version, job["reason"],
                              tune=None if tune is None else bool(tune))

    @task(trigger_rule="none_failed")  # approval skipped: nothing needed it; rejected: the board skips this
    def deploy(outcome: dict[str, Any]) -> dict[str, Any]:
        from delivery.promotion import deploy as deploy_version
        from zmlops.settings import get_settings

        result = deploy_version(get_settings(), outcome)
        print(result)
        return result

    # with whatever production is once deploy ended (moved, kept or rejected); one task for every family trained,
    # as each task process costs about 14 CPU-s before it does anything
    @task(trigger_rule="none_failed")
    def score(outcomes: Any) -> list[dict[str, Any]]:
        from training import batch
        from zmlops.settings import get_settings

        results = []
        for outcome in outcomes:
            results.append(batch.score(get_settings(), str(outcome["family"])))
            print(results[-1])
        return results

    version = features(validate(resolve()))
    outcomes = train.partial(version=version).expand(job=plan())
    asked = review(outcomes)
    board = ModelApproval(**board_arguments(APPROVAL_ROLE, APPROVAL_TIMEOUT), retries=0)
    asked >> board >> deploy.expand(outcome=outcomes) >> score(outcomes)


training_dag = zmlops_training()
