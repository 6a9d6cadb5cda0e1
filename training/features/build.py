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

from collections.abc import Callable, Iterator, Sequence
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


def _dense(keys: np.ndarray, week: np.ndarray, values: np.ndarray, n_keys: int, n_weeks: int) -> np.ndarray:
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


# The tables are built in two halves: DuckDB aggregates the lines (orders per customer, sales per product and week,
# per category and week), then numpy turns the aggregates into dense key x week matrices and their cumulative sums.
# Money is summed in whole cents (a clean line's revenue has two decimals), so every total is exact and the same in
# any order of lines: a table built in parts equals the whole-table build, and a frame in memory the file on disk.
_CENTS = "CAST(round(revenue * 100) AS BIGINT)"
_FRAME_MB = 1_024  # DuckDB's memory for a table built from a frame in memory


def _week(span: Span, ts: str = "invoice_ts") -> str:
    """SQL: the index of a timestamp's week within ``span`` (its Monday is a Monday)."""
    return f"(date_diff('day', DATE '{span.start.date()}', CAST({ts} AS DATE)) // 7)"


def _seconds(span: Span, ts: str) -> str:
    """SQL: seconds from the span's start."""
    return f"(epoch({ts}) - epoch(TIMESTAMP '{span.start}'))"


def _cutoffs(start: pd.Timestamp, weeks: np.ndarray) -> np.ndarray:
    """The cutoff of each week index: ``start`` plus that many weeks, as nanosecond timestamps."""
    days = (np.asarray(weeks, dtype=np.int64) * 7).astype("timedelta64[D]")
    out: np.ndarray = (start.to_datetime64().astype("datetime64[ns]") + days).astype("datetime64[ns]")
    return out


def _in_memory(clean: pd.DataFrame, table: str,
               build: Callable[[duckdb.DuckDBPyConnection, str], pd.DataFrame]) -> pd.DataFrame:
    """A table built from a frame of clean lines: the frame goes through the same SQL as a file's parts do."""
    with lake.scratch(_FRAME_MB) as (con, _):
        return build(con, lake.table_of(con, clean[list(TABLES[table].columns)], "clean_lines"))


def customer_features(clean: pd.DataFrame, span: Span | None = None) -> pd.DataFrame:
    """One row per (customer, weekly cutoff) after the customer's first order; ``span``: the whole delivery's, when
    ``clean`` holds some customers' lines only."""
    span = span or span_of(clean["invoice_ts"])
    return _in_memory(clean, "customer_features", lambda con, source: _customers(con, *_customer_sql(source, span),
                                                                                 span))


def _customer_sql(source: str, span: Span) -> tuple[str, str]:
    """The two aggregates customer features are built from: one row per order (its week, time, lines, units and
    cents) and one per customer, category and week (the cents spent)."""
    orders = f"""
        SELECT customer_id, {_week(span, 'min(invoice_ts)')} AS w, {_seconds(span, 'min(invoice_ts)')} AS secs,
               count(*) AS lines, sum(quantity) AS units, sum({_CENTS}) AS cents
        FROM {source} GROUP BY customer_id, invoice"""
    spend = f"""
        SELECT customer_id, CAST(category AS {_CATEGORY_TYPE}) AS category, {_week(span)} AS w,
               sum({_CENTS}) AS cents
        FROM {source} GROUP BY ALL"""
    return orders, spend


def _customers(con: duckdb.DuckDBPyConnection, orders_sql: str, spend_sql: str, span: Span) -> pd.DataFrame:
    """Customer features from the rows of the two aggregates (:func:`_customer_sql`)."""
    start, n_weeks = span.start, span.weeks
    orders = con.execute(orders_sql).fetchnumpy()
    spend = con.execute(spend_sql).df()
    customers, c = np.unique(orders["customer_id"], return_inverse=True)
    w = np.asarray(orders["w"], dtype=np.int64)
    n = len(customers)
    cum = {
        k: np.cumsum(_dense(c, w, np.asarray(v, dtype=float), n, n_weeks), axis=1)
        for k, v in {"orders": np.ones(len(c)), "lines": orders["lines"], "units": orders["units"],
                     "cents": orders["cents"]}.items()
    }
    # last and first order time up to each week's end (seconds since start), forward-filled over weeks
    secs = np.asarray(orders["secs"], dtype=float)
    last = np.full((n, n_weeks), -np.inf)
    np.maximum.at(last, (c, w), secs)
    last = np.maximum.accumulate(last, axis=1)
    first = np.full((n, n_weeks), np.inf)
    np.minimum.at(first, (c, w), secs)
    first = np.minimum.accumulate(first, axis=1)

    # a customer's spend per category, cumulative over weeks: (customer, week, category), so that the categories of
    # one row are adjacent when the rows are picked below
    k = len(CATEGORIES)
    spender = np.searchsorted(customers, spend["customer_id"].to_numpy())
    cells = (spender * n_weeks + spend["w"].to_numpy()) * k + spend["category"].cat.codes.to_numpy()
    by_category = np.bincount(cells, weights=spend["cents"].to_numpy(float), minlength=n * n_weeks * k)
    cum_spend = np.cumsum(by_category.reshape(n, n_weeks, k), axis=1)

    # a row per customer and cutoff after the first order; the cutoff of week index wi holds the totals of weeks
    # < wi, which is column wi - 1 of the cumulative matrices (wi >= 1 wherever an order came before)
    ci, wi = np.nonzero(cum["orders"][:, :-1] > 0)
    wi += 1
    was = wi - 1
    cutoff_secs = wi * 7 * 86400.0
    orders_b, lines_b, units_b, cents_b = (cum[key][ci, was] for key in ("orders", "lines", "units", "cents"))
    with np.errstate(invalid="ignore", divide="ignore"):
        columns: dict[str, np.ndarray] = {
            "recency_days": (cutoff_secs - last[ci, was]) / 86400.0,
            "frequency": orders_b,
            "monetary": cents_b / 100,
            "frequency_13w": _window(cum["orders"], RECENT_WEEKS)[ci, wi],
            "monetary_13w": _window(cum["cents"], RECENT_WEEKS)[ci, wi] / 100,
            "basket_lines": lines_b / orders_b,
            "units_per_line": units_b / lines_b,
            "unit_price": cents_b / 100 / units_b,
            "tenure_days": (cutoff_secs - first[ci, was]) / 86400.0,
        }
        shares = np.nan_to_num(cum_spend[ci, was] / cents_b[:, None])
    columns |= {col: shares[:, j] for j, col in enumerate(SHARE_COLUMNS)}
    frame = pd.DataFrame({"customer_id": customers[ci], "event_timestamp": _cutoffs(start, wi), **columns},
                         copy=False)  # each column a block of its own: no copy into one 2-D block
    return _typed(frame, "customer_id")


def product_features(clean: pd.DataFrame, span: Span | None = None) -> pd.DataFrame:
    """One row per (product, weekly cutoff) with sales in the 4 weeks before the cutoff; ``span`` as for
    :func:`customer_features`."""
    span = span or span_of(clean["invoice_ts"])
    return _in_memory(clean, "product_features", lambda con, source: _products(con, source, span))


def _products(con: duckdb.DuckDBPyConnection, source: str, span: Span) -> pd.DataFrame:
    start, n_weeks = span.start, span.weeks
    weekly = con.execute(f"""
        SELECT stock_code, {_week(span)} AS w, sum(quantity) AS units, sum({_CENTS}) AS cents,
               count(DISTINCT invoice) AS orders, count(DISTINCT customer_id) AS customers
        FROM {source} GROUP BY ALL""").df()
    codes, products = pd.factorize(weekly["stock_code"], sort=True)
    n, w = len(products), weekly["w"].to_numpy()

    def cumulative(column: str) -> np.ndarray:
        return np.cumsum(_dense(codes, w, weekly[column].to_numpy(float), n, n_weeks), axis=1)

    u4 = _window(cumulative("units"), POPULARITY_WEEKS)
    c4 = _window(cumulative("cents"), POPULARITY_WEEKS)
    pi, wi = np.nonzero(u4 > 0)
    frame = pd.DataFrame(
        {
            "stock_code": np.asarray(products, dtype=object)[pi],
            "event_timestamp": _cutoffs(start, wi),
            "units_4w": u4[pi, wi],
            "orders_4w": _window(cumulative("orders"), POPULARITY_WEEKS)[pi, wi],
            "customers_4w": _window(cumulative("customers"), POPULARITY_WEEKS)[pi, wi],
            "price_4w": c4[pi, wi] / 100 / u4[pi, wi],
        },
        copy=False,
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
    weeks = complete or complete_weeks(clean["invoice_ts"])
    return _in_memory(clean, "category_week_features", lambda con, source: _category_weeks(con, source, weeks,
                                                                                          categories))


def _category_weeks(con: duckdb.DuckDBPyConnection, source: str, complete: tuple[pd.Timestamp, pd.Timestamp],
                    categories: Sequence[str]) -> pd.DataFrame:
    first, last = complete
    grouped = con.execute(f"""
        SELECT CAST(category AS VARCHAR) AS category, CAST(date_trunc('week', invoice_ts) AS TIMESTAMP) AS week_start,
               sum(quantity) AS units, sum({_CENTS}) AS cents, count(DISTINCT invoice) AS orders
        FROM {source} WHERE date_trunc('week', invoice_ts) BETWEEN TIMESTAMP '{first}' AND TIMESTAMP '{last}'
        GROUP BY ALL""").df()
    grouped["revenue"] = grouped.pop("cents") / 100
    grouped["week_start"] = grouped["week_start"].astype("datetime64[ns]")
    full = pd.MultiIndex.from_product(
        [list(categories), pd.date_range(first, last, freq="7D")], names=["category", "week_start"]
    )
    frame = grouped.set_index(["category", "week_start"])[["units", "revenue", "orders"]].reindex(
        full, fill_value=0).reset_index()
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
    """Every feature as float64, ``event_timestamp`` in nanoseconds, the rows in (key, event_timestamp) order (the
    customer and product tables are built in that order already, so their check costs no sort)."""
    numeric = [c for c in frame.columns if c not in (key, "event_timestamp") and frame[c].dtype != "float64"]
    if numeric:
        frame[numeric] = frame[numeric].astype("float64")
    if frame["event_timestamp"].dtype != "datetime64[ns]":
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns]")
    keys = frame[key].to_numpy()
    stamps = frame["event_timestamp"].to_numpy()
    if len(frame) > 1 and frame[key].is_monotonic_increasing:
        same = keys[1:] == keys[:-1]
        if not (same & (stamps[1:] <= stamps[:-1])).any():
            return frame
    return frame.sort_values([key, "event_timestamp"], ignore_index=True)


# What building a table holds in pandas per key and week of its part (the dense key x week matrices, a customer's
# spend per category among them, and the output rows): at 600 a 10.5M-line delivery's features step peaked at
# 3.1 GB, at 1,800 at 1.5 GB; since two tables are built at a time, each with half of pandas' share, 1.1 GB
# (python -m benchmarks --only data).
BYTES_PER_KEY_WEEK = 1_800


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


_CATEGORY_TYPE = "ENUM(" + ", ".join("'" + c + "'" for c in CATEGORIES) + ")"  # a pandas Categorical of CATEGORIES


def _parts(con: duckdb.DuckDBPyConnection, source: str, key: str, keys: int) -> list[tuple[object, object]]:
    """Half-open key ranges ``[lo, hi)`` of at most ``keys`` keys each; together they cover every key, present or
    not (the first has no lower bound, the last no upper one)."""
    found = con.execute(f"SELECT DISTINCT {key} AS k FROM {source} ORDER BY 1").fetchnumpy()["k"]
    if len(found) == 0:
        return [(None, None)]
    starts = range(0, len(found), max(keys, 1))

    def plain(value: object) -> object:
        return value.item() if isinstance(value, np.generic) else value

    bounds = [None, *(plain(found[i]) for i in starts[1:]), None]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _within(lo: object, hi: object, key: str) -> str:
    """The SQL condition of a key range from :func:`_parts` (keys are numbers or text)."""

    def value(v: object) -> str:
        return lake.literal(v) if isinstance(v, str) else str(int(v))  # type: ignore[call-overload]

    conditions = ["true"]
    if lo is not None:
        conditions.append(f"{key} >= {value(lo)}")
    if hi is not None:
        conditions.append(f"{key} < {value(hi)}")
    return " AND ".join(conditions)


_AGGREGATES = ("customer_orders", "customer_spend")  # write_tables' tables of _customer_sql's aggregates


def _build(name: str, con: duckdb.DuckDBPyConnection, part: str, span: Span,
           complete: tuple[pd.Timestamp, pd.Timestamp], lo: str | None, hi: str | None) -> pd.DataFrame | None:
    """One part's rows of table ``name`` (None: the part has nothing to build)."""
    if name == "category_week_features":  # every category gets its weeks, with zeros where it sold nothing
        categories = [c for c in CATEGORIES if (lo is None or c >= lo) and (hi is None or c < hi)]
        return _category_weeks(con, part, complete, categories) if categories else None
    if name == "customer_features":  # from the delivery's aggregates, which write_tables made once
        where = _within(lo, hi, "customer_id")
        frame = _customers(con, f"SELECT * FROM {_AGGREGATES[0]} WHERE {where}",
                           f"SELECT * FROM {_AGGREGATES[1]} WHERE {where}", span)
        return frame if len(frame) else None
    found = con.execute(f"SELECT count(*) FROM {part}").fetchone()
    if not found or not found[0]:
        return None
    return _products(con, part, span)


def write_tables(clean_file: Path, out: Path, budget_mb: int, threads: int = 0) -> dict[str, dict[str, object]]:
    """Build the three feature tables of a clean table on disk into ``out/<name>.parquet``, part by part so that
    pandas never holds more than ``budget_mb`` (a quarter of it for DuckDB): customers, products and categories in
    contiguous key ranges, each part built with the whole delivery's week span, so the tables equal the ones built
    from the whole table at once. The customers' table is built beside the other two (two threads, each with half
    of pandas' share): its parts are mostly numpy, theirs mostly DuckDB, which releases the GIL. Returns each table's
    rows and newest ``event_timestamp``."""
    from concurrent.futures import ThreadPoolExecutor

    source = f"read_parquet({lake.literal(str(clean_file))})"
    with lake.connect(max(64, budget_mb // 4), threads, out / "spill") as con:
        bounds = con.execute(f"SELECT min(invoice_ts), max(invoice_ts) FROM {source}").fetchone()
        assert bounds is not None and bounds[0] is not None, f"{clean_file} has no lines"
        span = span_of(pd.Series(pd.to_datetime(list(bounds))))
        days = con.execute(f"SELECT DISTINCT CAST(invoice_ts AS DATE) AS day FROM {source}").df()["day"]
        complete = complete_weeks(pd.to_datetime(days))
        keys = max(1, (budget_mb * 3 // 8) * 2**20 // (BYTES_PER_KEY_WEEK * span.weeks))
        # the customers' two aggregates, each made in one pass over the delivery and kept in DuckDB (within its
        # budget, spilling beyond it) in customer order: a part then reads its customers' rows, not every line again.
        # Tables of the in-memory database, not temporary ones: the threads' cursors are connections of their own.
        for name, sql in zip(_AGGREGATES, _customer_sql(source, span), strict=True):
            con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql} ORDER BY customer_id")

        def write(name: str, cursor: duckdb.DuckDBPyConnection) -> dict[str, object]:
            table = TABLES[name]
            newest: list[pd.Timestamp] = []

            def built() -> Iterator[pd.DataFrame]:
                for lo, hi in _parts(cursor, source, table.key, keys):
                    cursor.execute(f"CREATE OR REPLACE TEMP VIEW part AS SELECT {', '.join(table.columns)} "
                                   f"FROM {source} WHERE {_within(lo, hi, table.key)}")
                    frame = _build(name, cursor, "part", span, complete, lo, hi)  # type: ignore[arg-type]
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
            finally:
                cursor.close()
            return {"rows": rows, "newest": max(newest).isoformat()}

        cursors = {name: con.cursor() for name in TABLES}  # made here, each used by one thread and closed there
        with ThreadPoolExecutor(2, thread_name_prefix="feature-table") as pool:
            customers = pool.submit(write, "customer_features", cursors["customer_features"])
            others = pool.submit(lambda: {name: write(name, cursors[name]) for name in TABLES
                                          if name != "customer_features"})
            built_tables = {"customer_features": customers.result(), **others.result()}
        for name in _AGGREGATES:
            con.execute(f"DROP TABLE {name}")
    return {name: built_tables[name] for name in TABLES}
