"""Privacy DAG: one data subject's request (export, erase, scan), with the privacy board before an erasure.

Parsing imports only the Airflow SDK and :mod:`governance.respondents`; the steps are
:mod:`governance.requests`.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, task

from governance.respondents import answer_of, board_arguments

APPROVAL_TIMEOUT = dt.timedelta(hours=float(os.environ.get("ZM_APPROVAL__TIMEOUT_HOURS", "72")))
PRIVACY_ROLE = os.environ.get("ZM_PRIVACY__APPROVAL_ROLE", "privacy-officers")

DOC = """
### zmlops_privacy
Serves one customer's request under the GDPR, named by the customer's **audit subject hash** (16 hex
characters: `zm privacy subject CUSTOMER_ID` prints it, where the pipelines' settings are). Airflow keeps
a run's parameters and logs where an erasure cannot reach, so the id never enters them; each step finds
the customer again in the retained data versions.

* `export`: the access bundle (transactions in every retained data version, features, segment, answers
  served, model versions trained on their data, consent history) to the object store,
  `privacy/exports/<subject>/<time>.json`; deleted after `ZM_PRIVACY__EXPORT_RETENTION_DAYS` (7).
* `erase`: where `ZM_PRIVACY__APPROVAL_REQUIRED` (default in the k8s profile), the privacy board first
  (`approve`, Airflow's approval task, answered by holders of `ZM_PRIVACY__APPROVAL_ROLE`,
  `privacy-officers`; unanswered within `ZM_APPROVAL__TIMEOUT_HOURS` it rejects). Then the erasure from every
  store and a scan; what is left (the models trained on their data, until the monitoring DAG has them
  retrained and deletes the old versions) is in the run's result and the audit trail.
* `scan`: where the customer is, store by store.

Every request, answer and result is an audit entry under `customer:<subject>`.
"""


class PrivacyApproval(ApprovalOperator):  # type: ignore[misc]
    """The privacy board: Airflow's approval task; the answer is an audit entry of the customer's subject, and a
    rejection (or the timeout) skips the erasure."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from governance import requests
        from zmlops.settings import get_settings

        if "error" not in event:  # recorded first: on Reject, Airflow's skip of `carry_out` ends this call by raising
            self.validate_chosen_options(event["chosen_options"])
            approved, by, why = answer_of(event, self.APPROVE, self.response_timeout)
            asked = context["ti"].xcom_pull(task_ids="review")
            requests.answer(get_settings(), asked["customer"], asked["run"], approved, by, why)
        return super().execute_complete(context=context, event=event)


@dag(
    dag_id="zmlops_privacy",
    description="A customer's request: export their data, erase them (after the privacy board), or find them",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # one erasure at a time: each makes a data version
    tags=["zmlops", "privacy"],
    doc_md=DOC,
    default_args={"retries": 0, "retry_delay": dt.timedelta(seconds=30),
                  "execution_timeout": dt.timedelta(minutes=60)},
    params={
        "request": Param("export", type="string", enum=["export", "erase", "scan"],
                         description="export (right of access), erase (right to erasure) or scan (where are they?)"),
        "subject": Param("", type="string", pattern="^[0-9a-f]{16}$",
                         description="the customer's audit subject hash: zm privacy subject CUSTOMER_ID"),
        "reason": Param("", type="string", minLength=1, description="the request's reference (recorded)"),
    },
)
def zmlops_privacy() -> None:
    @task
    def review(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from governance import audit, requests
        from zmlops.settings import get_settings

        settings = get_settings()
        params = params or {}
        audit.record(settings, f"privacy.{params['request']}_requested", f"customer:{params['subject']}",
                     {"run": run_id, "reason": params["reason"]})
        asked = requests.review(settings, params["request"], params["subject"], params["reason"], str(run_id))
        if asked is None:
            raise AirflowSkipException(f"{params['request']}: no approval needed")
        print(asked["subject"])
        return asked

    @task(trigger_rule="none_failed")  # approval skipped: nothing needed it; rejected: the board skips this
    def carry_out(params: dict[str, Any] | None = None, run_id: str | None = None,
                  dag_run: Any = None) -> dict[str, Any]:
        from governance import requests
        from zmlops.settings import get_settings

        params = params or {}
        who = getattr(dag_run, "triggering_user_name", None)
        done = requests.carry_out(get_settings(), params["request"], params["subject"], params["reason"],
                                  str(run_id), actor=who)
        print(done)
        return done

    board = PrivacyApproval(**board_arguments(PRIVACY_ROLE, APPROVAL_TIMEOUT))
    review() >> board >> carry_out()


privacy_dag = zmlops_privacy()
