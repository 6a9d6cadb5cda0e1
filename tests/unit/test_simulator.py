"""The simulator is deterministic and its planted truth is recoverable from the data alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from training.data.cleaning import clean_transactions, read_transactions
from training.data.simulator import simulate
from training.data.versions import sha256_of
from training.data.world import SEASONS, SimulationConfig, build_world

pytestmark = pytest.mark.unit


def test_same_seed_same_bytes_other_seed_other_bytes(
    tmp_path: Path, tiny_sim: Path, tiny_config: SimulationConfig
) -> None:
    again = simulate(tiny_config, tmp_path / "again")
    for name in ("transactions.parquet", "products.parquet", "customers.parquet", "truth.json"):
        assert sha256_of(tiny_sim / name) == sha256_of(again.out_dir / name), name
    other = simulate(SimulationConfig(seed=8, n_customers=400, n_products=120, weeks=60), tmp_path / "other")
    assert sha256_of(other.transactions) != sha256_of(again.transactions)


def test_raw_schema_and_noise_match_online_retail_ii(tiny_sim: Path) -> None:
    raw = read_transactions(tiny_sim / "transactions.parquet")
    assert list(raw.columns) == [
        "Invoice",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "Price",
        "Customer ID",
        "Country",
    ]
    cancelled = raw["Invoice"].str.startswith("C")
    assert 0.005 < cancelled.mean() < 0.06
    assert (raw.loc[cancelled, "Quantity"] < 0).all()
    assert 0.05 < raw["Customer ID"].isna().mean() < 0.25
    assert raw["StockCode"].isin(["POST", "DOT", "M", "BANK CHARGES"]).any()
    assert (raw["Description"] == "nan").any()
    assert raw.duplicated().any()
    assert pd.to_datetime(raw["InvoiceDate"], format="%Y-%m-%d %H:%M:%S").notna().all()


def _customer_features(clean: pd.DataFrame) -> pd.DataFrame:
    orders = clean.groupby(["customer_id", "invoice"]).agg(
        lines=("stock_code", "size"), units=("quantity", "sum"), spend=("revenue", "sum")
    )
    per = orders.groupby("customer_id").agg(
        orders=("lines", "size"), lines=("lines", "mean"), units=("units", "mean"), spend=("spend", "mean")
    )
    per["price"] = clean.groupby("customer_id")["price"].mean()
    return np.log1p(per)


def test_planted_segments_are_recoverable(tiny_sim: Path) -> None:
    clean, _ = clean_transactions(read_transactions(tiny_sim / "transactions.parquet"))
    truth = pd.read_parquet(tiny_sim / "customers.parquet").set_index("customer_id")["segment"]
    feats = _customer_features(clean)
    labels = truth.loc[feats.index]
    # each segment differs the way it was planted
    means = feats.groupby(labels.to_numpy()).mean()
    assert means.loc["loyal", "orders"] > means.loc["bargain", "orders"] > means.loc["occasional", "orders"]
    assert means.loc["wholesale", "units"] > max(means.loc[s, "units"] for s in ("loyal", "occasional", "bargain"))
    assert means.loc["bargain", "price"] < means.loc["loyal", "price"]
    # and a plain clustering of behaviour finds them again
    pred = KMeans(4, n_init=10, random_state=0).fit_predict(StandardScaler().fit_transform(feats))
    assert adjusted_rand_score(labels, pred) >= 0.8


def test_planted_seasonality_is_recoverable(tiny_sim: Path, tiny_config: SimulationConfig) -> None:
    clean, _ = clean_transactions(read_transactions(tiny_sim / "transactions.parquet"))
    world = build_world(tiny_config)
    week = ((clean["invoice_ts"] - pd.Timestamp(tiny_config.start)).dt.days // 7).rename("week")
    lines = clean.groupby([week, "category"]).size().unstack(fill_value=0)
    share = lines.div(lines.sum(axis=1), axis=0)
    # expected share per week from the planted multipliers (seasonality and promotions)
    mass = np.array([world.product_popularity[world.product_category == c].sum() for c in range(len(world.categories))])
    expected = np.array([world.season_multiplier(w) * mass for w in share.index])
    expected = pd.DataFrame(
        expected / expected.sum(axis=1, keepdims=True), index=share.index, columns=list(world.categories)
    )
    for name, season in SEASONS.items():
        if season.amplitude >= 0.5:
            r = np.corrcoef(share[name], expected[name])[0, 1]
            assert r > 0.8, (name, r)
    woy = (share.index % 52) + 1
    assert woy[share["christmas"].to_numpy().argmax()] in range(44, 53)  # planted peak 48, +-4 weeks
    assert woy[share["garden"].to_numpy().argmax()] in range(12, 30)


def test_changing_seasonality_moves_the_peak_and_grows_the_amplitude_as_configured() -> None:
    """The planted multipliers (promotions off): steady, every year repeats; with --season-shift 4 --season-growth
    0.5, week t's multiplier is exp(a 1.5^(t/52) cos(2 pi (woy - peak - 4 t/52) / 52)), and the peak moves."""
    import datetime as dt

    from training.data.world import SEASONS, build_world

    config = SimulationConfig(seed=3, n_customers=50, n_products=100, weeks=156, promos_per_year=0)
    steady = build_world(config)
    moving = build_world(dataclasses.replace(config, season_shift_weeks_per_year=4.0,
                                             season_amplitude_change_per_year=0.5))
    c = list(steady.categories).index("christmas")
    season = SEASONS["christmas"]
    for week in (0, 30, 51, 90, 140):
        woy = (config.start + dt.timedelta(weeks=week)).isocalendar()[1]
        expected = np.exp(season.amplitude * 1.5 ** (week / 52)
                          * np.cos(2 * np.pi * (woy - season.peak_week - 4 * week / 52) / 52))
        assert moving.season_multiplier(week)[c] == pytest.approx(expected)
    assert all(steady.season_multiplier(w)[c] == pytest.approx(steady.season_multiplier(w + 104)[c])
               for w in range(52))
    peaks = [max(range(52 * y, 52 * y + 52), key=lambda w: moving.season_multiplier(w)[c]) for y in range(3)]
    assert [p % 52 for p in peaks] != [peaks[0] % 52] * 3  # the peak moves through the calendar


def test_next_period_continues_history_and_scenarios_do_what_they_say(tmp_path: Path) -> None:
    base = SimulationConfig(seed=3, n_customers=300, n_products=100, weeks=10)
    plain = simulate(base, tmp_path / "plain")
    shocked = simulate(base, tmp_path / "shock", then=[(4, "price_shock")])
    a = pd.read_parquet(plain.transactions)
    b = pd.read_parquet(shocked.transactions)
    pd.testing.assert_frame_equal(a, b.iloc[: len(a)].reset_index(drop=True))  # history is unchanged
    prices_before = build_world(base).product_price
    prices_after = build_world(base.next_period(4, "price_shock")).product_price
    world = build_world(base)
    kitchen = world.product_category == world.categories.index("kitchen")
    shock_mask = np.isin(world.product_category, [world.categories.index(c) for c in ("kitchen", "home_decor")])
    assert np.allclose(prices_after[kitchen], np.round(prices_before[kitchen] * 1.35, 2))
    assert np.allclose(prices_after[~shock_mask], prices_before[~shock_mask])
    grown = build_world(base.next_period(4, "segment_growth"))
    assert len(grown.customer_id) == int(1.6 * 300)
    mixed = build_world(base.next_period(4, "new_product_mix"))
    assert len(mixed.product_code) > len(world.product_code)
    truth = json.loads((shocked.out_dir / "truth.json").read_text())
    assert [p["scenario"] for p in truth["periods"]] == ["none", "price_shock"]


def test_config_rejects_nonsense() -> None:
    import datetime as dt

    with pytest.raises(ValueError, match="Monday"):
        SimulationConfig(start=dt.date(2023, 1, 3))
    with pytest.raises(ValueError, match="scenario"):
        SimulationConfig(scenario="meteor")
    assert SimulationConfig.for_rows(1_000_000).n_customers > SimulationConfig.for_rows(100_000).n_customers


def test_large_catalogues_keep_valid_unique_stock_codes() -> None:
    """Codes past 99999 were six digits, so the cleaning rules dropped them as non-products."""
    config = SimulationConfig.for_rows(5_000_000)
    assert config.n_products > 2_200  # large enough to have overflowed the old code scheme
    codes = pd.Series(build_world(config).product_code)
    assert codes.str.fullmatch(r"\d{5}[A-E]?").all()
    assert codes.str[:5].is_unique
