"""Run a suite with Great Expectations, keep Data Docs, and explain failures in plain words.

One file-backed GX project lives under ``<reports>/validation``; each run is stored
there and rendered into its Data Docs site. :func:`run_gate` raises
:class:`ValidationFailed` with a short summary naming every failed expectation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

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


def _describe(result: Any) -> str:
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
    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    if ctx.variables.analytics_enabled is not False or ctx.variables.progress_bars is None:
        ctx.variables.analytics_enabled = False
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.variables.save()
    return ctx


def run_gate(
    frame: pd.DataFrame,
    suite_name: str,
    expectations: list[Any],
    reports_dir: Path,
    run_name: str,
    raise_on_failure: bool = True,
    notes: tuple[str, ...] = (),
) -> GateResult:
    """Validate ``frame`` against ``expectations``; store the result and rebuild Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    root = reports_dir / _PROJECT
    root.mkdir(parents=True, exist_ok=True)
    ctx = _context(root)
    source = ctx.data_sources.add_or_update_pandas("transactions")
    asset = next((a for a in source.assets if a.name == suite_name), None) or source.add_dataframe_asset(suite_name)
    batch = next(
        (b for b in asset.batch_definitions if b.name == "whole"), None
    ) or asset.add_batch_definition_whole_dataframe("whole")
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{suite_name}_gate",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
    results = [r for vr in outcome.run_results.values() for r in vr.results]
    failures = [
        Failure(r.expectation_config.type, r.expectation_config.kwargs.get("column"), _describe(r))
        for r in results
        if not r.success
    ]
    docs = root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    result = GateResult(suite_name, run_name, len(frame), len(results), failures, docs, notes)
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
