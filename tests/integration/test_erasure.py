"""The right to erasure end to end on simulated data: a customer is erased from every store, the predictors' stores
and the data registry's history included; after the models trained on their data are retrained and the old
versions forgotten, the scanner finds nothing but the audit trail's keyed hash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.request_rows import log_answers
from training.data.world import SimulationConfig
from zmlops.settings import Settings

pytestmark = pytest.mark.integration

PERSONAL = ("customer-segmentation", "product-recommendation")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """v1 ingested and gated, features published, the two families that learn per customer in production."""
    from delivery.promotion import deploy
    from training import run
    from training.data import ingest
    from training.features.store import prepare_features

    settings = Settings(home=tmp_path_factory.mktemp("erasure") / "zm")
    ingest.registry_for(settings).ensure()
    version = ingest.snapshot_simulated(settings, SimulationConfig(seed=11, n_customers=1000, n_products=600))
    ingest.validate_version(settings, version.name)
    prepare_features(settings, version.name)
    for family in PERSONAL:
        assert deploy(settings, run.train_family(settings, family, version.name).to_dict())["deployed"]
    yield settings


def _online(settings: Settings, customer: int) -> list[object]:
    from feature_repo.names import PROFILE_FEATURES
    from governance.access import online_profile

    profile = online_profile(settings, customer) or {}
    return [profile.get(n) for n in PROFILE_FEATURES]


def test_an_erased_customer_is_nowhere_but_in_the_audit_trail_s_keyed_hash(served: Settings) -> None:
    from delivery.promotion import deploy
    from governance import audit, consent, erasure
    from governance.scan import scan
    from training import run
    from training.data import ingest
    from training.data.versions import VersionRetired
    from zmlops.stores import object_store

    settings = served
    registry = ingest.registry_for(settings)
    clean = pd.read_parquet(settings.work / "v1" / "clean.parquet", columns=["customer_id"])
    customer, other = (int(c) for c in clean["customer_id"].value_counts().index[[3, 4]])
    raw_rows = int((pd.read_parquet(settings.work / "v1" / "raw" / "transactions.parquet")["Customer ID"]
                    == customer).sum())
    log_answers(settings, "product-recommendation", (customer, other), k=3)
    consent.record(settings, customer, profiling=True, personalisation=True, source="test: web form")
    from training import batch

    for family in PERSONAL:  # the score task's answers for everyone, the customer among them
        assert batch.score(settings, family)["scored"]
        assert customer in set(batch.latest(settings, family)["customer_id"])
    assert all(v is not None for v in _online(settings, customer))
    v1_objects = registry.objects("v1")

    done = erasure.erase(settings, customer, "ticket 4711")

    # data: a new gated version without them; v1 retired, its bytes gone from the DVC cache and the remote
    assert done["new_version"] == "v2" and done["retired"] == ["v1"] and done["raw_rows_removed"] == raw_rows > 0
    assert registry.current().name == "v2" and registry.get("v1").status == "retired"
    with pytest.raises(VersionRetired, match="ticket 4711"):
        registry.fetch(registry.get("v1"), settings.home / "nope")
    for path in v1_objects:
        assert not (settings.registry_dir / ".dvc" / "cache" / path).exists()
        assert not (Path(settings.remote_url) / path).exists()
    assert not object_store(settings).keys("work/v1")
    for family in PERSONAL:  # the answers computed on v1 went with it; answers now leave them out, though the
        assert not object_store(settings).keys(f"batch/{family}/v1")  # models trained on v1 still know them
        with pytest.raises(LookupError, match="not been batch-scored"):
            batch.latest(settings, family)
    validations = object_store(settings).keys("reports/validation")  # Great Expectations results and Data Docs
    assert not [k for k in validations if "/v1-raw" in k or "/v1-clean" in k]
    assert [k for k in validations if "/v2-raw" in k]
    index = object_store(settings).get("reports/validation/gx/uncommitted/data_docs/local_site/index.html") or b""
    assert b"v2-raw" in index and b"v1-raw" not in index
    # features offline and online, the request log, the consent register: gone; another customer untouched
    assert all(v is None for v in _online(settings, customer))
    assert all(v is not None for v in _online(settings, other))
    text = b"".join(object_store(settings).get(k) or b"" for k in object_store(settings).keys("requests"))
    assert consent.pseudonym(settings, customer).encode() not in text
    assert consent.pseudonym(settings, other).encode() in text
    assert consent.history(settings, customer) == []
    # an access request now finds no transaction of theirs (the retired version's bytes are gone, not read)
    from governance.access import export

    assert export(settings, customer, settings.home / "after-erasure.json")["transactions"] == {"v2": 0}
    # the predictors' suppression list and the audit entry, by the keyed hash only
    subject = consent.audit_subject(settings, customer)
    assert subject.removeprefix("customer:") in erasure.erased_subjects(settings)
    entry = next(e for e in audit.entries(settings) if e.action == "privacy.erased")
    assert entry.subject == subject and str(customer) not in json.dumps(entry.to_dict())
    # what is left: the models trained on v1, which the monitoring DAG's check now sends back to training
    hits, _ = scan(settings, customer)
    assert {h.store for h in hits} == {"MLflow", "state database"}, hits
    for family in PERSONAL:
        assert batch.score(settings, family)["data_version"] == "v2"
        answers = batch.latest(settings, family)
        assert customer not in set(answers["customer_id"]) and other in set(answers["customer_id"]), family
    hits, _ = scan(settings, customer)
    assert {h.store for h in hits} == {"MLflow", "state database"}, hits
    assert {h.where for h in hits if h.store == "state database"} == {"zm_audit", "zm_erasures"}
    assert all("audit subject hash" in h.what for h in hits if h.store == "state database")
    overdue = [erasure.retired_production(settings, f) for f in PERSONAL]  # re-enter training, with the deadline
    assert all(o is not None and o.retrain_by is not None and o.retrain_by.isoformat(timespec="seconds")
               == done["retrain_by"] for o in overdue), overdue

    for family in PERSONAL:  # the retraining the check asks for, then the retention task's forgetting
        assert deploy(settings, run.train_family(settings, family, "v2", reason="erasure").to_dict())["deployed"]
    assert not any(erasure.retired_production(settings, f) for f in PERSONAL)
    assert sorted(erasure.forget_models(settings)) == [f"{f} v1" for f in PERSONAL]
    hits, _ = scan(settings, customer)
    assert {h.store for h in hits} == {"state database"} and all("audit subject hash" in h.what for h in hits), hits


def test_retention_retires_old_data_versions_but_the_current_one_and_those_in_use(tmp_path: Path) -> None:
    """The monitoring DAG's retention of data versions: past ``privacy.data_retention_days`` a version is retired
    as an erasure retires one (bytes, derived tables, validation results), unless it is current or a model version
    with an alias was trained on it."""
    import datetime as dt

    import mlflow

    from governance.erasure import expire_versions
    from training import tracking
    from training.data import ingest
    from zmlops.stores import object_store

    settings = Settings(home=tmp_path / "zm")
    for seed in (1, 2, 3):
        version = ingest.snapshot_simulated(settings, SimulationConfig(seed=seed, n_customers=200, n_products=100,
                                                                       weeks=20))
        ingest.validate_version(settings, version.name)
    client = tracking.client(settings)
    client.create_registered_model("customer-segmentation")
    in_use = client.create_model_version("customer-segmentation", str(tmp_path / "model"),
                                         tags={"data_version": "v2"})
    client.set_registered_model_alias("customer-segmentation", "previous", in_use.version)
    now = dt.datetime.now(dt.UTC)
    assert expire_versions(settings, now) == []  # nothing is old yet
    later = now + dt.timedelta(days=settings.privacy.data_retention_days, hours=1)
    assert expire_versions(settings, later) == ["v1"]
    registry = ingest.registry_for(settings)
    assert [v.status for v in registry.versions()] == ["retired", "good", "good"]
    store = object_store(settings)
    assert not store.keys("work/v1") and not [k for k in store.keys("reports/validation") if "/v1-" in k]
    assert mlflow.MlflowClient(settings.tracking_uri).get_model_version("customer-segmentation", in_use.version)


def test_erasing_a_customer_no_data_version_holds_creates_no_version(served: Settings) -> None:
    from governance import erasure
    from training.data import ingest

    registry = ingest.registry_for(served)
    before = [v.name for v in registry.versions()]
    done = erasure.erase(served, 987_654_321, "ticket 4712")
    assert done["new_version"] is None and done["retired"] == [] and done["raw_rows_removed"] == 0
    assert [v.name for v in registry.versions()] == before
    with pytest.raises(ValueError, match="reason"):
        erasure.erase(served, 987_654_321, " ")


@pytest.mark.full  # make test-all: the real file through ingest, features, two trainings, erasure and retraining
@pytest.mark.realdata
def test_a_real_customer_exported_then_erased_is_nowhere_but_the_audit_hash(real_data: Path,
                                                                          tmp_path_factory: pytest.TempPathFactory
                                                                          ) -> None:
    """The must-show on the UCI file: export, erase, scan (0 hits but the models and the audit hash), retrain,
    forget, scan (the audit hash alone), the DVC remote's history included."""
    from delivery.promotion import deploy
    from governance import access, erasure
    from governance.scan import scan
    from training import run
    from training.data import ingest
    from training.features.store import prepare_features

    settings = Settings(home=tmp_path_factory.mktemp("erasure-real") / "zm")
    ingest.registry_for(settings).ensure()
    version = ingest.snapshot_file(settings, real_data)
    ingest.validate_version(settings, version.name)
    prepare_features(settings, version.name)
    for family in PERSONAL:
        deploy(settings, run.train_family(settings, family, version.name).to_dict())
    clean = pd.read_parquet(settings.work / version.name / "clean.parquet", columns=["customer_id"])
    customer = int(clean["customer_id"].value_counts().index[10])
    bundle = access.export(settings, customer, settings.home / "bundle.json")
    assert bundle["transactions"][version.name] > 0
    erasure.erase(settings, customer, "real-file erasure")
    hits, _ = scan(settings, customer)
    assert {h.store for h in hits} <= {"MLflow", "state database"}, hits
    # the gate compares the retrained recommender with its baseline only: production was trained on retired data
    outcome = run.train_family(settings, "product-recommendation", "current", reason="erasure")
    assert outcome.decision == "staged" and "not compared" in outcome.reason, outcome
    deploy(settings, outcome.to_dict())
    run.train_family(settings, "customer-segmentation", "current", reason="erasure")  # holds no row per customer
    erasure.forget_models(settings)
    hits, _ = scan(settings, customer)
    assert {h.store for h in hits} == {"state database"} and all("audit subject hash" in h.what for h in hits), hits
