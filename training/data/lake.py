"""DuckDB, the data steps' engine: a delivery's files are read where they lie, within a memory budget.

A data step (snapshot, gate, cleaning) opens one :func:`connect`ion. DuckDB holds at most
``settings.data.memory_budget_mb`` and spills the rest to the step's own folder, so the size of a
delivery sets a step's time, not its memory. :func:`normalise` writes a delivery as the raw schema's
Parquet (either UCI spelling, the raw dtypes where the values allow them); everything after reads that.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.schema import OLDER_NAMES, RAW_COLUMNS, SPELLINGS

__all__ = ["connect", "engine_config", "quote", "normalise", "write_frames", "table_of", "scratch", "RawFile", "UnreadableInput",
           "ROW"]

ROW = "file_row_number"  # each raw line's position in the delivery (DuckDB's Parquet reader numbers them)
TEXT = ("Invoice", "StockCode", "Description", "Country")
WHOLE = ("Quantity", "Customer ID")  # integers; a float column of whole numbers (pandas' NaN-able ints) is rounded
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"  # how the raw schema spells InvoiceDate


class UnreadableInput(ValueError):
    """The file cannot be read as Online Retail II transactions (the message says why)."""


def engine_config(budget_mb: int, threads: int = 0, spill: Path | None = None) -> dict[str, Any]:
    """DuckDB's settings for one data step: its memory budget, threads and spill folder."""
    config: dict[str, Any] = {"memory_limit": f"{budget_mb}MB", "threads": threads or os.cpu_count() or 1,
                              "preserve_insertion_order": True}
    if spill is not None:
        spill.mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(spill)
    return config


def connect(budget_mb: int, threads: int = 0, spill: Path | None = None,
            database: Path | str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that holds at most ``budget_mb`` and spills to ``spill``."""
    con = duckdb.connect(str(database), config=engine_config(budget_mb, threads, spill))
    con.execute("SET enable_progress_bar = false")  # a session option: no bars in task logs
    return con


def table_of(con: duckdb.DuckDBPyConnection, table: pd.DataFrame | Path, name: str = "lines") -> str:
    """A FROM clause over ``table``, a DataFrame (registered as ``name``) or a Parquet file (read where it lies),
    with each line's position as :data:`ROW`: one query serves a test's frame and a delivery's file alike."""
    if isinstance(table, pd.DataFrame):
        con.register(name, table.assign(**{ROW: np.arange(len(table), dtype="int64")}))
        return name
    return f"read_parquet({literal(str(table))}, file_row_number = true)"


@contextlib.contextmanager
def scratch(budget_mb: int, threads: int = 0) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    """A :func:`connect`\ ion that spills into a temporary folder, and that folder for the caller's own files; both
    gone afterwards (a pod's working directory may be read-only)."""
    with tempfile.TemporaryDirectory(prefix="zm-duckdb-") as tmp, connect(budget_mb, threads, Path(tmp) / "spill") as con:
        yield con, Path(tmp)


def quote(name: str) -> str:
    """An SQL identifier (column names such as ``Customer ID`` have spaces)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class RawFile:
    """A delivery written as the raw schema's Parquet: where, how many lines, what its columns were called."""

    path: Path
    rows: int
    types: dict[str, str]  # column -> DuckDB type, in the file's order
    spelling: str | None  # which UCI spelling the delivery used (None: neither completely)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.types)

    @property
    def missing(self) -> list[str]:
        return [c for c in RAW_COLUMNS if c not in self.columns]


def _source(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """A FROM clause reading ``path`` as it is (CSV text columns kept as text)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return f"read_parquet({literal(str(path))})"
    if suffix == ".csv":
        found = [row[0] for row in con.execute(
            f"DESCRIBE SELECT * FROM read_csv({literal(str(path))}, sample_size=-1)").fetchall()]
        text = {c: "VARCHAR" for c in found if OLDER_NAMES.get(c, c) in (*TEXT, "InvoiceDate")}
        types = "{" + ", ".join(f"{literal(c)}: {literal(t)}" for c, t in text.items()) + "}"
        return f"read_csv({literal(str(path))}, sample_size=-1, types={types})"
    if suffix in (".xlsx", ".xls"):
        import pandas as pd  # a workbook holds at most 1,048,576 lines a sheet: read in memory, once

        sheets = pd.read_excel(path, sheet_name=None, dtype={c: str for c in (*TEXT[:2], "InvoiceNo")})
        frame = pd.concat(sheets.values(), ignore_index=True)
        con.register("workbook", frame)
        return "workbook"
    raise UnreadableInput(f"{path}: unsupported file type {suffix!r} (use .parquet, .csv or .xlsx)")


def _columns(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}


def _spelling(columns: Mapping[str, str]) -> str | None:
    return next((name for name, names in SPELLINGS.items() if set(names) <= set(columns)), None)


def _typed(column_in_file: str, name: str, kind: str) -> str:
    """One column of the raw schema (``name``, read from the file's ``column_in_file``) as the raw dtypes have it,
    where its values allow that."""
    column = quote(column_in_file)
    numeric = kind.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                               "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL"))
    if name in TEXT and kind != "VARCHAR":
        return f"CAST({column} AS VARCHAR)"
    if name == "InvoiceDate" and (kind.startswith("TIMESTAMP") or kind == "DATE"):
        return f"strftime({column}, {literal(TIMESTAMP_FORMAT)})"
    if name in WHOLE and numeric:
        return f"CAST(round({column}) AS BIGINT)"
    return column


def normalise(con: duckdb.DuckDBPyConnection, path: Path, dest: Path) -> RawFile:
    """Write the delivery at ``path`` (Parquet, CSV or a workbook) to ``dest`` as Parquet in the raw schema's
    names and dtypes, line order kept; columns the file lacks stay missing, for the gate to name."""
    source = _source(con, path)
    found = _columns(con, source)
    renames = {old: new for old, new in OLDER_NAMES.items() if old in found and new not in found}
    select = ", ".join(f"{_typed(c, renames.get(c, c), kind)} AS {quote(renames.get(c, c))}" for c, kind in found.items())
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    con.execute(f"COPY (SELECT {select} FROM {source}) TO {literal(str(part))} (FORMAT parquet)")
    part.replace(dest)
    rows = con.execute(f"SELECT count(*) FROM read_parquet({literal(str(dest))})").fetchone()
    types = _columns(con, f"read_parquet({literal(str(dest))})")
    return RawFile(dest, int(rows[0]) if rows else 0, types, _spelling(found))


def write_frames(dest: Path, frames: Iterable[pd.DataFrame]) -> int:
    """Append each frame, as it comes, to one Parquet file (the first frame's schema), written beside ``dest`` and
    moved there once complete, so no reader sees half a table (a failure removes it). A frame is encoded and written on a thread of its own
    while the next one is made (Arrow's encoder releases the GIL), so at most two are held. Returns the rows
    written; a ValueError when ``frames`` yields nothing."""
    from concurrent.futures import Future, ThreadPoolExecutor

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="parquet-writer") as pool:  # leaving it waits for the write
            writing: Future[None] | None = None
            for frame in frames:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                # dictionaries for the columns that repeat (keys, names, timestamps), not for measurements: a float
                # column's dictionary overflows and is thrown away, after the time spent building it
                writer = writer or pq.ParquetWriter(part, table.schema, use_dictionary=[
                    f.name for f in table.schema if not pa.types.is_floating(f.type)])
                if writing is not None:
                    writing.result()  # the previous frame's write, and its error if it failed
                writing = pool.submit(writer.write_table, table.cast(writer.schema))
                rows += len(frame)
            if writing is not None:
                writing.result()
    except BaseException:
        if writer is not None:
            writer.close()
        part.unlink(missing_ok=True)  # half a table is nobody's: a failed write leaves nothing behind
        raise
    if writer is None:
        raise ValueError(f"nothing to write to {dest.name}")
    writer.close()
    part.replace(dest)
    return rows
