"""Deterministic retail simulator writing Online Retail II shaped transactions.

Transactions are drawn week by week from a :class:`~training.data.world.World` and
streamed to Parquet, so memory stays bounded by one week of rows whatever the total
(10 million rows need well under a gigabyte). Each week has its own random stream,
seeded by ``(seed, week)``: the same config always gives the same bytes, and a "next
period" continues the same customers and catalogue.

Besides ``transactions.parquet`` the output folder holds the planted truth:
``products.parquet`` (catalogue with categories and design lines), ``customers.parquet``
(segment and country per customer) and ``truth.json`` (config, segments, seasonality,
promotions, holidays).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.data.schema import RAW_SCHEMA
from training.data.world import (
    COUNTRIES,
    PROMO_DISCOUNT,
    SEASONS,
    SEGMENTS,
    SimulationConfig,
    World,
    build_world,
    order_rate_multiplier,
)

__all__ = ["simulate", "periods_of", "SimulationResult", "TRANSACTIONS_FILE", "generate_week"]

TRANSACTIONS_FILE = "transactions.parquet"
# Share of orders per weekday (Mon..Sun): busy midweek, almost nothing on Saturday.
WEEKDAY_SHARE = np.array([0.18, 0.20, 0.20, 0.22, 0.12, 0.005, 0.075])
EXPLORE_SHARE = 0.05  # lines chosen from overall popularity rather than the customer's design lines
NON_PRODUCTS = (("POST", "POSTAGE", 18.0), ("DOT", "DOTCOM POSTAGE", 11.0), ("M", "Manual", 2.5),
                ("BANK CHARGES", "Bank Charges", 15.0))
EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


@dataclass(frozen=True)
class SimulationResult:
    out_dir: Path
    rows: int
    seconds: float

    @property
    def transactions(self) -> Path:
        return self.out_dir / TRANSACTIONS_FILE


def periods_of(config: SimulationConfig, then: Sequence[tuple[int, str]] = ()) -> list[SimulationConfig]:
    """``config`` followed by periods of ``(weeks, scenario)`` that continue it."""
    periods = [config]
    for weeks, scenario in then:
        periods.append(periods[-1].next_period(weeks, scenario))
    return periods


def simulate(
    config: SimulationConfig,
    out_dir: Path,
    then: Sequence[tuple[int, str]] = (),
    progress: Callable[[int, int, int], None] | None = None,
) -> SimulationResult:
    """Write the transactions of ``config`` and of the periods ``then`` (one cumulative table).

    ``progress(week, weeks, rows)`` is called after every simulated week.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    periods = periods_of(config, then)
    total = sum(p.weeks for p in periods)
    rows = done = 0
    tmp = out_dir / (TRANSACTIONS_FILE + ".tmp")
    with pq.ParquetWriter(tmp, RAW_SCHEMA, compression="zstd") as writer:
        for period in periods:
            world = build_world(period)
            for i in range(period.weeks):
                table = generate_week(world, period.start_week + i)
                writer.write_table(table, row_group_size=1 << 20)
                rows += table.num_rows
                done += 1
                if progress is not None:
                    progress(done, total, rows)
    _write_truth(world, periods, out_dir)
    tmp.replace(out_dir / TRANSACTIONS_FILE)
    return SimulationResult(out_dir, rows, time.perf_counter() - started)


def generate_week(world: World, week: int) -> pa.Table:
    """All raw rows of absolute week ``week``, noise included."""
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 2, week])
    seg = world.customer_segment
    orders = np.array([s.orders_per_week for s in SEGMENTS])[seg] * order_rate_multiplier(cfg, week)
    n_orders = rng.poisson(orders)
    order_cust = np.repeat(np.arange(len(seg)), n_orders)
    n_inv = len(order_cust)
    lines_mean = np.array([s.lines_per_order for s in SEGMENTS])[seg[order_cust]]
    basket = 1 + rng.poisson(lines_mean - 1)
    line_order = np.repeat(np.arange(n_inv), basket)
    line_cust = order_cust[line_order]
    product = _choose_products(world, week, line_cust, rng)

    # quantities and prices
    line_seg = seg[line_cust]
    units = np.array([s.units_per_line for s in SEGMENTS])[line_seg]
    quantity = 1 + rng.poisson(units - 1)
    cat = world.product_category[product]
    in_promo = np.array([week in world.promos[c] for c in world.categories])[cat]
    tier = np.array([s.price_tier for s in SEGMENTS])[line_seg]
    price = np.round(world.product_price[product] * tier * np.where(in_promo, PROMO_DISCOUNT, 1.0), 2)

    # timestamps: a weekday and a time of day per order
    day = rng.choice(7, size=n_inv, p=WEEKDAY_SHARE / WEEKDAY_SHARE.sum())
    seconds = (rng.normal(12.5, 2.2, n_inv).clip(7, 20) * 3600).astype(np.int64)
    monday = np.datetime64(cfg.start, "s") + np.timedelta64(7 * week, "D")
    order_ts = monday + (day * 86400 + seconds).astype("timedelta64[s]")
    invoice_no = 1_000_000 + week * 100_000 + np.arange(n_inv)
    if n_inv >= 100_000:
        raise ValueError("more than 100k orders in one week: simulate more weeks or fewer customers")

    guest = (rng.random(n_inv) < cfg.guest_share) & (seg[order_cust] != 0)
    n_products = len(world.product_code)
    cols = {
        "invoice": invoice_no[line_order],
        "product": product,
        "quantity": quantity,
        "ts": order_ts[line_order],
        "price": price,
        "cust": line_cust,
        "guest": guest[line_order],
        "cancel": np.zeros(len(product), dtype=bool),
        "nan_desc": rng.random(len(product)) < cfg.nan_description_share,
    }
    # nan-description lines are zero-priced stock adjustments, as in the UCI file
    cols["price"] = np.where(cols["nan_desc"], 0.0, cols["price"])

    extra = [_non_product_lines(cfg, rng, invoice_no, order_ts, order_cust, guest, n_products)]
    extra.append(_cancellations(cfg, rng, cols, line_order, n_inv))
    extra.append(_duplicates(cfg, rng, cols))
    parts = [cols, *extra]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in cols}
    order = np.lexsort((merged["cancel"], merged["invoice"]))
    merged = {k: v[order] for k, v in merged.items()}
    return _to_table(world, merged)


def _choose_products(world: World, week: int, line_cust: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pick a product per line: mostly from the customer's design lines, weighted by season and price."""
    n = len(line_cust)
    season = world.season_multiplier(week)[world.product_category]
    sensitivity = np.array([s.price_sensitivity for s in SEGMENTS])
    line_sens = sensitivity[world.customer_segment[line_cust]]
    theme_u = rng.random(n)
    theme = (theme_u[:, None] > world.customer_theme_cdf[line_cust]).sum(axis=1)
    theme = np.minimum(theme, world.n_themes - 1)
    explore = rng.random(n) < EXPLORE_SHARE
    theme = np.where(explore, world.n_themes, theme)  # pseudo-theme: the whole catalogue
    sens_levels = np.unique(sensitivity)
    sens_idx = np.searchsorted(sens_levels, line_sens)
    key = theme * len(sens_levels) + sens_idx
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(len(sens_levels) * (world.n_themes + 1) + 1))
    product = np.empty(n, dtype=np.int64)
    all_idx = np.arange(len(world.product_code))
    u = rng.random(n)
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        t, s = divmod(k, len(sens_levels))
        members = all_idx if t == world.n_themes else all_idx[world.product_theme == t]
        if len(members) == 0:
            members = all_idx
        w = world.product_popularity[members] * season[members] * world.product_price[members] ** -sens_levels[s]
        cdf = np.cumsum(w)
        pick = np.searchsorted(cdf, u[order[lo:hi]] * cdf[-1], side="right")
        product[order[lo:hi]] = members[np.minimum(pick, len(members) - 1)]
    return product


def _non_product_lines(cfg: SimulationConfig, rng: np.random.Generator, invoice_no: np.ndarray,
                       order_ts: np.ndarray, order_cust: np.ndarray, guest: np.ndarray,
                       n_products: int) -> dict[str, np.ndarray]:
    """Postage, manual and bank-charge lines on a share of orders (codes past the catalogue)."""
    pick = np.flatnonzero(rng.random(len(invoice_no)) < cfg.non_product_share)
    kind = rng.integers(0, len(NON_PRODUCTS), len(pick))
    fee = np.array([p for _, _, p in NON_PRODUCTS])[kind]
    return {
        "invoice": invoice_no[pick], "product": n_products + kind, "quantity": np.ones(len(pick), np.int64),
        "ts": order_ts[pick], "price": fee, "cust": order_cust[pick], "guest": guest[pick],
        "cancel": np.zeros(len(pick), bool), "nan_desc": np.zeros(len(pick), bool),
    }


def _cancellations(cfg: SimulationConfig, rng: np.random.Generator, cols: dict[str, np.ndarray],
                   line_order: np.ndarray, n_inv: int) -> dict[str, np.ndarray]:
    """Whole cancelled orders and single returned lines, as C invoices with negative quantities."""
    whole = (rng.random(n_inv) < cfg.cancel_share)[line_order]
    returned = rng.random(len(whole)) < cfg.return_share
    take = np.flatnonzero(whole | returned)
    out = {k: v[take].copy() for k, v in cols.items()}
    out["quantity"] = -np.maximum(1, (out["quantity"] * np.where(whole[take], 1.0, 0.5)).astype(np.int64))
    out["ts"] = out["ts"] + np.timedelta64(3600, "s")
    out["cancel"] = np.ones(len(take), bool)
    out["nan_desc"] = np.zeros(len(take), bool)
    return out


def _duplicates(cfg: SimulationConfig, rng: np.random.Generator, cols: dict[str, np.ndarray]) -> dict[
        str, np.ndarray]:
    take = np.flatnonzero(rng.random(len(cols["invoice"])) < cfg.duplicate_share)
    return {k: v[take].copy() for k, v in cols.items()}


def _to_table(world: World, c: dict[str, np.ndarray]) -> pa.Table:
    codes = pa.array(np.concatenate([world.product_code, [n[0] for n in NON_PRODUCTS]]).tolist(), pa.string())
    descs = pa.array(np.concatenate([world.product_description, [n[1] for n in NON_PRODUCTS]]).tolist(),
                     pa.string())
    prod = pa.array(c["product"])
    invoice = pc.cast(pa.array(c["invoice"]), pa.string())
    invoice = pc.if_else(pa.array(c["cancel"]), pc.binary_join_element_wise("C", invoice, ""), invoice)
    description = pc.if_else(pa.array(c["nan_desc"]), pa.scalar("nan"), descs.take(prod))
    ts = pa.array(c["ts"].astype("datetime64[s]"))
    countries = pa.array([name for name, _ in COUNTRIES], pa.string())
    return pa.Table.from_arrays(
        [
            invoice,
            codes.take(prod),
            description,
            pa.array(c["quantity"].astype(np.int64)),
            pc.strftime(ts, format="%Y-%m-%d %H:%M:%S"),
            pa.array(c["price"].astype(np.float64)),
            pa.array(world.customer_id[c["cust"]], mask=c["guest"]),
            countries.take(pa.array(world.customer_country[c["cust"]])),
        ],
        schema=RAW_SCHEMA,
    )


def _write_truth(world: World, periods: list[SimulationConfig], out_dir: Path) -> None:
    """Truth of the last period's world (a superset of the earlier ones) and of every period."""
    world.products_frame().to_parquet(out_dir / "products.parquet", index=False)
    world.customers_frame().to_parquet(out_dir / "customers.parquet", index=False)
    first, cfg = periods[0], periods[-1]
    weeks = range(first.start_week, cfg.start_week + cfg.weeks)
    truth = {
        "config": first.to_dict(),
        "periods": [{"start_week": p.start_week, "weeks": p.weeks, "scenario": p.scenario,
                     "first_day": (p.start + dt.timedelta(weeks=p.start_week)).isoformat(),
                     "last_day": p.end.isoformat()} for p in periods],
        "period": {"first_day": (first.start + dt.timedelta(weeks=first.start_week)).isoformat(),
                   "last_day": cfg.end.isoformat()},
        "segments": [dataclasses.asdict(s) for s in SEGMENTS],
        "category_seasonality": {k: dataclasses.asdict(v) for k, v in SEASONS.items()},
        "promotions": {k: [w for w in v if w in weeks] for k, v in world.promos.items()},
        "order_rate_multiplier": {str(w): round(order_rate_multiplier(cfg, w), 6) for w in weeks},
        "weekday_share": WEEKDAY_SHARE.round(4).tolist(),
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True))
