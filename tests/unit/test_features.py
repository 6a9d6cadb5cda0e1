"""Feature tables are point-in-time: each row equals a recomputation from transactions before its cutoff."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.names import CUSTOMER_FEATURES
from training.data.cleaning import clean_transactions, read_transactions
from training.features.build import (
    category_week_features,
    customer_features,
    product_features,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def clean(tiny_sim: Path) -> pd.DataFrame:
    return clean_transactions(read_transactions(tiny_sim / "transactions.parquet"))[0]


def _brute_customer(clean: pd.DataFrame, customer: int, cutoff: pd.Timestamp) -> dict[str, float]:
    past = clean[(clean["customer_id"] == customer) & (clean["invoice_ts"] < cutoff)]
    orders = past.groupby("invoice").agg(
        ts=("invoice_ts", "first"), lines=("stock_code", "size"), revenue=("revenue", "sum")
    )
    recent = orders[orders["ts"] >= cutoff - pd.Timedelta(weeks=13)]
    spend = past.groupby("category")["revenue"].sum() / past["revenue"].sum()
    return {
        "recency_days": (cutoff - orders["ts"].max()).total_seconds() / 86400,
        "frequency": len(orders),
        "monetary": past["revenue"].sum(),
        "frequency_13w": len(recent),
        "monetary_13w": recent["revenue"].sum(),
        "basket_lines": orders["lines"].mean(),
        "units_per_line": past["quantity"].sum() / len(past),
        "unit_price": past["revenue"].sum() / past["quantity"].sum(),
        "tenure_days": (cutoff - orders["ts"].min()).total_seconds() / 86400,
        "share_christmas": spend.get("christmas", 0.0),
        "share_kitchen": spend.get("kitchen", 0.0),
    }


def test_customer_rows_equal_a_recomputation_from_the_past_only(clean: pd.DataFrame) -> None:
    feats = customer_features(clean)
    assert list(feats.columns) == ["customer_id", "event_timestamp", *CUSTOMER_FEATURES]
    sample = feats.sample(40, random_state=1)
    for row in sample.itertuples(index=False):
        expected = _brute_customer(clean, row.customer_id, row.event_timestamp)
        for name, value in expected.items():
            assert getattr(row, name) == pytest.approx(value, rel=1e-9, abs=1e-9), (name, row.customer_id)


def test_future_transactions_do_not_change_past_rows(clean: pd.DataFrame) -> None:
    cutoff = clean["invoice_ts"].min().normalize() + pd.Timedelta(weeks=30)
    cutoff -= pd.Timedelta(days=cutoff.weekday())
    past_only = clean[clean["invoice_ts"] < cutoff]
    full = customer_features(clean)
    truncated = customer_features(past_only)
    # the truncated table ends at its last week with data; compare every row both tables contain
    last = truncated["event_timestamp"].max()
    a = full[full["event_timestamp"] <= last].reset_index(drop=True)
    b = truncated.reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b.reset_index(drop=True))


def test_product_popularity_counts_the_four_weeks_before(clean: pd.DataFrame) -> None:
    feats = product_features(clean)
    row = feats.sort_values("units_4w").iloc[len(feats) // 2]
    window = clean[
        (clean["stock_code"] == row["stock_code"])
        & (clean["invoice_ts"] < row["event_timestamp"])
        & (clean["invoice_ts"] >= row["event_timestamp"] - pd.Timedelta(weeks=4))
    ]
    assert row["units_4w"] == window["quantity"].sum()
    assert row["orders_4w"] == window["invoice"].nunique()
    assert row["price_4w"] == pytest.approx(window["revenue"].sum() / window["quantity"].sum())


def test_category_weeks_are_complete_and_sum_to_the_table(clean: pd.DataFrame) -> None:
    weekly = category_week_features(clean)
    n_weeks = weekly["event_timestamp"].nunique()
    assert len(weekly) == n_weeks * weekly["category"].nunique()
    assert weekly["units"].sum() == clean["quantity"].sum()
    assert np.isclose(weekly["revenue"].sum(), clean["revenue"].sum())
    assert (weekly["week_start"].dt.weekday == 0).all()
    # a week's totals become known when it ends, never before
    assert (weekly["event_timestamp"] - weekly["week_start"]).eq(pd.Timedelta(days=7)).all()
    assert weekly.loc[weekly["christmas_week"] == 1, "week_start"].dt.month.eq(12).all()
    last = weekly[weekly["week_start"] == weekly["week_start"].max()]
    in_last_week = clean["invoice_ts"] >= last["week_start"].iloc[0]
    assert last["units"].sum() == clean.loc[in_last_week, "quantity"].sum()


def test_tables_built_part_by_part_within_a_budget_equal_the_whole_table_build(
        clean: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The features step builds each table in key ranges (customers, products, categories) so that pandas holds a
    budget's worth of keys x weeks at a time; with a budget of two keys a part every table takes several parts, and
    each comes out equal to the table built from the whole clean table at once (to 1e-12), rows and order
    included."""
    from training.data import lake
    from training.features import build
    from training.features.build import TABLES, _parts, span_of, write_tables

    source = tmp_path / "clean.parquet"
    clean.to_parquet(source, index=False)
    with lake.connect(64) as con:
        parts = {name: _parts(con, f"read_parquet('{source}')", t.key, 2) for name, t in TABLES.items()}
    assert all(len(p) > 2 for p in parts.values()), parts
    weeks = span_of(clean["invoice_ts"]).weeks
    # 1 MB, of which pandas' share is split between the two threads building tables: two keys a part
    monkeypatch.setattr(build, "BYTES_PER_KEY_WEEK", (2**20 * 3 // 8) // (2 * weeks))
    meta = write_tables(source, tmp_path / "out", budget_mb=1)
    whole = {"customer_features": customer_features(clean), "product_features": product_features(clean),
             "category_week_features": category_week_features(clean)}
    for name, expected in whole.items():
        got = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        assert meta[name]["rows"] == len(got) == len(expected), name
        for col in ("event_timestamp", "week_start"):
            if col in got:
                got[col] = got[col].dt.tz_localize(None).astype(expected[col].dtype)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12, obj=name)


def test_frames_written_on_a_thread_arrive_whole_and_in_order_and_a_failure_leaves_no_file(tmp_path: Path) -> None:
    """``lake.write_frames`` writes each frame on a thread of its own while the next is made: the file holds every
    frame in the order made; a frame that cannot be made (or written) raises here and leaves no file, half or
    whole."""
    from training.data.lake import write_frames

    frames = [pd.DataFrame({"key": np.arange(i * 1000, (i + 1) * 1000), "value": np.random.default_rng(i).random(1000),
                            "name": [f"n{i}"] * 1000}) for i in range(5)]
    dest = tmp_path / "table.parquet"
    assert write_frames(dest, iter(frames)) == 5000
    pd.testing.assert_frame_equal(pd.read_parquet(dest), pd.concat(frames, ignore_index=True))

    def failing() -> Iterator[pd.DataFrame]:
        yield from frames[:3]
        raise RuntimeError("part 3 could not be made")

    broken = tmp_path / "broken.parquet"
    with pytest.raises(RuntimeError, match="part 3"):
        write_frames(broken, failing())
    assert not broken.exists() and not list(tmp_path.glob("broken*")), list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="nothing to write"):
        write_frames(tmp_path / "empty.parquet", iter([]))
