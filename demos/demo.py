"""The main job on the embedded local stack (``make demo``).

By default the whole loop runs through Airflow (:mod:`demos.loop_demo`): simulated data
version 1, the training DAG, the three services answering simulated traffic, data version 2
from a drift scenario, the monitoring DAG, the training DAG re-entered by the retrain asset,
and the services answering with the new versions. Then the data gate is shown stopping a
corrupted delivery, the real Online Retail II file is ingested when present, and the demo ends
with an A/B test of the retrained recommender against the one it replaced on simulated clicks.
``python -m demos --no-airflow`` runs the older, quicker path: data versions and the three models
trained in-process.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from zmlops.console import console, step, table, week_progress
from zmlops.settings import Settings, get_settings

__all__ = ["run_demo"]


def run_demo(settings: Settings | None = None, airflow: bool = True) -> int:
    settings = settings or get_settings()
    started = time.perf_counter()
    loop = None
    if airflow:
        from demos.loop_demo import run_loop

        loop = run_loop(settings)
        code = int(loop["code"])
        console.rule("the data gate and the real file")
    else:
        code = _data_versions(settings)
        _train_models(settings)
    _corrupted_delivery(settings)
    _real_data(settings)
    _version_table(settings)
    docs = settings.reports / "validation/gx/uncommitted/data_docs/local_site/index.html"
    console.print(f"Data Docs (every validation run): {docs}")
    console.print(f"Data registry (git + DVC): {settings.registry_dir}  remote: {settings.remote_url}")
    if loop is not None:  # the demo ends with the A/B test of the retrained recommender against the one it replaced
        from demos.loop_demo import experiment

        console.rule("an A/B test")
        decided = experiment(settings, loop["before"], loop["after"])
        if decided:
            console.print(f"A/B test {decided} (reports: {settings.reports / 'experiments'})")
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return code


def _data_versions(settings: Settings) -> int:
    from training.data import ingest
    from training.data.world import SimulationConfig

    console.rule("Zero Margin MLOps demo: data in")
    console.print(f"state under {settings.home.resolve()}")
    config = SimulationConfig(seed=settings.seed)
    with step("v1: simulate two years of transactions and version them with DVC"), week_progress("v1") as prog:
        v1 = ingest.snapshot_simulated(settings, config, progress=prog)
    with step(f"{v1.name}: Great Expectations gate"):
        ingest.validate_version(settings, v1.name)
    with step("v2: eight more weeks under the 'price_shock' drift scenario"), week_progress("v2") as prog:
        v2 = ingest.snapshot_simulated(settings, config, then=[(8, "price_shock")], progress=prog)
    with step(f"{v2.name}: Great Expectations gate"):
        ingest.validate_version(settings, v2.name)
    return 0


def _corrupted_delivery(settings: Settings) -> None:
    from training.data import ingest
    from training.data.cleaning import read_transactions
    from training.data.corruption import corrupt
    from training.validation import ValidationFailed

    registry = ingest.registry_for(settings)
    current = registry.current()
    if current is None:
        return
    with step("a corrupted delivery (5% negative prices) must be stopped by the gate"):
        raw = read_transactions(registry.fetch(current, settings.work / current.name / "raw") /
                                current.transactions_file)
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "transactions.parquet"
            corrupt(raw, "negative_prices").to_parquet(bad, index=False)
            v_bad = ingest.snapshot_file(settings, bad, as_of=dt.date.fromisoformat(current.meta["as_of"]))
        try:
            ingest.validate_version(settings, v_bad.name)
        except ValidationFailed as failed:
            console.print(str(failed), markup=False)
        now = registry.current()
        console.print(f"   current data version is still {now.name if now else None}")


def _real_data(settings: Settings) -> None:
    from training.data import ingest

    real = settings.real_data_path
    if not real.exists():
        console.print(f"[yellow]real data not found at {real}: skipped[/]")
        return
    real_settings = settings.model_copy(update={"home": settings.home / "real"})
    with step(f"real data: {real.name} (UCI Online Retail II, doi:10.24432/C5CG6D, CC BY 4.0)"):
        version = ingest.snapshot_file(real_settings, real)
        result = ingest.validate_version(real_settings, version.name)
        console.print("\n".join(result.summary_lines()), markup=False)


def _version_table(settings: Settings) -> None:
    from training.data import ingest

    rows = [[v.name, v.status, v.meta.get("source"), v.meta.get("as_of"), v.meta.get("rows")]
            for v in ingest.registry_for(settings).versions()]
    table("data versions", ["version", "status", "source", "as of", "raw rows"], rows)


def _train_models(settings: Settings) -> None:
    """Features of the current data version into Feast, then the three families trained and gated."""
    import logging

    from delivery.promotion import deploy
    from training.families import FAMILIES
    from training.features.store import prepare_features
    from training.run import train_family, write_production_cards

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    console.rule("features and models")
    with step("features: build tables, feast apply, materialize the online store"):
        marker = prepare_features(settings)
    console.print(f"   data version {marker['data_version']}: " + ", ".join(
        f"{k} {v['rows']:,} rows" for k, v in marker["tables"].items()))
    rows = []
    for name in FAMILIES:
        with step(f"train, evaluate, register and gate {name}, then deploy"):
            o = train_family(settings, name, reason="demo")
            d = deploy(settings, o.to_dict())
        rows.append([name, f"v{o.version}", o.primary_metric, f"{o.metric:.4f}", f"{o.baseline:.4f}", o.decision,
                     "production" if d["deployed"] else d["why"]])
    table("models against their baselines (docs/models.md names each baseline)",
          ["model", "version", "metric", "model", "baseline", "gate", "deployed"], rows)
    cards = write_production_cards(settings, settings.reports / "model-cards" / "production")
    console.print(f"MLflow: {settings.tracking_uri} (make ui)   model cards: {cards[0].parent if cards else '-'}")
