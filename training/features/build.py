"""Feature tables from the clean transactions, point-in-time by construction.

Every row carries an ``event_timestamp``: a weekly cutoff (Monday 00:00). A row's
values use only transactions strictly before its cutoff, so a training set joined
"as of" a label time never sees the future. The tables are computed from dense
entity x week matrices with cumulative sums, which costs the same for every cutoff.

- customer: recency, frequency and monetary value (all history and last 13 weeks),
  basket size, units per line, unit price, tenure, category shares of spend
- product: units, orders, customers and mean price over the last 4 weeks
- category_week: units, revenue and orders of the week that starts at ``week_start``,
  plus calendar features (the forecasting target and its regressors); its
  ``event_timestamp`` is the week's end (the next Monday), when the totals are known
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from feature_repo.names import CATEGORIES, SHARE_COLUMNS
from training.data import lake
from training.data.world import BLACK_FRIDAY_DAYS

__all__ = [
    "Span",
    "span_of",
    "week_start",
    "calendar",
    "customer_features",
    "product_features",
    "category_week_features",
    "RECENT_WEEKS",
    "POPULARITY_WEEKS",
    "TABLES",
    "write_tables",
]

RECENT_WEEKS = 13
POPULARITY_WEEKS = 4


def week_start(ts: pd.Series) -> pd.Series:
    """The Monday 00:00 of each timestamp's week."""
    day: pd.Series = ts.dt.normalize()
    monday: pd.Series = day - pd.to_timedelta(day.dt.weekday, unit="D")
    return monday


@dataclass(frozen=True)
class Span:
    """The weekly cutoffs of a whole delivery: the Monday of its first week and how many weeks it covers. A table
    built from a part of the delivery (some customers, some products) with the delivery's span has exactly the rows
    and values the whole delivery's table has for that part."""

    start: pd.Timestamp
    weeks: int


def span_of(ts: pd.Series) -> Span:
    """The span of these invoice timestamps."""
    weeks = week_start(ts)
    start = weeks.min()
    return Span(start, int((weeks.max() - start).days // 7) + 1)


def _weeks(clean: pd.DataFrame, span: Span | None) -> tuple[pd.Timestamp, int, np.ndarray]:
    span = span or span_of(clean["invoice_ts"])
    idx = ((week_start(clean["invoice_ts"]) - span.start).dt.days // 7).to_numpy()
    return span.start, span.weeks, idx


def _dense(keys: np.ndarray, week: np.ndarray, values: np.ndarray, n_keys: int, n_weeks: int) -> np.ndarray:
    # np.bincount adds in input order as np.add.at does (the same sums), about ten times faster
    flat = np.bincount(np.asarray(keys) * n_weeks + np.asarray(week), weights=values, minlength=n_keys * n_weeks)
    out: np.ndarray = flat.reshape(n_keys, n_weeks)
    return out


def _before(cum: np.ndarray) -> np.ndarray:
    """Cumulative matrix shifted one week: column k holds the total of weeks < k."""
    return np.concatenate([np.zeros((cum.shape[0], 1)), cum[:, :-1]], axis=1)


def _window(cum: np.ndarray, weeks: int) -> np.ndarray:
    """Totals over the ``weeks`` weeks before each cutoff."""
    before = _before(cum)
    lagged = np.concatenate([np.zeros((cum.shape[0], weeks)), before[:, :-weeks]], axis=1)[:, : cum.shape[1]]
    totals: np.ndarray = before - lagged
    return totals


def customer_features(clean: pd.DataFrame, span: Span | None = None) -> pd.DataFrame:
    """One row per (customer, weekly cutoff) after the customer's first order; ``span``: the whole delivery's, when
    ``clean`` holds some customers' lines only."""
    start, n_weeks, week = _weeks(clean, span)
    cust_codes, customers = pd.factorize(clean["customer_id"], sort=True)
    orders = (
        clean.assign(_c=cust_codes, _w=week)
        .groupby(["_c", "invoice"], sort=False)
        .agg(
            w=("_w", "first"),
            ts=("invoice_ts", "first"),
            lines=("invoice", "size"),
            units=("quantity", "sum"),
            revenue=("revenue", "sum"),
        )
    )
    c = orders.index.get_level_values("_c").to_numpy()
    w = orders["w"].to_numpy()
    n = len(customers)
    cum = {
        k: np.cumsum(_dense(c, w, v, n, n_weeks), axis=1)
        for k, v in {
            "orders": np.ones(len(orders)),
            "lines": orders["lines"].to_numpy(float),
            "units": orders["units"].to_numpy(float),
            "revenue": orders["revenue"].to_numpy(float),
        }.items()
    }
    # last and first order time before each cutoff (seconds since start), forward-filled over weeks
    secs = (orders["ts"] - start).dt.total_seconds().to_numpy()
    last = np.full((n, n_weeks), -np.inf)
    np.maximum.at(last, (c, w), secs)
    last = _before(np.maximum.accumulate(last, axis=1))
    first = np.full((n, n_weeks), np.inf)
    np.minimum.at(first, (c, w), secs)
    first = np.concatenate([np.full((n, 1), np.inf), np.minimum.accumulate(first, axis=1)[:, :-1]], axis=1)

    cat_codes = pd.Categorical(clean["category"], categories=list(CATEGORIES)).codes
    spend = np.bincount((cust_codes * len(CATEGORIES) + cat_codes) * n_weeks + week,
                        weights=clean["revenue"].to_numpy(float),
                        minlength=n * len(CATEGORIES) * n_weeks).reshape(n, len(CATEGORIES), n_weeks)
    spend_before = np.concatenate([np.zeros((n, len(CATEGORIES), 1)), np.cumsum(spend, axis=2)[:, :, :-1]], axis=2)

    cutoff_secs = np.arange(n_weeks) * 7 * 86400.0
    orders_b, lines_b, units_b, revenue_b = (_before(cum[k]) for k in ("orders", "lines", "units", "revenue"))
    ci, wi = np.nonzero(orders_b > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame(
            {
                "customer_id": customers.to_numpy()[ci],
                "event_timestamp": start + pd.to_timedelta(wi * 7, unit="D"),
                "recency_days": (cutoff_secs[wi] - last[ci, wi]) / 86400.0,
                "frequency": orders_b[ci, wi],
                "monetary": revenue_b[ci, wi],
                "frequency_13w": _window(cum["orders"], RECENT_WEEKS)[ci, wi],
                "monetary_13w": _window(cum["revenue"], RECENT_WEEKS)[ci, wi],
                "basket_lines": lines_b[ci, wi] / orders_b[ci, wi],
                "units_per_line": units_b[ci, wi] / lines_b[ci, wi],
                "unit_price": revenue_b[ci, wi] / units_b[ci, wi],
                "tenure_days": (cutoff_secs[wi] - first[ci, wi]) / 86400.0,
            }
        )
        shares = spend_before[ci, :, wi] / revenue_b[ci, wi][:, None]
    for j, col in enumerate(SHARE_COLUMNS):
        frame[col] = np.nan_to_num(shares[:, j])
    return _typed(frame, "customer_id")


def product_features(clean: pd.DataFrame, span: Span | None = None) -> pd.DataFrame:
    """One row per (product, weekly cutoff) with sales in the 4 weeks before the cutoff; ``span`` as for
    :func:`customer_features`."""
    start, n_weeks, week = _weeks(clean, span)
    codes, products = pd.factorize(clean["stock_code"], sort=True)
    n = len(products)
    lines = clean.assign(_p=codes, _w=week)
    units = np.cumsum(_dense(codes, week, clean["quantity"].to_numpy(float), n, n_weeks), axis=1)
    revenue = np.cumsum(_dense(codes, week, clean["revenue"].to_numpy(float), n, n_weeks), axis=1)
    per_order = lines.drop_duplicates(["_p", "invoice"])
    orders = np.cumsum(
        _dense(per_order["_p"].to_numpy(), per_order["_w"].to_numpy(), np.ones(len(per_order)), n, n_weeks), axis=1
    )
    # distinct customers per week (a customer counted once per product-week)
    per_cust = lines.drop_duplicates(["_p", "_w", "customer_id"])
    custs = np.cumsum(
        _dense(per_cust["_p"].to_numpy(), per_cust["_w"].to_numpy(), np.ones(len(per_cust)), n, n_weeks), axis=1
    )
    u4, r4 = _window(units, POPULARITY_WEEKS), _window(revenue, POPULARITY_WEEKS)
    pi, wi = np.nonzero(u4 > 0)
    frame = pd.DataFrame(
        {
            "stock_code": products.to_numpy()[pi],
            "event_timestamp": start + pd.to_timedelta(wi * 7, unit="D"),
            "units_4w": u4[pi, wi],
            "orders_4w": _window(orders, POPULARITY_WEEKS)[pi, wi],
            "customers_4w": _window(custs, POPULARITY_WEEKS)[pi, wi],
            "price_4w": r4[pi, wi] / u4[pi, wi],
        }
    )
    return _typed(frame, "stock_code")


def category_week_features(clean: pd.DataFrame, complete: tuple[pd.Timestamp, pd.Timestamp] | None = None,
                           categories: Sequence[str] = CATEGORIES) -> pd.DataFrame:
    """Weekly sales per category (every category x every complete week, zeros included) and the calendar.

    A row describes the week starting at ``week_start``; it becomes known at ``event_timestamp``,
    the week's end, so a point-in-time join never hands out a week that has not finished. ``complete``: the whole
    delivery's first and last complete week (:func:`complete_weeks`) and ``categories`` the ones ``clean`` holds,
    when it holds some categories' lines only.
    """
    weeks = week_start(clean["invoice_ts"])
    first, last = complete or complete_weeks(clean["invoice_ts"])
    keep = weeks.between(first, last)
    clean, weeks = clean[keep], weeks[keep]
    grouped = (
        clean.assign(week_start=weeks)
        .groupby(["category", "week_start"], observed=True)  # a Categorical from write_tables: the reindex fills
        .agg(units=("quantity", "sum"), revenue=("revenue", "sum"), orders=("invoice", "nunique"))
    )
    full = pd.MultiIndex.from_product(
        [list(categories), pd.date_range(first, last, freq="7D")], names=["category", "week_start"]
    )
    frame = grouped.reindex(full, fill_value=0).reset_index()
    frame = pd.concat([frame, calendar(frame["week_start"])], axis=1)
    frame[["units", "orders"]] = frame[["units", "orders"]].astype("int64")
    frame["revenue"] = frame["revenue"].astype("float64")
    frame["week_start"] = frame["week_start"].astype("datetime64[ns]")
    frame.insert(1, "event_timestamp", frame["week_start"] + pd.Timedelta(days=7))
    return frame.sort_values(["category", "event_timestamp"], ignore_index=True)


def complete_weeks(ts: pd.Series) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last week with as many trading days as the typical week.

    An extract cut mid-week (the real file ends on a Thursday) would otherwise end the
    history with a week of half the sales, which every forecast and baseline would chase.
    """
    day = pd.to_datetime(ts).dt.normalize().drop_duplicates()
    days = day.groupby(week_start(day)).size().sort_index()
    typical = days.iloc[1:-1].median() if len(days) > 2 else days.max()
    full = days[days >= typical]
    if full.empty:
        return days.index[0], days.index[-1]
    return full.index[0], full.index[-1]


def calendar(week_starts: pd.Series) -> pd.DataFrame:
    """Calendar features of weeks given by their Monday: known in advance, so usable for future weeks."""
    ts = pd.DatetimeIndex(pd.to_datetime(week_starts))
    if ts.tz is not None:
        ts = ts.tz_localize(None)
    # every day of every week in one index (vectorised: the forecaster calls this per series)
    days = pd.DatetimeIndex((ts.to_numpy()[:, None] + np.arange(7) * np.timedelta64(1, "D")).ravel())
    month, day = days.month.to_numpy().reshape(-1, 7), days.day.to_numpy().reshape(-1, 7)
    weekday = days.weekday.to_numpy().reshape(-1, 7)
    first, last = BLACK_FRIDAY_DAYS
    black_friday = ((month == 11) & (weekday == 4) & (day >= first) & (day <= last)).any(axis=1)
    christmas = ((month == 12) & (day == 25)).any(axis=1)
    out = pd.DataFrame(
        {
            "week_of_year": ts.isocalendar().week.to_numpy().astype("int64"),
            "month": ts.month.to_numpy().astype("int64"),
            "black_friday_week": black_friday.astype("int64"),
            "christmas_week": christmas.astype("int64"),
        }
    )
    out.index = week_starts.index
    return out


def _typed(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    numeric = [c for c in frame.columns if c not in (key, "event_timestamp")]
    frame[numeric] = frame[numeric].astype("float64")
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns]")
    return frame.sort_values([key, "event_timestamp"], ignore_index=True)


# What building a table holds in pandas per clean line of its part (the part's frame, its groupings and dense
# matrices, the output): measured 0.7 KB for the whole of a 9.0M-line delivery; parts are sized with margin.
BYTES_PER_LINE = 1_000


@dataclass(frozen=True)
class Table:
    """How one feature table is built from the clean table: the columns it reads, the key its parts split on."""

    key: str
    columns: tuple[str, ...]


TABLES = {
    "customer_features": Table("customer_id", ("customer_id", "invoice", "invoice_ts", "quantity", "revenue",
                                               "category")),
    "product_features": Table("stock_code", ("stock_code", "invoice", "customer_id", "invoice_ts", "quantity",
                                             "revenue")),
    "category_week_features": Table("category", ("category", "invoice", "invoice_ts", "quantity", "revenue")),
}


# How a part's columns are read: an invoice is a grouping key only (the clean suite allows digits alone, so a
# number: grouping Python strings cost a third of the step), a category one of CATEGORIES (a pandas Categorical)
_CATEGORY_TYPE = "ENUM(" + ", ".join("'" + c + "'" for c in CATEGORIES) + ")"
_READ = {"invoice": "CAST(invoice AS BIGINT) AS invoice", "category": f"CAST(category AS {_CATEGORY_TYPE}) AS category"}


def _parts(con: duckdb.DuckDBPyConnection, source: str, key: str, lines: int) -> list[tuple[object, object]]:
    """Half-open key ranges ``[lo, hi)`` of at most ``lines`` clean lines each (a key is never split); together they
    cover every key, present or not (the first has no lower bound, the last no upper one)."""
    counted = con.execute(f"SELECT {key} AS k, count(*) AS n FROM {source} GROUP BY 1 ORDER BY 1").fetchnumpy()
    keys, n = counted["k"], np.asarray(counted["n"])
    if len(keys) == 0:
        return [(None, None)]
    part = (np.cumsum(n) - 1) // max(lines, 1)
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])

    def plain(value: object) -> object:
        return value.item() if isinstance(value, np.generic) else value

    bounds = [None, *(plain(keys[i]) for i in starts[1:]), None]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _within(lo: object, hi: object, key: str) -> tuple[str, list[object]]:
    """The SQL condition (and its parameters) of a key range from :func:`_parts`."""
    conditions, values = ["true"], []
    if lo is not None:
        conditions.append(f"{key} >= ?")
        values.append(lo)
    if hi is not None:
        conditions.append(f"{key} < ?")
        values.append(hi)
    return " AND ".join(conditions), values


def _build(name: str, part: pd.DataFrame, span: Span, complete: tuple[pd.Timestamp, pd.Timestamp],
           lo: str | None, hi: str | None) -> pd.DataFrame | None:
    """One part's rows of table ``name`` (None: the part has nothing to build)."""
    if name == "category_week_features":  # every category gets its weeks, with zeros where it sold nothing
        categories = [c for c in CATEGORIES if (lo is None or c >= lo) and (hi is None or c < hi)]
        return category_week_features(part, complete, categories) if categories else None
    if part.empty:
        return None
    return customer_features(part, span) if name == "customer_features" else product_features(part, span)


def write_tables(clean_file: Path, out: Path, budget_mb: int, threads: int = 0) -> dict[str, dict[str, object]]:
    """Build the three feature tables of a clean table on disk into ``out/<name>.parquet``, part by part so that
    pandas never holds more than ``budget_mb`` (a quarter of it for DuckDB's reads): customers, products and
    categories in contiguous key ranges, each part built with the whole delivery's week span, so the tables equal
    the ones built from the whole table at once. Returns each table's rows and newest ``event_timestamp``."""
    source = f"read_parquet('{str(clean_file).replace(chr(39), chr(39) * 2)}')"
    lines = max(1, (budget_mb * 3 // 4) * 2**20 // BYTES_PER_LINE)
    tables: dict[str, dict[str, object]] = {}
    with lake.connect(max(64, budget_mb // 4), threads, out / "spill") as con:
        bounds = con.execute(f"SELECT min(invoice_ts), max(invoice_ts) FROM {source}").fetchone()
        assert bounds is not None and bounds[0] is not None, f"{clean_file} has no lines"
        span = span_of(pd.Series(pd.to_datetime(list(bounds))))
        days = con.execute(f"SELECT DISTINCT CAST(invoice_ts AS DATE) AS day FROM {source}").df()["day"]
        complete = complete_weeks(pd.to_datetime(days))
        for name, table in TABLES.items():
            newest: list[pd.Timestamp] = []

            def built(name: str = name, table: Table = table,
                      newest: list[pd.Timestamp] = newest) -> Iterator[pd.DataFrame]:
                for lo, hi in _parts(con, source, table.key, lines):
                    where, values = _within(lo, hi, table.key)
                    part = con.execute(f"SELECT {', '.join(_READ.get(c, c) for c in table.columns)} FROM {source} "
                                       f"WHERE {where}", values).df()
                    frame = _build(name, part, span, complete, lo, hi)  # type: ignore[arg-type]
                    del part
                    if frame is None:
                        continue
                    for col in ("event_timestamp", "week_start"):  # microseconds: what the offline store's
                        if col in frame:  # reader (ibis on DuckDB) knows as a timestamp; nanoseconds read as text
                            frame[col] = frame[col].dt.tz_localize("UTC").astype("datetime64[us, UTC]")
                    newest.append(frame["event_timestamp"].max())
                    yield frame

            try:
                rows = lake.write_frames(out / f"{name}.parquet", built())
            except ValueError as nothing:
                raise ValueError(f"{clean_file}: no lines to build {name} from") from nothing
            tables[name] = {"rows": rows, "newest": max(newest).isoformat()}
    return tables
