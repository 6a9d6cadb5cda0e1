"""The adapter on the real UCI Online Retail II file (skipped where the file is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data.cleaning import DROP_RULES, clean_transactions, read_transactions
from training.data.versions import sha256_of

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

README_SHA256 = "3912928afeeb5da42d97715cc71e0db5d5535c554ebca5f898b2b39e7ad34b28"


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
