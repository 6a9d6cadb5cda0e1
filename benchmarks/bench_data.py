"""Data-step benchmark tasks (issue 27's scale), each run by :func:`benchmarks.bench.measure` in a fresh interpreter.

One simulated delivery per size goes through the weekly pipeline's steps as the DAG runs them (snapshot into the
data registry, the gate, the features step, then the three trainings), each step timed with its own peak memory;
the same raw file then goes through two bare DuckDB scripts doing the same work in one query each, back to back, as
the baseline:

- gate baseline: the clean rows (the same rules, same order, deduplicated) written to Parquet, plus one pass of the
  aggregates the suites check (nulls, ranges, patterns) over the raw and the clean table;
- features baseline: the weekly aggregates the feature tables are built from (per category, per customer, per
  customer and category, per product) written to Parquet.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["simulate_raw", "snapshot", "gate", "features", "train", "duck_gate", "duck_features"]


def _emit(**values: float) -> None:
    for key, value in values.items():
        print(f"__{key}__ {float(value)}")


def _settings(folder: str) -> object:
    """The step's settings as a DAG task gets them: ``get_settings()``, the first call of every step (it also takes
    typeguard off Feast's classes before Feast is imported, zmlops.libraries), with ZM_HOME in the folder."""
    import os

    from zmlops.settings import get_settings

    os.environ["ZM_HOME"] = str(Path(folder) / "zm")
    return get_settings()


def simulate_raw(rows: str, folder: str) -> None:
    """About ``rows`` raw rows of the simulator, written to ``folder/raw/transactions.parquet`` (not timed)."""
    from training.data.simulator import simulate
    from training.data.world import SimulationConfig

    result = simulate(SimulationConfig.for_rows(int(rows)), Path(folder) / "raw")
    _emit(output=result.rows)


def snapshot(folder: str) -> None:
    """The snapshot step: the file versioned in the data registry (git + DVC), its lines counted."""
    from training.data import ingest

    version = ingest.snapshot_file(_settings(folder), Path(folder) / "raw" / "transactions.parquet")  # type: ignore[arg-type]
    _emit(output=version.meta["rows"])


def gate(folder: str) -> None:
    """The gate step: raw suite, cleaning, clean suite, the clean table stored."""
    from training.data import ingest

    result = ingest.validate_version(_settings(folder), "v1")  # type: ignore[arg-type]
    assert result.cleaning is not None
    _emit(output=result.cleaning.rows_out)


def features(folder: str) -> None:
    """The features step: the three feature tables built, published and materialised into the online store."""
    from training.pipeline import features as step

    out = step(_settings(folder), "v1")  # type: ignore[arg-type]
    _emit(output=sum(out["rows"].values()))


def train(folder: str, family: str) -> None:
    """A training step as the DAG runs it (Feast's training set, fit, evaluation, MLflow, the gate), on the tables
    the features step wrote; its output is the family's primary metric, and it reports its phases' seconds (the
    training set, the choice of parameters, the fit, the evaluation)."""
    from training.pipeline import train as step

    out = step(_settings(folder), family, "v1", "benchmark")  # type: ignore[arg-type]
    _emit(output=out["metric"], **{f"{phase}_seconds": value for phase, value in out["seconds"].items()})


def duck_gate(folder: str) -> None:
    """Baseline: the clean rows and the checks' aggregates in bare DuckDB over the same raw file."""
    import duckdb

    from training.data.cleaning import DROP_RULES

    raw = f"read_parquet('{Path(folder) / 'raw' / 'transactions.parquet'}', file_row_number=true)"
    rules = " OR ".join(f"({sql})" for name, (_, sql) in DROP_RULES.items() if name != "duplicate")
    every = '"Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"'
    clean = Path(folder) / "duck_clean.parquet"
    checks = """count(*), count("Invoice"), count("StockCode"), count("Description"), count("Customer ID"),
        min("Quantity"), max("Quantity"), min("Price"), max("Price"), min(InvoiceDate), max(InvoiceDate),
        count_if(NOT regexp_full_match("Invoice", '^[CA]?\\d{6,8}$')),
        count_if(NOT regexp_full_match("StockCode", '^[A-Za-z0-9][A-Za-z0-9_ ]*$'))"""
    with duckdb.connect() as con:
        con.execute(f"SELECT {checks} FROM {raw}").fetchall()
        con.execute(f"""COPY (
            SELECT "Invoice", "StockCode", trim("Description") AS description, "Quantity", CAST(strptime("InvoiceDate",
                   '%Y-%m-%d %H:%M:%S') AS TIMESTAMP_S) AS invoice_ts, "Price", "Customer ID", "Country",
                   round_even("Quantity" * "Price", 2) AS revenue
            FROM (SELECT *, row_number() OVER (PARTITION BY {every} ORDER BY file_row_number) AS nth FROM {raw})
            WHERE nth = 1 AND NOT ({rules}) ORDER BY file_row_number) TO '{clean}' (FORMAT parquet)""")
        row = con.execute(f"SELECT count(*) FROM '{clean}'").fetchone()
        con.execute(f"""SELECT count(*), count(description), min("Quantity"), max("Quantity"), min("Price"),
            max("Price"), min(invoice_ts), max(invoice_ts), count_if(NOT regexp_full_match("StockCode",
            '^\\d{{5}}[A-Za-z]{{0,2}}$')) FROM '{clean}'""").fetchall()
    _emit(output=row[0] if row else 0)


def duck_features(folder: str) -> None:
    """Baseline: the weekly aggregates behind the feature tables, in bare DuckDB over the clean table."""
    import duckdb

    from training.data.ingest import clean_path

    clean = clean_path(_settings(folder), "v1")  # type: ignore[arg-type]
    week = "date_trunc('week', invoice_ts)"
    queries = {
        "category_week": f"""SELECT category, {week} AS week, sum(quantity) AS units, sum(revenue) AS revenue,
                             count(DISTINCT invoice) AS orders FROM '{clean}' GROUP BY ALL""",
        "customer_week": f"""SELECT customer_id, {week} AS week, count(DISTINCT invoice) AS orders, count(*) AS lines,
                             sum(quantity) AS units, sum(revenue) AS revenue, min(invoice_ts) AS first,
                             max(invoice_ts) AS last FROM '{clean}' GROUP BY ALL""",
        "customer_category_week": f"""SELECT customer_id, category, {week} AS week, sum(revenue) AS spend
                                      FROM '{clean}' GROUP BY ALL""",
        "product_week": f"""SELECT stock_code, {week} AS week, sum(quantity) AS units, sum(revenue) AS revenue,
                            count(DISTINCT invoice) AS orders, count(DISTINCT customer_id) AS customers
                            FROM '{clean}' GROUP BY ALL""",
    }
    rows = 0
    with duckdb.connect() as con:
        for name, sql in queries.items():
            out = Path(folder) / f"duck_{name}.parquet"
            con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
            found = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()
            rows += found[0] if found else 0
    _emit(output=rows)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
