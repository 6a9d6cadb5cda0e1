"""The privacy DAG in real dag.test() runs: a customer's access bundle, then their erasure, requested by the audit
subject hash; the privacy board's answer; the id never reaches Airflow's database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.dags.conftest import ApprovalTaskInstance, load_dag

pytestmark = pytest.mark.dags


@pytest.fixture
def featured(zm_home: Path) -> Path:
    """A gated simulated version with its features published (no model yet)."""
    from training.data import ingest
    from training.data.world import SimulationConfig
    from training.features.store import prepare_features
    from zmlops.settings import get_settings

    settings = get_settings()
    version = ingest.snapshot_simulated(settings, SimulationConfig(seed=11, n_customers=300, n_products=150,
                                                                   weeks=30))
    ingest.validate_version(settings, version.name)
    prepare_features(settings, version.name)
    return zm_home


def _customer(home: Path) -> int:
    clean = pd.read_parquet(home / "work" / "v1" / "clean.parquet", columns=["customer_id"])
    return int(clean["customer_id"].value_counts().index[2])


def _carried_out(run: Any) -> dict[str, Any]:
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    [ti] = [ti for ti in run.get_task_instances() if ti.task_id == "carry_out"]
    return dict(ti.xcom_pull(task_ids="carry_out"))


def test_export_then_erase_by_subject_hash_and_the_id_never_reaches_airflow(airflow_db: Path,
                                                                            featured: Path) -> None:
    from governance import audit, consent, requests
    from governance.access import export_keys
    from governance.scan import scan
    from zmlops.settings import get_settings
    from zmlops.stores import object_store

    settings = get_settings()
    customer = _customer(featured)
    subject = consent.subject_hash(settings, customer)
    dag = load_dag("privacy").privacy_dag  # type: ignore[attr-defined]

    exported = _carried_out(dag.test(run_conf={"request": "export", "subject": subject, "reason": "ticket 1"}))
    bundle = json.loads(object_store(settings).get(exported["bundle"]) or b"{}")
    assert bundle["customer_id"] == customer and exported["transactions"]["v1"] == len(bundle["transactions"]["v1"])
    assert exported["bundle"].startswith(f"privacy/exports/{subject}/")
    assert {h.store for h in scan(settings, customer)[0] if "privacy/" in h.where} == {"object store"}

    erased = _carried_out(dag.test(run_conf={"request": "erase", "subject": subject, "reason": "ticket 2"}))
    assert erased["new_version"] == "v2" and erased["retired"] == ["v1"] and erased["access_bundles_deleted"] == 1
    assert export_keys(settings, subject) == []
    # nothing trained on their data yet: only the audit trail, the erasure register and Airflow's records of the
    # requests (run parameters, results) name them, by the hash
    assert set(erased["left"]) == {"state database: zm_audit", "state database: zm_erasures",
                                   "Airflow database: dag_run", "Airflow database: xcom"}, erased["left"]
    assert requests.find_customer(settings, subject) is None  # no retained version holds them now
    actions = [e.action for e in audit.entries(settings, "privacy.*", f"customer:{subject}")]
    assert actions == ["privacy.export_requested", "privacy.exported", "privacy.erase_requested", "privacy.erased",
                       "privacy.scanned"], actions
    # Airflow's own records of both runs (parameters, XCom, task logs) hold the subject hash, nothing else of theirs
    hits, _ = scan(settings, customer)
    assert {h.store for h in hits} == {"state database", "Airflow database"}, hits
    assert all("audit subject hash" in h.what for h in hits), hits
    assert "dag_run" in {h.where for h in hits if h.store == "Airflow database"}, hits


def test_a_subject_that_is_not_a_hash_is_refused_before_the_run_starts(airflow_db: Path, zm_home: Path) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    dag = load_dag("privacy").privacy_dag  # type: ignore[attr-defined]
    with pytest.raises(ParamValidationError, match="subject"):
        dag.test(run_conf={"request": "erase", "subject": "12345", "reason": "ticket 3"})


def test_an_erasure_waits_for_the_privacy_board_and_its_answer_is_audited(featured: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import DownstreamTasksSkipped

    from governance import audit, consent, requests
    from governance.access import export_keys, prune_exports
    from zmlops.settings import get_settings

    monkeypatch.setenv("ZM_PRIVACY__APPROVAL_REQUIRED", "true")
    get_settings.cache_clear()
    settings = get_settings()
    subject = consent.subject_hash(settings, _customer(featured))
    asked = requests.review(settings, "erase", subject, "ticket 5", "run-5")
    assert asked is not None and asked["customer"] == subject and "cannot be undone" in asked["body"]
    assert requests.review(settings, "export", subject, "ticket 5", "run-5") is None  # only erasures wait
    with pytest.raises(PermissionError, match="not approved"):
        requests.carry_out(settings, "erase", subject, "ticket 5", "run-5")
    bundle = requests.carry_out(settings, "export", subject, "ticket 4", "run-4")["bundle"]  # no board for access
    now = dt.datetime.now(dt.UTC)
    assert prune_exports(settings, now + dt.timedelta(days=6)) == [] and export_keys(settings) == [bundle]
    assert prune_exports(settings, now + dt.timedelta(days=settings.privacy.export_retention_days, minutes=1)) \
        == [bundle] and export_keys(settings) == []

    approve = load_dag("privacy").privacy_dag.get_task("approve")  # type: ignore[attr-defined]
    ti = ApprovalTaskInstance(asked)
    context = {"ti": ti, "task_instance": ti, "task": approve}
    event = {"chosen_options": ["Reject"], "params_input": {"reason": "identity not verified"},
             "responded_at": dt.datetime.now(dt.UTC), "responded_by_user": {"id": "7", "name": "dpo"}}
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        approve.execute_complete(context=context, event=event)
    assert "carry_out" in str(skipped.value.tasks)
    with pytest.raises(PermissionError):
        requests.carry_out(settings, "erase", subject, "ticket 5", "run-5")

    event = {**event, "chosen_options": ["Approve"], "params_input": {"reason": "verified"}}
    approve.execute_complete(context=context, event=event)
    answers = [(e.action, e.actor, e.details["why"]) for e in audit.entries(settings, "privacy.erasure_*")]
    assert answers == [("privacy.erasure_rejected", "dpo", "identity not verified"),
                       ("privacy.erasure_approved", "dpo", "verified")]
    assert requests.carry_out(settings, "erase", subject, "ticket 5", "run-5")["new_version"] == "v2"
    with pytest.raises(PermissionError):  # an approval is for its own run only
        requests.carry_out(settings, "erase", subject, "ticket 5", "run-6")
    get_settings.cache_clear()
