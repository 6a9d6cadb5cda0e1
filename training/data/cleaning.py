"""Read Online Retail II files (CSV, XLSX or Parquet) and derive the cleaned table, in DuckDB.

The raw file is never modified. Cleaning applies the rules in :data:`DROP_RULES`
in order; the report counts, for each rule, the rows it flags on the raw table on
its own and the rows it actually drops after the earlier rules, so the numbers
add up to the total dropped. Simulated and real data take the same path, and so do a
whole delivery on disk (:func:`clean_file`, out of core within the data steps' memory
budget) and a table in memory (:func:`clean_transactions`, for tests and probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from training.data.categories import categorize_series
from training.data.lake import ROW, TIMESTAMP_FORMAT, UnreadableInput, literal, normalise, quote, scratch, table_of
from training.data.schema import CLEAN_SCHEMA, PRODUCT_CODE_PATTERN, RAW_COLUMNS

__all__ = ["read_transactions", "clean_transactions", "clean_file", "customer_countries", "CleaningReport", "DROP_RULES",
           "UnreadableInput"]

_READ_BUDGET_MB = 1_024  # reading into memory for a caller that wants a DataFrame: the frame is the budget


def read_transactions(path: Path) -> pd.DataFrame:
    """Read a raw file into the raw schema's names and dtypes; columns missing from the file stay missing.

    Both UCI spellings are read (Online Retail II's ``Invoice``, ``Price``, ``Customer ID`` and the older
    Online Retail's ``InvoiceNo``, ``UnitPrice``, ``CustomerID``); ``frame.attrs["spelling"]`` says which the
    file used (None when it matches neither completely). The same reader as the gate's (:func:`normalise`)."""
    with scratch(_READ_BUDGET_MB) as (con, tmp):
        raw = normalise(con, Path(path), tmp / "raw.parquet")
        frame = pd.read_parquet(raw.path)
    for col in ("Quantity", "Customer ID"):
        if col in frame and pd.api.types.is_integer_dtype(frame[col]):
            frame[col] = frame[col].astype("Int64")
    frame.attrs["spelling"] = raw.spelling
    return frame


_STRIPPED = "trim({col}, ' \t\n\r\x0b\x0c')"  # Python's str.strip() for ASCII whitespace

# name -> (what it drops, the SQL predicate on a raw line that flags it). "duplicate" is computed apart: a line
# equal in every column to an earlier one (NULLs equal, as pandas' duplicated() has it).
DROP_RULES: dict[str, tuple[str, str]] = {
    "cancellation": ("invoice starts with C", "coalesce(starts_with(\"Invoice\", 'C'), false)"),
    "non_product": (
        "stock code is not 5 digits plus an optional letter (POST, M, DOT, C2, ADJUST...)",
        f"NOT coalesce(regexp_full_match(\"StockCode\", {literal(PRODUCT_CODE_PATTERN)}), false)",
    ),
    "non_positive_quantity": ("quantity <= 0 (returns without a C invoice)", "NOT coalesce(\"Quantity\" > 0, false)"),
    "non_positive_price": ("price <= 0 (free samples, bad-debt adjustments)", "NOT coalesce(\"Price\" > 0, false)"),
    "missing_customer": ("customer id missing", "\"Customer ID\" IS NULL"),
    "nan_description": (
        "description missing or the literal string 'nan'",
        "\"Description\" IS NULL OR lower(" + _STRIPPED.format(col='"Description"') + ") IN ('nan', '')",
    ),
    "duplicate": ("exact duplicate of an earlier line", "duplicate"),
}


@dataclass(frozen=True)
class CleaningReport:
    """Counts of one cleaning run (rows in, rows out, per rule flagged and dropped)."""

    rows_in: int
    rows_out: int
    flagged: dict[str, int]
    dropped: dict[str, int]
    category_counts: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in, "rows_out": self.rows_out, "flagged": self.flagged,
            "dropped": self.dropped, "category_counts": self.category_counts,
            "rules": {k: v[0] for k, v in DROP_RULES.items()},
        }

    def lines(self) -> list[str]:
        width = max(len(k) for k in DROP_RULES)
        out = [f"{'rule':<{width}}  {'flagged':>9}  {'dropped':>9}"]
        out += [f"{k:<{width}}  {self.flagged[k]:>9,}  {self.dropped[k]:>9,}" for k in DROP_RULES]
        out.append(f"{'rows in / out':<{width}}  {self.rows_in:>9,}  {self.rows_out:>9,}")
        return out


def _flags(con: duckdb.DuckDBPyConnection, raw: str, columns: list[str]) -> None:
    """A temporary table of every raw line's position and the rules that flag it."""
    every = ", ".join(quote(c) for c in columns)
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS SELECT min({ROW}) AS first FROM {raw} GROUP BY {every}")
    rules = ", ".join(f"({sql}) AS {quote(name)}" for name, (_, sql) in DROP_RULES.items() if name != "duplicate")
    con.execute(f"CREATE OR REPLACE TEMP TABLE flags AS SELECT {ROW}, {rules}, "
                f"{ROW} NOT IN (SELECT first FROM firsts) AS duplicate FROM {raw}")
    con.execute("DROP TABLE firsts")


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, dict[str, int], dict[str, int]]:
    names = list(DROP_RULES)
    flagged = [f"count_if({quote(n)})" for n in names]
    dropped = [f"count_if({quote(n)} AND NOT ({' OR '.join(quote(m) for m in names[:k]) or 'false'}))"
               for k, n in enumerate(names)]
    row = con.execute(f"SELECT count(*), {', '.join(flagged + dropped)} FROM flags").fetchone()
    assert row is not None
    return int(row[0]), dict(zip(names, map(int, row[1:1 + len(names)]))), dict(zip(names, map(int, row[1 + len(names):])))


def _clean_select(con: duckdb.DuckDBPyConnection, raw: str) -> str:
    """The clean table's SELECT: the kept lines in delivery order, typed, categorised."""
    keep = " OR ".join(quote(n) for n in DROP_RULES)
    description = _STRIPPED.format(col='"Description"')
    con.execute(f"CREATE OR REPLACE TEMP TABLE kept AS SELECT {ROW} FROM flags WHERE NOT ({keep})")
    distinct = con.execute(f"SELECT DISTINCT {description} AS text_ FROM {raw} SEMI JOIN kept USING ({ROW})").df()
    distinct["category_"] = categorize_series(distinct["text_"]).astype(str)
    con.register("categories", distinct)
    return f"""
        SELECT "Invoice" AS invoice, "StockCode" AS stock_code, {description} AS description,
               CAST("Quantity" AS BIGINT) AS quantity,
               CAST(strptime("InvoiceDate", {literal(TIMESTAMP_FORMAT)}) AS TIMESTAMP_S) AS invoice_ts,
               CAST("Price" AS DOUBLE) AS price, CAST("Customer ID" AS BIGINT) AS customer_id,
               CAST("Country" AS VARCHAR) AS country, category_ AS category,
               round_even(CAST("Quantity" AS BIGINT) * CAST("Price" AS DOUBLE), 2) AS revenue
        FROM {raw} SEMI JOIN kept USING ({ROW}) JOIN categories ON text_ = {description}
        ORDER BY {ROW}"""


def _clean(con: duckdb.DuckDBPyConnection, raw: str, columns: list[str]) -> tuple[str, int, dict[str, int],
                                                                              dict[str, int]]:
    """The clean table's SELECT, the lines in, and the lines each rule flagged and dropped."""
    missing = [c for c in RAW_COLUMNS if c not in columns]
    if missing:
        raise UnreadableInput(f"missing column(s): {', '.join(missing)}")
    _flags(con, raw, columns)
    rows_in, flagged, dropped = _counts(con)
    return _clean_select(con, raw), rows_in, flagged, dropped


def clean_file(con: duckdb.DuckDBPyConnection, raw: Path, dest: Path) -> CleaningReport:
    """Clean the normalised delivery ``raw`` (see :func:`training.data.lake.normalise`) into ``dest`` (Parquet,
    :data:`~training.data.schema.CLEAN_SCHEMA`), out of core within ``con``'s memory budget."""
    view = f"read_parquet({literal(str(raw))}, file_row_number=true)"
    columns = [c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet({literal(str(raw))})").fetchall()]
    select, rows_in, flagged, dropped = _clean(con, view, columns)
    part = dest.with_suffix(".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({select}) TO {literal(str(part))} (FORMAT parquet)")
    part.replace(dest)
    counts = con.execute(f"SELECT category, count(*) FROM read_parquet({literal(str(dest))}) GROUP BY ALL").fetchall()
    return CleaningReport(rows_in, sum(n for _, n in counts), flagged, dropped,
                          {str(k): int(v) for k, v in sorted(counts)})


def customer_countries(source: str) -> str:
    """SQL over clean lines (a :func:`~training.data.lake.table_of` source): each customer's country, the one of
    their first line."""
    return f"SELECT customer_id, arg_min(country, {ROW}) AS country FROM {source} GROUP BY customer_id"


def clean_transactions(raw: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """The cleaned table (see :data:`~training.data.schema.CLEAN_SCHEMA`) of a raw table in memory, and what was
    dropped: the rules of :func:`clean_file`, on a DataFrame."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise UnreadableInput(f"missing column(s): {', '.join(missing)}")
    with scratch(_READ_BUDGET_MB) as (con, _):
        select, rows_in, flagged, dropped = _clean(con, table_of(con, raw, "raw_frame"), [str(c) for c in raw.columns])
        table = con.sql(select).to_arrow_table()
    clean = table.cast(CLEAN_SCHEMA).to_pandas()
    clean["invoice_ts"] = clean["invoice_ts"].astype("datetime64[s]")
    counts = clean["category"].value_counts().sort_index()
    return clean, CleaningReport(rows_in, len(clean), flagged, dropped, {str(k): int(v) for k, v in counts.items()})
