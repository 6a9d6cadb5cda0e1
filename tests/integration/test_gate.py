"""The Great Expectations gate on versioned snapshots: bad data stops, the last good version stays."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from tests import needs
from tests.browser import CHROMIUM, visible_text
from training.data import ingest
from training.data.cleaning import read_transactions
from training.data.corruption import CORRUPTIONS, corrupt
from training.data.versions import sha256_of
from training.validation import ValidationFailed
from zmlops.settings import Settings

pytestmark = pytest.mark.integration

# what the readable report must name for each corruption
NAMED = {
    "missing_column": "Country",
    "wrong_type": "'Quantity'",
    "nulls": "'StockCode'",
    "negative_prices": "'Price'",
    "future_dates": "'InvoiceDate'",
}


@pytest.fixture(scope="module")
def good_registry(tmp_path_factory: pytest.TempPathFactory, tiny_sim: Path) -> Settings:
    """A registry with one good version v1 of the tiny simulated data."""
    settings = Settings(home=tmp_path_factory.mktemp("gate") / "zm")
    v1 = ingest.snapshot_file(settings, tiny_sim / "transactions.parquet", as_of=_as_of(tiny_sim))
    # the version holds the delivered file and nothing else (what the adapter read it as stays out)
    assert [p.name for p in (settings.registry_dir / "raw").rglob("*") if p.is_file()] == ["transactions.parquet"]
    ingest.validate_version(settings, v1.name)
    return settings


def _as_of(sim: Path) -> dt.date:
    import json

    return dt.date.fromisoformat(json.loads((sim / "truth.json").read_text())["period"]["last_day"])


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_fails_the_gate_and_keeps_current(
    kind: str, good_registry: Settings, tiny_sim: Path, tmp_path: Path
) -> None:
    registry = ingest.registry_for(good_registry)
    current_before = registry.current()
    assert current_before is not None
    bad = tmp_path / "transactions.parquet"
    corrupt(read_transactions(tiny_sim / "transactions.parquet"), kind).to_parquet(bad, index=False)
    version = ingest.snapshot_file(good_registry, bad, as_of=_as_of(tiny_sim))
    with pytest.raises(ValidationFailed) as failed:
        ingest.validate_version(good_registry, version.name)
    message = str(failed.value)
    assert "FAILED" in message and NAMED[kind] in message, message
    assert "Data Docs" in message and failed.value.result.docs_index.exists()
    assert registry.get(version.name).status == "bad"
    assert registry.current() == current_before
    assert not ingest.clean_path(good_registry, version.name).exists()


def test_row_count_jump_fails_against_previous_version(good_registry: Settings, tiny_sim: Path, tmp_path: Path) -> None:
    raw = read_transactions(tiny_sim / "transactions.parquet")
    small = tmp_path / "transactions.parquet"
    raw.iloc[: len(raw) // 4].to_parquet(small, index=False)
    version = ingest.snapshot_file(good_registry, small, as_of=_as_of(tiny_sim))
    with pytest.raises(ValidationFailed, match="expect_table_row_count_to_be_between"):
        ingest.validate_version(good_registry, version.name)


def test_versions_return_their_own_bytes(settings: Settings, tiny_config: object, tmp_path: Path) -> None:
    from training.data.world import SimulationConfig

    config = SimulationConfig(seed=11, n_customers=150, n_products=60, weeks=30)
    v1 = ingest.snapshot_simulated(settings, config)
    v2 = ingest.snapshot_simulated(settings, config, then=[(4, "segment_growth")])
    registry = ingest.registry_for(settings)
    assert [v.name for v in registry.versions()] == ["v1", "v2"]
    old = registry.fetch(registry.get("v1"), tmp_path / "old")
    new = registry.fetch(registry.get("v2"), tmp_path / "new")
    assert sha256_of(old / "transactions.parquet") == v1.files["transactions.parquet"]
    assert sha256_of(new / "transactions.parquet") == v2.files["transactions.parquet"]
    assert v1.files != v2.files
    # the bytes come from the DVC remote too: drop the local cache and fetch again
    import shutil

    shutil.rmtree(settings.registry_dir / ".dvc" / "cache")
    again = registry.fetch(registry.get("v1"), tmp_path / "again")
    assert sha256_of(again / "transactions.parquet") == v1.files["transactions.parquet"]
    # both pass the gate; the newer becomes current, validation is idempotent
    ingest.validate_version(settings, "v1")
    result = ingest.validate_version(settings, "v2")
    assert registry.current().name == "v2"
    assert ingest.validate_version(settings, "v2").clean == result.clean
    assert len(pd.read_parquet(result.clean)) == result.cleaning.rows_out


def test_unknown_version_names_the_known_ones(settings: Settings) -> None:
    from training.data.versions import VersionNotFound

    with pytest.raises(VersionNotFound, match="not found"):
        ingest.registry_for(settings).get("v99")


def test_a_missing_column_is_one_failure_with_the_fix_not_a_cascade(good_registry: Settings, tiny_sim: Path,
                                                                   tmp_path: Path) -> None:
    bad = tmp_path / "transactions.parquet"
    read_transactions(tiny_sim / "transactions.parquet").drop(columns=["Price"]).to_parquet(bad, index=False)
    version = ingest.snapshot_file(good_registry, bad, as_of=_as_of(tiny_sim))
    with pytest.raises(ValidationFailed) as failed:
        ingest.validate_version(good_registry, version.name)
    message = str(failed.value)
    assert message.count("FAILED") == 1 and "could not be evaluated" not in message, message
    assert "fix: the file lacks Price" in message and "UnitPrice" in message, message  # both spellings named


def test_the_older_spelling_and_a_few_null_descriptions_pass_and_are_reported(
        good_registry: Settings, tiny_sim: Path, tmp_path: Path) -> None:
    """What real files look like: the first UCI dataset's column names, and a fraction of a percent of lines
    without a description (cleaning drops them); a delivery with many is refused, naming the column."""
    from training.data.schema import OLDER_NAMES

    raw = read_transactions(tiny_sim / "transactions.parquet")
    few = raw.copy()
    few.loc[few.sample(frac=0.003, random_state=1).index, "Description"] = None
    older = tmp_path / "older.parquet"
    few.rename(columns={v: k for k, v in OLDER_NAMES.items()}).to_parquet(older, index=False)
    version = ingest.snapshot_file(good_registry, older, as_of=_as_of(tiny_sim))
    result = ingest.validate_version(good_registry, version.name)
    lines = "\n".join(result.summary_lines())
    assert "UCI Online Retail's spelling (InvoiceNo, UnitPrice, CustomerID)" in lines, lines
    assert ingest.registry_for(good_registry).get(version.name).status == "good"

    many = raw.copy()
    many.loc[many.sample(frac=0.05, random_state=1).index, "Description"] = None
    bad = tmp_path / "many.parquet"
    many.to_parquet(bad, index=False)
    version = ingest.snapshot_file(good_registry, bad, as_of=_as_of(tiny_sim))
    with pytest.raises(ValidationFailed) as failed:
        ingest.validate_version(good_registry, version.name)
    assert "'Description'" in str(failed.value) and "5.00%" in str(failed.value), str(failed.value)


@needs.binary(CHROMIUM)
def test_the_reports_index_lists_refused_deliveries_first_with_their_data_docs(
        good_registry: Settings, tiny_sim: Path, tmp_path: Path) -> None:
    """Analysts reach every delivery's gate from the monitoring reports' index, the refused ones first."""
    from monitoring.loop import deliveries, write_index

    bad = tmp_path / "transactions.parquet"
    corrupt(read_transactions(tiny_sim / "transactions.parquet"), "negative_prices").to_parquet(bad, index=False)
    version = ingest.snapshot_file(good_registry, bad, as_of=_as_of(tiny_sim))
    with pytest.raises(ValidationFailed):
        ingest.validate_version(good_registry, version.name)
    gates = deliveries(good_registry)
    refused = [d for d in gates if not d["success"]]
    assert refused and gates[: len(refused)] == refused  # refused first
    assert any(d["run_name"].startswith(version.name) for d in refused), refused
    index = write_index(good_registry)
    text = visible_text(index.as_uri(), budget_ms=2_000)
    assert text.index("refused") < text.index("accepted"), text
    failure = next(d for d in refused if d["run_name"].startswith(version.name))["failures"][0]
    assert f"{failure['expectation']} on {failure['column']}: " in text, text  # why it was refused, as the gate said
    docs = (index.parent / "../validation/gx/uncommitted/data_docs/local_site/index.html").resolve()
    assert docs.exists() and 'href="../validation/gx/uncommitted/data_docs/local_site/index.html"' in index.read_text()
