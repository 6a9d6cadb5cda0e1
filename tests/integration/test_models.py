"""Features through Feast, the three families trained, registered, gated and loaded by alias.

One simulated data version (test size) is trained once per session; the tests read the
real MLflow store, the real Feast store and the real DVC registry it leaves behind.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from delivery.promotion import deploy
from tests.request_rows import log_answers
from training import pipeline
from training.data.world import SimulationConfig
from zmlops.settings import Settings

pytestmark = pytest.mark.integration

FAMILY_NAMES = ("customer-segmentation", "product-recommendation", "demand-forecast")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, object]]]:
    from training import run, tracking
    from training.data import ingest
    from training.features.store import prepare_features

    settings = Settings(home=tmp_path_factory.mktemp("models") / "zm")
    ingest.registry_for(settings).ensure()
    version = ingest.snapshot_simulated(settings, SimulationConfig(seed=11, n_customers=1000, n_products=600))
    ingest.validate_version(settings, version.name)
    prepare_features(settings, version.name)
    outcomes = {name: run.train_family(settings, name, version.name) for name in FAMILY_NAMES}
    # what the gate alone leaves behind, before the deploy step
    gated = {name: {a: tracking.alias_version(settings, name, a) for a in ("staging", "production")}
             for name in FAMILY_NAMES}
    deployed = {name: deploy(settings, outcome.to_dict()) for name, outcome in outcomes.items()}
    yield settings, {**outcomes, "gated": gated, "deployed": deployed}


def test_the_gate_stages_and_only_the_deploy_step_moves_production(
        trained: tuple[Settings, dict[str, object]]) -> None:
    from training import tracking

    settings, outcomes = trained
    for name in FAMILY_NAMES:
        outcome = outcomes[name]
        assert outcome.decision == "staged", outcome  # type: ignore[attr-defined]
        assert outcomes["gated"][name] == {"staging": outcome.version, "production": None}  # type: ignore[index,attr-defined]
        assert outcomes["deployed"][name]["deployed"] is True  # type: ignore[index]
        assert tracking.alias_version(settings, name, "production") == outcome.version  # type: ignore[attr-defined]
        tags = tracking.client(settings).get_model_version(name, outcome.version).tags  # type: ignore[attr-defined]
        assert tags["data_version"] == "v1" and len(tags["data_sha256"]) == 64
        assert json.loads(tags["features"]) and tags["lock_hash"] != "unknown"
        assert tags["gate.decision"] == "staged"


def test_where_approval_is_required_only_an_approved_version_reaches_production(
        trained: tuple[Settings, dict[str, object]]) -> None:
    from governance import approval
    from training import tracking
    from zmlops.settings import ApprovalSettings

    settings, outcomes = trained
    board = settings.model_copy(update={"approval": ApprovalSettings(required=True)})
    name = "customer-segmentation"
    before = tracking.alias_version(board, name, "production")
    source = tracking.client(board).get_model_version(name, before).source
    copy = tracking.copy_version(board, name, source=source)  # a second staged version of the same model
    staged = {**outcomes[name].to_dict(), "version": copy}  # type: ignore[attr-defined]
    waiting = deploy(board, staged)
    assert waiting["deployed"] is False and "waiting for the review board" in waiting["why"]
    assert pipeline.review(board, [staged])["versions"] == [{"family": name, "version": copy}]  # type: ignore[index]
    pipeline.answer(board, [{"family": name, "version": copy}], False, "reviewer-a", "segment names unclear")
    refused = deploy(board, staged)
    assert refused["deployed"] is False and "rejected by reviewer-a: segment names unclear" in refused["why"]
    assert tracking.alias_version(board, name, "production") == before
    assert tracking.client(board).get_model_version(name, copy).tags["approval.status"] == "rejected"
    approval.decide(board, name, copy, True, "reviewer-b", "names fixed in the card")
    assert pipeline.review(board, [staged]) is None  # answered: nothing waits
    assert deploy(board, staged)["deployed"] is True
    assert tracking.alias_version(board, name, "production") == copy
    assert tracking.alias_version(board, name, "previous-production") == before


def test_the_audit_trail_records_each_step_and_detects_tampering(
        trained: tuple[Settings, dict[str, object]]) -> None:
    import sqlalchemy as sa

    from governance import audit
    from zmlops import statedb

    settings, _ = trained
    actions = [e.action for e in audit.entries(settings)]
    for expected in ("data.created", "data.validated", "model.gated", "deploy.production_moved"):
        assert expected in actions, actions
    assert audit.verify(settings) == []
    count, head = audit.head(settings)
    with statedb.engine(settings).begin() as conn:  # an insider rewrites why a version was deployed
        conn.execute(sa.update(statedb.AUDIT).where(statedb.AUDIT.c.seq == 2).values(actor="someone-else"))
    try:
        problems = audit.verify(settings)
        assert [p.seq for p in problems] == [2] and "changed" in problems[0].what
    finally:
        with statedb.engine(settings).begin() as conn:
            conn.execute(sa.update(statedb.AUDIT).where(statedb.AUDIT.c.seq == 2).values(
                actor=audit.entries(settings)[0].actor))
    assert audit.verify(settings) == []
    with statedb.engine(settings).begin() as conn:  # deleting the newest entry: only the exported head shows it
        last = conn.execute(sa.select(statedb.AUDIT).where(statedb.AUDIT.c.seq == count)).mappings().one()
        conn.execute(sa.delete(statedb.AUDIT).where(statedb.AUDIT.c.seq == count))
    assert audit.verify(settings) == []
    assert audit.verify(settings, expected_head=head) != []
    with statedb.engine(settings).begin() as conn:
        conn.execute(sa.insert(statedb.AUDIT).values(**last))
    assert audit.verify(settings, expected_head=head) == []


def test_targets_on_simulated_data(trained: tuple[Settings, dict[str, object]]) -> None:
    from training import tracking

    settings, outcomes = trained
    c = tracking.client(settings)

    def metrics(name: str) -> dict[str, float]:
        version = c.get_model_version(name, outcomes[name].version)  # type: ignore[attr-defined]
        return dict(c.get_run(version.run_id).data.metrics)

    seg = metrics("customer-segmentation")
    assert seg["planted_ari"] >= 0.9
    fc = metrics("demand-forecast")
    assert fc["units_wape"] <= 0.8 * fc["baseline_units_wape"], fc
    rec = metrics("product-recommendation")
    assert rec["recall_at_10"] >= 2.0 * rec["baseline_recall_at_10"], rec
    assert rec["recall_at_10"] > rec["itemknn_recall_at_10"]
    for name in FAMILY_NAMES:  # each training's phases, on the outcome and on the registered version
        outcome = outcomes[name]
        seconds = json.loads(c.get_model_version(name, outcome.version).tags["seconds"])  # type: ignore[attr-defined]
        assert seconds == outcome.seconds  # type: ignore[attr-defined]
        assert set(seconds) >= {"training_set", "choice", "fit", "evaluation"}
        assert all(v >= 0 for v in seconds.values()) and seconds["fit"] > 0


def test_retraining_the_same_version_reuses_the_registered_model(trained: tuple[Settings, dict[str, object]]) -> None:
    from training import run

    settings, outcomes = trained
    again = run.train_family(settings, "customer-segmentation", "v1")
    assert again.reused and again.version == outcomes["customer-segmentation"].version  # type: ignore[attr-defined]


def test_an_image_s_build_stamp_is_the_code_version_and_an_unknown_one_reuses_nothing(
        trained: tuple[Settings, dict[str, object]], monkeypatch: pytest.MonkeyPatch) -> None:
    """In an image (no git) the code version is the build argument ZM_CODE_VERSION: stamped with the commit the
    model was trained from, the version is reused; built without it (unknown), the model is trained anew."""
    from training import run
    from zmlops import version

    settings, outcomes = trained
    monkeypatch.setenv("ZM_CODE_VERSION", version.code_version())  # what `zm version` gives the build
    monkeypatch.setattr(version, "REPO", Path("/nonexistent"))  # as in an image: no checkout to ask git
    assert run.train_family(settings, "customer-segmentation", "v1").reused
    monkeypatch.delenv("ZM_CODE_VERSION")
    assert version.code_version() == version.UNKNOWN_CODE
    anew = run.train_family(settings, "customer-segmentation", "v1")
    assert not anew.reused and anew.version != outcomes["customer-segmentation"].version  # type: ignore[attr-defined]


def test_a_worse_challenger_is_refused_and_production_stays(trained: tuple[Settings, dict[str, object]]) -> None:
    from training import run, tracking

    settings, outcomes = trained
    before = tracking.alias_version(settings, "product-recommendation", "production")
    worse = run.train_family(
        settings, "product-recommendation", "v1", reason="test", params={"factors": 2, "iterations": 1}
    )
    assert worse.decision == "rejected" and worse.version != before
    assert worse.champion is not None and worse.metric < worse.champion
    assert tracking.alias_version(settings, "product-recommendation", "production") == before
    assert tracking.alias_version(settings, "product-recommendation", "candidate") == worse.version
    tags = tracking.client(settings).get_model_version("product-recommendation", worse.version).tags
    assert tags["gate.decision"] == "rejected" and "worse than production" in tags["gate.reason"]


def test_pyfunc_loads_by_alias_in_a_fresh_process(trained: tuple[Settings, dict[str, object]]) -> None:
    settings, _ = trained
    code = """
import json, sys, mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
out = {}
for name, frame in {
    "demand-forecast": pd.DataFrame({"category": ["christmas", "garden"], "horizon": [3, 2]}),
    "customer-segmentation": pd.DataFrame({"frequency": [40.0, 3.0], "tenure_days": [700.0, 600.0],
        "basket_lines": [18.0, 4.0], "units_per_line": [24.0, 2.0], "unit_price": [2.2, 2.7]}),
    "product-recommendation": pd.DataFrame({"customer_id": [12001, 99999999], "k": [5, 5]}),
}.items():
    model = mlflow.pyfunc.load_model(f"models:/{name}@production")
    out[name] = model.predict(frame).to_dict(orient="list")
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, settings.tracking_uri], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    fc = out["demand-forecast"]
    assert fc["category"] == ["christmas"] * 3 + ["garden"] * 2
    assert all(lo <= m <= hi for lo, m, hi in zip(fc["units_lower"], fc["units"], fc["units_upper"], strict=True))
    assert out["customer-segmentation"]["segment_name"] == ["wholesale", "occasional"]
    rec = out["product-recommendation"]
    assert rec["customer_id"].count(12001) == 5 and rec["customer_id"].count(99999999) == 5
    assert rec["cold_start"][rec["customer_id"].index(99999999)] is True


def test_model_card_holds_the_numbers_of_its_run(trained: tuple[Settings, dict[str, object]]) -> None:
    from training import tracking

    settings, outcomes = trained
    outcome = outcomes["demand-forecast"]
    card = (settings.reports / "model-cards" / f"demand-forecast-v{outcome.version}.md").read_text()  # type: ignore[attr-defined]
    run = tracking.client(settings).get_run(
        tracking.client(settings).get_model_version("demand-forecast", outcome.version).run_id  # type: ignore[attr-defined]
    )
    wape, base = run.data.metrics["units_wape"], run.data.metrics["baseline_units_wape"]
    assert f"| units_wape | {wape:,.4f} | {base:,.4f} |" in card
    assert f"MLflow run: `{run.info.run_id}`" in card and "Data version: `v1`" in card
    assert "## Limitations" in card and "category_weekly_sales:units" in card


def test_training_sets_are_point_in_time(trained: tuple[Settings, dict[str, object]]) -> None:
    """Features at a label time come from the newest weekly cutoff at or before it, never after:
    a sentinel row stamped one second after the label time must never be served."""
    from training.features import store

    settings, _ = trained
    source = settings.feast_home / "sources" / "customer_features.parquet"
    table = pd.read_parquet(source)
    rng = np.random.default_rng(0)
    picks = table.sample(40, random_state=1)
    labels = picks["event_timestamp"] + pd.to_timedelta(rng.integers(0, 7 * 86400 - 1, len(picks)), unit="s")
    entities = pd.DataFrame({"customer_id": picks["customer_id"].to_numpy(), "event_timestamp": labels.to_numpy()})
    sentinel = picks.assign(event_timestamp=labels.to_numpy() + pd.Timedelta(seconds=1), unit_price=-1.0)
    original = source.read_bytes()
    try:
        pd.concat([table, sentinel], ignore_index=True).to_parquet(source, index=False)
        got = store.training_frame(settings, "customer_segmentation", entities)
    finally:
        source.write_bytes(original)
    assert len(got) == len(entities)
    assert (got["unit_price"] >= 0).all()  # the future sentinel never leaked in
    expected = picks["unit_price"].to_numpy()
    assert np.allclose(got["unit_price"].to_numpy(), expected)


def test_materialization_is_idempotent(trained: tuple[Settings, dict[str, object]]) -> None:
    from training.features import store

    settings, _ = trained
    db = settings.feast_home / "online.db"

    def snapshot() -> dict[str, int]:
        with sqlite3.connect(db) as con:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
            return {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}

    end = store.latest_window_end(settings)  # the window prepare_features used
    before = snapshot()
    fs = store.open_store(settings)
    ids = [{"customer_id": 12001}, {"customer_id": 12002}]
    first = fs.get_online_features(features=["customer_profile:unit_price"], entity_rows=ids).to_dict()
    store.materialize(settings, end)
    store.materialize(settings, end)
    after = snapshot()
    assert after == before and sum(before.values()) > 0, (before, after)
    again = store.open_store(settings).get_online_features(features=["customer_profile:unit_price"], entity_rows=ids)
    assert again.to_dict() == first


def test_feature_store_yaml_per_profile_loads(tmp_path: Path) -> None:
    from training.features import store

    k8s = Settings(
        profile="k8s",
        home=tmp_path / "cache",
        pseudonymisation_key="x",
        mlflow_tracking_uri="http://mlflow",
        dvc_remote_url="s3://b",
        feast_registry="postgresql+psycopg://feast@db/feast",
        feast_redis_url="redis:6379",
        object_store_url=f"file://{tmp_path / 'objects'}",
        state_db_url="postgresql://zm@db/zm",
        data_registry_remote="git://git/data-registry.git",
    )
    config = store.open_store(k8s).config
    assert config.online_store.type == "redis" and config.registry.registry_type == "sql"


def test_access_exports_everything_held_about_one_customer(trained: tuple[Settings, dict[str, object]],
                                                           tmp_path: Path, zm_command: Callable[[Path], None]) -> None:
    """`zm privacy export`: the customer's transactions of every data version (as the raw file holds them), their
    feature rows offline and online, their segment, the answers served to them (found by pseudonym in the request
    log), the model versions trained on their data and their consent history, in one JSON file; audited."""
    import json

    from governance import audit, consent
    from training.data import ingest
    from training.data.cleaning import read_transactions
    from zmlops.cli import main

    settings, _ = trained
    registry = ingest.registry_for(settings)
    version = registry.get("v1")
    raw = read_transactions(registry.fetch(version, tmp_path / "raw") / version.transactions_file)
    customer = int(raw["Customer ID"].dropna().value_counts().index[0])  # the busiest customer
    other = int(raw["Customer ID"].dropna().value_counts().index[1])
    log_answers(settings, "product-recommendation", (customer, other, customer), k=3, items=["A", "B", "C"])
    consent.record(settings, customer, profiling=True, personalisation=False, source="test: web form")

    out = tmp_path / "bundle.json"
    zm_command(settings.home)
    assert main(["privacy", "export", str(customer), "--out", str(out)]) == 0
    bundle = json.loads(out.read_text())
    summary = {v: len(rows) for v, rows in bundle["transactions"].items()}
    assert summary == {"v1": int((raw["Customer ID"] == customer).sum())} and summary["v1"] > 0
    assert {r["Customer ID"] for r in bundle["transactions"]["v1"]} == {customer}
    offline = bundle["features"]["offline"]["customer_features"]
    assert offline and {r["customer_id"] for r in offline} == {customer}
    assert bundle["features"]["online"]["customer_profile"]["customer_id"] == customer
    assert bundle["segment"]["segment"] and bundle["segment"]["model_version"]
    served = bundle["answers_served"]["product-recommendation"]
    assert len(served) == 2 and {r["customer"] for r in served} == {consent.pseudonym(settings, customer)}
    trained_on = {(m["model"], m["data_version"]) for m in bundle["model_versions_trained_on_their_data"]}
    assert {(f, "v1") for f in FAMILY_NAMES} <= trained_on
    assert [(c["personalisation"], c["source"]) for c in bundle["consent"]] == [(False, "test: web form")]
    assert consent.pseudonym(settings, other) not in out.read_text()  # another customer's answer stays out
    exported = [e for e in audit.entries(settings) if e.action == "privacy.exported"]
    assert exported[-1].subject == consent.audit_subject(settings, customer)
    assert str(customer) not in json.dumps(exported[-1].to_dict())


def test_the_scanner_finds_a_customer_in_every_store_that_holds_them(
        trained: tuple[Settings, dict[str, object]], zm_command: Callable[[Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    """`zm privacy scan`: the data versions (object store, DVC remote and cache), the feature sources and the online
    store, the request log (by pseudonym), the consent register and the audit trail, the recommender's artifact;
    an id the stack never saw is nowhere."""
    import json

    import pandas as pd

    from governance import consent
    from governance.scan import scan
    from zmlops.cli import main

    settings, _ = trained
    clean = pd.read_parquet(settings.work / "v1" / "clean.parquet", columns=["customer_id"])
    customer = int(clean["customer_id"].value_counts().index[2])
    log_answers(settings, "customer-segmentation", [customer], segment="x")
    consent.record(settings, customer, profiling=False, personalisation=True, source="test: call centre")

    zm_command(settings.home)
    assert main(["privacy", "scan", str(customer), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    stores = {h["store"] for h in hits}
    assert {"object store", "DVC remote", "DVC cache", "state database", "online store", "MLflow"} <= stores, stores
    where = {(h["store"], h["where"]) for h in hits}
    assert {("object store", "work/v1/clean.parquet"), ("object store", "feast/sources/customer_features.parquet"),
            ("state database", "zm_consent"), ("state database", "zm_audit")} <= where
    assert any(w.startswith("requests/customer-segmentation/") for s, w in where if s == "object store")
    assert any(w.startswith("product-recommendation v") and w.endswith("estimator.joblib")
               for s, w in where if s == "MLflow")
    rows = next(h["what"] for h in hits if h["where"] == "work/v1/clean.parquet")
    assert rows == f"{int((clean['customer_id'] == customer).sum())} rows (customer_id)"
    nobody, _ = scan(settings, 987_654_321)
    assert nobody == []


def test_tuning_runs_the_family_s_optuna_study_under_the_training_run(
        trained: tuple[Settings, dict[str, object]]) -> None:
    """``tune=True``: the recommender's study (the defaults first) runs on the training part's folds, each trial a
    nested MLflow run under the training run; the chosen parameters are the registered version's, in its tags
    and its card; the same data version, code and budget then reuse the version."""
    from training import run, tracking
    from zmlops.settings import TuningSettings

    base, _ = trained
    settings = base.model_copy(update={"tuning": TuningSettings(max_trials=6, startup_trials=3)})
    name = "product-recommendation"
    outcome = run.train_family(settings, name, "v1", reason="tuning test", tune=True)
    assert not outcome.reused
    client = tracking.client(settings)
    version = client.get_model_version(name, outcome.version)
    tags = version.tags
    trials = json.loads(tags["tuning.trials"])
    assert sum(trials.values()) == 6 and trials["complete"] >= 3 and tags["tuning.study"] == f"{name}/v1"
    chosen = json.loads(tags["tuning.params"])
    kind = chosen.pop("kind")  # ALS, EASE or their challenger, BM25 item-kNN: whichever the study found best
    assert set(chosen) == {"als": {"factors", "regularization", "alpha", "iterations", "weighting"},
                           "ease": {"l2", "half_life_weeks"}, "bm25_knn": {"neighbours"}}[kind]
    fitted = tracking.load_estimator(settings, name, outcome.version)
    assert type(fitted).__name__ == {"als": "ALSRecommender", "ease": "EASERecommender",
                                     "bm25_knn": "ItemKNNRecommender"}[kind]
    assert {k: fitted.get_params()[k] for k in chosen} == chosen
    children = client.search_runs([client.get_run(version.run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{version.run_id}'")
    assert len(children) == 6 and all("recall_at_10" in r.data.metrics for r in children)
    assert float(tags["tuning.best"]) >= float(tags["tuning.default"])  # the defaults are one of the trials
    card = version.description
    assert "## Hyper-parameter tuning" in card and f"Optuna study `{name}/v1`" in card
    assert f"| kind | {kind} |" in card and all(f"| {k} | {v} |" in card for k, v in chosen.items())
    again = run.train_family(settings, name, "v1", reason="tuning test", tune=True)
    assert again.reused and again.version == outcome.version


def test_a_study_that_completes_nothing_leaves_the_defaults_and_says_so(
        trained: tuple[Settings, dict[str, object]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Too little history for a tuning fold (every trial pruned): the training goes on with the defaults, and the
    card says tuning was skipped and why."""
    from training import run, tracking, tuning
    from zmlops.settings import TuningSettings

    def nothing(*args: object, **kwargs: object) -> None:
        raise tuning.NothingCompleted("customer-segmentation/v1: no trial completed within 600 s (2 tried)")

    monkeypatch.setattr(tuning, "tune", nothing)
    base, _ = trained
    settings = base.model_copy(update={"tuning": TuningSettings(max_trials=2)})
    outcome = run.train_family(settings, "customer-segmentation", "v1", reason="tuning skipped", tune=True)
    version = tracking.client(settings).get_model_version("customer-segmentation", outcome.version)
    assert "Tuning was asked for and skipped: customer-segmentation/v1: no trial completed" in version.description
    assert "tuning.study" not in version.tags
