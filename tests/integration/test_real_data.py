"""The adapter on the real UCI Online Retail II file (skipped where the file is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data.cleaning import DROP_RULES, clean_transactions, read_transactions
from training.data.versions import sha256_of

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

README_SHA256 = "3912928afeeb5da42d97715cc71e0db5d5535c554ebca5f898b2b39e7ad34b28"
# What the pandas cleaning that DuckDB's replaced (commit 27ed4e6) made of the file: the digest of every clean row
# (pandas.util.hash_pandas_object over all columns, in order) and the lines each rule dropped.
PANDAS_CLEAN_DIGEST = "f9218797946501a90c75e68169108999ce047c6e0ae3fb97acaee5233251e08b"
PANDAS_DROPPED = {"cancellation": 10_206, "non_product": 2_473, "non_positive_quantity": 2_102,
                  "non_positive_price": 1_529, "missing_customer": 102_856, "nan_description": 0, "duplicate": 6_743}


def _digest(clean: pd.DataFrame) -> str:
    import hashlib

    return hashlib.sha256(pd.util.hash_pandas_object(clean, index=False).to_numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def cleaned(real_data: Path) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    raw = read_transactions(real_data)
    clean, report = clean_transactions(raw)
    return raw, clean, report


def test_known_row_counts_of_the_real_file(cleaned: tuple[pd.DataFrame, pd.DataFrame, object], real_data: Path) -> None:
    raw, clean, report = cleaned
    assert len(raw) == 525_461
    # the README's clean subset, computed independently of the adapter's rules
    plain = pd.read_parquet(real_data)
    basic = (
        ~plain["Invoice"].str.startswith("C")
        & (plain["Quantity"] > 0)
        & (plain["Price"] > 0)
        & plain["Customer ID"].notna()
    )
    assert basic.sum() == 407_664
    assert plain.loc[basic, "Customer ID"].nunique() == 4_312
    assert plain.loc[basic, "StockCode"].nunique() == 4_017
    # each rule flags what the README documents
    assert report.flagged["cancellation"] == 10_206
    assert report.flagged["missing_customer"] == int(plain["Customer ID"].isna().sum()) == 107_927
    assert report.flagged["nan_description"] == 2_928
    assert report.flagged["duplicate"] == int(plain.duplicated().sum())
    assert report.flagged["non_positive_price"] == int((plain["Price"] <= 0).sum())
    # sequential drops add up, and the output is the README subset minus non-products, blanks, duplicates
    assert sum(report.dropped.values()) == report.rows_in - report.rows_out
    assert report.rows_out == len(clean) == 399_552
    sub = plain[basic]
    sub = sub[sub["StockCode"].str.match(r"^\d{5}[A-Za-z]{0,2}$") & (sub["Description"] != "nan")]
    assert len(sub.drop_duplicates()) == report.rows_out
    assert set(report.dropped) == set(DROP_RULES)


def test_clean_table_is_typed_and_categorised(cleaned: tuple[pd.DataFrame, pd.DataFrame, object]) -> None:
    _, clean, report = cleaned
    assert (clean["quantity"] > 0).all() and (clean["price"] > 0).all()
    assert clean["customer_id"].dtype == "int64"
    assert str(clean["invoice_ts"].dtype) == "datetime64[s]"
    other_share = report.category_counts["other"] / report.rows_out
    assert other_share < 0.2, f"{other_share:.1%} of real lines fall in 'other'"


def test_raw_file_is_untouched(real_data: Path, cleaned: object) -> None:
    assert sha256_of(real_data) == README_SHA256


def test_the_gate_out_of_core_keeps_every_clean_row_the_pandas_cleaning_kept(
        real_data: Path, tmp_path: Path, cleaned: tuple[pd.DataFrame, pd.DataFrame, object]) -> None:
    """The delivery on disk, cleaned by DuckDB within a 256 MB budget (it spills), gives the rows the in-memory
    entry point gives and the pandas implementation gave: same rows, same order, same drop counts."""
    from training.data import lake
    from training.data.cleaning import clean_file

    with lake.connect(256, spill=tmp_path / "spill") as con:
        raw = lake.normalise(con, real_data, tmp_path / "raw.parquet")
        report = clean_file(con, raw.path, tmp_path / "clean.parquet")
    on_disk = pd.read_parquet(tmp_path / "clean.parquet")
    on_disk["invoice_ts"] = on_disk["invoice_ts"].astype("datetime64[s]")  # Parquet keeps no seconds unit
    assert raw.rows == 525_461 and raw.spelling == "UCI Online Retail II"
    assert _digest(on_disk) == _digest(cleaned[1]) == PANDAS_CLEAN_DIGEST
    assert report.dropped == cleaned[2].dropped == PANDAS_DROPPED  # type: ignore[attr-defined]
    assert report.category_counts == cleaned[2].category_counts  # type: ignore[attr-defined]
