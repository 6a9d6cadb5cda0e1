"""The adapter reads the three Online Retail II formats into the same raw table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data.cleaning import UnreadableInput, clean_transactions, read_transactions

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def sample(tiny_sim: Path) -> pd.DataFrame:
    return read_transactions(tiny_sim / "transactions.parquet").iloc[:3_000].reset_index(drop=True)


def test_csv_and_xlsx_read_like_parquet(sample: pd.DataFrame, tmp_path: Path) -> None:
    sample.to_csv(tmp_path / "t.csv", index=False)
    # the UCI workbook stores dates as Excel dates and has one sheet per year
    excel = sample.assign(InvoiceDate=pd.to_datetime(sample["InvoiceDate"]))
    with pd.ExcelWriter(tmp_path / "t.xlsx") as writer:
        excel.iloc[:1_000].to_excel(writer, sheet_name="Year 2009-2010", index=False)
        excel.iloc[1_000:].to_excel(writer, sheet_name="Year 2010-2011", index=False)
    expected, _ = clean_transactions(sample)
    for name in ("t.csv", "t.xlsx"):
        got = read_transactions(tmp_path / name)
        assert list(got.columns) == list(sample.columns)
        pd.testing.assert_frame_equal(clean_transactions(got)[0], expected, check_dtype=False, obj=name)


def test_the_older_uci_spelling_reads_as_online_retail_ii(sample: pd.DataFrame, tmp_path: Path) -> None:
    """The first UCI dataset (Online Retail) spells InvoiceNo, UnitPrice, CustomerID; the adapter renames them and
    says which spelling it found."""
    from training.data.schema import OLDER_NAMES

    older = sample.rename(columns={v: k for k, v in OLDER_NAMES.items()})
    assert "InvoiceNo" in older and "Invoice" not in older
    older.to_csv(tmp_path / "online_retail.csv", index=False)
    got = read_transactions(tmp_path / "online_retail.csv")
    assert list(got.columns) == list(sample.columns) and got.attrs["spelling"] == "UCI Online Retail"
    pd.testing.assert_frame_equal(clean_transactions(got)[0], clean_transactions(sample)[0], check_dtype=False)
    sample.to_csv(tmp_path / "online_retail_ii.csv", index=False)
    assert read_transactions(tmp_path / "online_retail_ii.csv").attrs["spelling"] == "UCI Online Retail II"
    sample.drop(columns=["Price"]).to_csv(tmp_path / "neither.csv", index=False)
    assert read_transactions(tmp_path / "neither.csv").attrs["spelling"] is None


def test_unknown_format_and_missing_columns_are_named(sample: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(UnreadableInput, match="unsupported file type '.json'"):
        read_transactions(tmp_path / "t.json")
    with pytest.raises(UnreadableInput, match="missing column.*Price"):
        clean_transactions(sample.drop(columns=["Price"]))


def test_s3_remote_is_configured_before_the_first_add(tmp_path: Path) -> None:
    from training.data.versions import DataRegistry

    registry = DataRegistry(tmp_path / "reg", "s3://zero-margin-data/dvc")
    registry.ensure()
    config = (tmp_path / "reg" / ".dvc" / "config").read_text()
    assert "url = s3://zero-margin-data/dvc" in config and "remote = storage" in config
    import subprocess

    log = subprocess.run(
        ["git", "-C", str(tmp_path / "reg"), "show", "--stat", "HEAD"], capture_output=True, text=True, check=True
    ).stdout
    assert ".dvc/config" in log  # committed, so every later version carries the remote
