"""Run a suite with Great Expectations, keep Data Docs, and explain failures in plain words.

One file-backed GX project lives under ``<reports>/validation``; each run is stored
there and rendered into its Data Docs site. :func:`run_gate` raises
:class:`ValidationFailed` with a short summary naming every failed expectation.

GX validates a table of a DuckDB database (a view over the delivery's Parquet file) through
its SQL datasource, so a check is a query DuckDB answers out of core within the data steps'
memory budget; no table is ever loaded into Python.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Failure", "GateResult", "ValidationFailed", "run_gate"]

_PROJECT = "validation"


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    detail: str

    def line(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
        return f"FAILED {self.expectation}{where}: {self.detail}"


@dataclass(frozen=True)
class GateResult:
    suite: str
    run_name: str
    rows: int
    evaluated: int
    failures: list[Failure]
    docs_index: Path
    notes: tuple[str, ...] = ()  # what the reader found and, for a refusal it can name, the fix

    @property
    def success(self) -> bool:
        return not self.failures

    def summary_lines(self) -> list[str]:
        head = (
            f"{self.suite} [{self.run_name}]: {self.evaluated - len(self.failures)}/{self.evaluated} "
            f"expectations passed on {self.rows:,} rows"
        )
        return [head, *("  " + n for n in self.notes), *("  " + f.line() for f in self.failures)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "run_name": self.run_name,
            "rows": self.rows,
            "success": self.success,
            "evaluated": self.evaluated,
            "failures": [asdict(f) for f in self.failures],
            "docs_index": str(self.docs_index),
            "notes": list(self.notes),
        }


class ValidationFailed(RuntimeError):
    """Data failed the gate; ``str()`` is the readable report."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        super().__init__("\n".join([*result.summary_lines(), f"  Data Docs: {result.docs_index}"]))


def _describe(result: Any, rows: int) -> str:
    info = result.exception_info or {}
    raised = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    if info.get("raised_exception"):
        raised.append(info)
    if raised:
        return f"could not be evaluated ({raised[0].get('exception_message', 'error')})"
    r = result.result or {}
    kwargs = {
        k: v
        for k, v in result.expectation_config.kwargs.items()
        if k in ("min_value", "max_value", "mostly", "regex", "type_list", "value_set", "column_set")
    }
    parts = []
    if result.expectation_config.type == "unexpected_rows_expectation":
        found = int(r.get("observed_value") or 0)
        sample = [row[0] if isinstance(row, (list, tuple)) else next(iter(row.values()), row) if isinstance(row, dict)
                  else row for row in (r.get("details") or {}).get("unexpected_rows") or []][:3]
        parts.append(f"{found:,} rows ({100 * found / max(rows, 1):.2f}%) unexpected")
        if sample:
            parts.append("e.g. " + ", ".join(str(v) for v in sample))
        parts.append(f"expected {result.expectation_config.description}")
        return "; ".join(parts)
    if r.get("unexpected_count") is not None:
        pct = r.get("unexpected_percent") or 0.0
        parts.append(f"{r['unexpected_count']:,} rows ({pct:.2f}%) unexpected")
        sample = r.get("partial_unexpected_list") or []
        if sample:
            parts.append("e.g. " + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in sample[:3]))
    if r.get("observed_value") is not None:
        parts.append(f"observed {r['observed_value']}")
    if r.get("details", {}).get("mismatched"):
        parts.append(f"mismatched {r['details']['mismatched']}")
    if kwargs:
        shown = {k: (v if not isinstance(v, list) or len(v) <= 10 else f"{len(v)} values") for k, v in kwargs.items()}
        parts.append(f"expected {shown}")
    return "; ".join(parts) or "failed"


def _context(root: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # DuckDB is not among GX's named dialects: its type check compares DuckDB's type names (BIGINT, DOUBLE) as
    # SQLAlchemy reports them, and says so on every run
    logging.getLogger("great_expectations.expectations.type_comparison").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    if ctx.variables.analytics_enabled is not False or ctx.variables.progress_bars is None:
        ctx.variables.analytics_enabled = False
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.variables.save()
    return ctx


def _keep_duckdb_rows(connection: Any) -> None:
    if connection.dialect.name == "duckdb":
        connection.connection.dbapi_connection._buffer_pending_result()


def _keep_rows_on_rollback() -> None:
    """GX reads a query's rows after the connection it ran on went back to the pool; DuckDB's SQLAlchemy driver
    drops an unread result when that connection rolls back. Read the rows first (on DuckDB's engines only: GX
    builds its own engine from the datasource, so the listener is on the Engine class)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "rollback", _keep_duckdb_rows):
        event.listen(Engine, "rollback", _keep_duckdb_rows)


def run_gate(
    database: Path,
    table: str,
    expectations: list[Any],
    reports_dir: Path,
    run_name: str,
    engine_config: dict[str, Any],
    raise_on_failure: bool = True,
    notes: tuple[str, ...] = (),
) -> GateResult:
    """Validate ``table`` of the DuckDB ``database`` against ``expectations`` (the suite is named after the table);
    store the result and rebuild Data Docs. ``engine_config``: DuckDB's settings (the memory budget)."""
    import duckdb
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    with duckdb.connect(str(database), read_only=True, config=engine_config) as con:
        counted = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    rows = int(counted[0]) if counted else 0
    root = reports_dir / _PROJECT
    root.mkdir(parents=True, exist_ok=True)
    ctx = _context(root)
    source = ctx.data_sources.add_or_update_sql(
        "deliveries", connection_string=f"duckdb:///{database}",
        kwargs={"connect_args": {"read_only": True, "config": engine_config}})
    asset = next((a for a in source.assets if a.name == table), None) or source.add_table_asset(table, table_name=table)
    batch = next((b for b in asset.batch_definitions if b.name == "whole"), None) or \
        asset.add_batch_definition_whole_table("whole")
    _keep_rows_on_rollback()
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=table, expectations=expectations))
    definition = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=table, data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{table}_gate",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
    )
    try:
        outcome = checkpoint.run(run_id=RunIdentifier(run_name=run_name))
    finally:
        source.get_engine().dispose()  # the database file is the step's; nothing may hold it open after
    results = [r for vr in outcome.run_results.values() for r in vr.results]
    failures = [
        Failure(r.expectation_config.type,
                r.expectation_config.kwargs.get("column") or (r.expectation_config.meta or {}).get("column"),
                _describe(r, rows))
        for r in results
        if not r.success
    ]
    docs = root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    result = GateResult(table, run_name, rows, len(results), failures, docs, notes)
    summary = root / "summaries" / f"{run_name}.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if raise_on_failure and not result.success:
        raise ValidationFailed(result)
    return result


def forget_runs(reports_dir: Path, run_names: list[str]) -> list[Path]:
    """Delete the validation results of these runs (their JSON, their Data Docs pages and our summaries) and build
    the Data Docs again without them: a retired data version's failed-expectation samples can hold customer ids.
    Returns the files deleted."""
    import shutil

    root = reports_dir / _PROJECT
    if not root.exists():
        return []
    doomed = [p for p in root.rglob("*") if p.is_dir() and p.name in run_names]
    doomed += [root / "summaries" / f"{name}.json" for name in run_names]
    files = [f for p in doomed if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if files and (root / "gx").exists():
        _context(root).build_data_docs()
    return files
