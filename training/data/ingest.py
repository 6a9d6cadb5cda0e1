"""Data in: snapshot a source into the data registry, then gate it.

``snapshot_*`` versions raw bytes (simulator output or a real file, untouched);
:func:`validate_version` fetches a version, runs the raw suite, cleans, runs the clean
suite and records the verdict. Every step after the fetch is DuckDB over Parquet files
(:mod:`training.data.lake`): memory is bounded by ``settings.data.memory_budget_mb``, not by
the size of the delivery. Only a version that passes both becomes ``current``;
a failing one is marked ``bad`` and the previous good version stays current.
Derived tables live in the object store under ``work/<version>/`` (cached in ``ZM_HOME``)
and are rebuilt from the version alone when they are missing; the Great Expectations
project (suites, results, Data Docs) lives under ``reports/validation/``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from governance import audit
from training.data import lake
from training.data.cleaning import CleaningReport
from training.data.cleaning import clean_file as clean_into
from training.data.simulator import TRANSACTIONS_FILE, periods_of, simulate
from training.data.versions import DataRegistry, DataVersion
from training.data.world import SimulationConfig
from zmlops.settings import Settings
from zmlops.stores import object_store

if TYPE_CHECKING:  # Great Expectations is imported where a gate runs, not by every training or monitoring task
    from training.validation import GateResult, SuiteContext

__all__ = ["registry_for", "snapshot_simulated", "snapshot_file", "validate_version", "IngestResult",
           "clean_path", "clean_file", "truth_file", "check_raw", "check_clean", "normalised", "cleaned"]

CLEAN_FILE = "clean.parquet"
REPORT_FILE = "cleaning.json"
VALIDATION = "reports/validation"  # the Great Expectations project's key prefix (training.validation.gate)


def registry_for(settings: Settings) -> DataRegistry:
    return DataRegistry(settings.registry_dir, settings.remote_url, settings.registry_remote)


def _key(version: str, name: str) -> str:
    return f"work/{version}/{name}"


def clean_path(settings: Settings, version: str) -> Path:
    """Where the clean table of ``version`` is cached (it may not be there: see :func:`clean_file`)."""
    return object_store(settings).path(_key(version, CLEAN_FILE))


def clean_file(settings: Settings, version: str) -> Path:
    """A local copy of the clean table of ``version``: from the cache, the object store, or the gate again."""
    found = object_store(settings).download(_key(version, CLEAN_FILE))
    return found if found is not None else validate_version(settings, version).clean


def truth_file(settings: Settings, version: str, name: str = "customers.parquet") -> Path | None:
    """A planted-truth file shipped with a simulated version (None for real data)."""
    registry = registry_for(settings)
    found = registry.get(version)
    if name not in found.files:
        return None
    return registry.fetch(found, settings.work / version / "raw", only=[name]) / name


def snapshot_simulated(settings: Settings, config: SimulationConfig, then: Sequence[tuple[int, str]] = (),
                       progress: Callable[[int, int, int], None] | None = None) -> DataVersion:
    """Simulate and version the result (pending until validated)."""
    with tempfile.TemporaryDirectory(prefix="zm-sim-") as tmp:
        result = simulate(config, Path(tmp), then, progress)
        periods = periods_of(config, then)
        meta = {
            "source": "simulator",
            "as_of": periods[-1].end.isoformat(),
            "rows": result.rows,
            "simulation": config.to_dict(),
            "periods": [{"weeks": p.weeks, "scenario": p.scenario} for p in periods],
        }
        return _created(settings, registry_for(settings).add_snapshot(Path(tmp), meta, TRANSACTIONS_FILE))


def snapshot_file(settings: Settings, path: Path, as_of: dt.date | None = None) -> DataVersion:
    """Version a real Online Retail II file as-is; ``as_of`` defaults to the day of its newest invoice."""
    with tempfile.TemporaryDirectory(prefix="zm-read-") as read, tempfile.TemporaryDirectory(prefix="zm-file-") as tmp:
        raw = normalised(settings, path, Path(read))  # to count and date it; the version holds the file as it is
        if as_of is None:
            as_of = _newest_day(settings, raw, Path(read))
        shutil.copy2(path, Path(tmp) / path.name)
        meta = {"source": f"file:{path.name}", "as_of": as_of.isoformat(), "rows": raw.rows}
        return _created(settings, registry_for(settings).add_snapshot(Path(tmp), meta, path.name))


def _connect(settings: Settings, folder: Path) -> duckdb.DuckDBPyConnection:
    return lake.connect(settings.data.memory_budget_mb, settings.data.threads, folder / "spill")


def normalised(settings: Settings, path: Path, folder: Path) -> lake.RawFile:
    """The delivery at ``path`` as the raw schema's Parquet in ``folder`` (see :func:`training.data.lake.normalise`)."""
    with _connect(settings, folder) as con:
        return lake.normalise(con, path, folder / "raw.parquet")


def _newest_day(settings: Settings, raw: lake.RawFile, folder: Path) -> dt.date:
    with _connect(settings, folder) as con:
        newest = con.execute(f"SELECT max({_invoice_date()}) FROM read_parquet({lake.literal(str(raw.path))})"
                             ).fetchone()
    if newest is None or newest[0] is None:
        raise lake.UnreadableInput(f"{raw.path.name}: no readable InvoiceDate to date the delivery by; pass as_of")
    return dt.date.fromisoformat(str(newest[0])[:10])


def cleaned(settings: Settings, raw: lake.RawFile, dest: Path) -> CleaningReport:
    """Clean a normalised delivery into ``dest`` within the data steps' memory budget."""
    with _connect(settings, dest.parent) as con:
        return clean_into(con, raw.path, dest)


def _created(settings: Settings, version: DataVersion) -> DataVersion:
    audit.record(settings, "data.created", f"data:{version.name}",
                 {"source": version.meta.get("source"), "as_of": version.meta.get("as_of"),
                  "rows": version.meta.get("rows"), "files": version.files})
    return version


def _invoice_date() -> str:
    """InvoiceDate as the raw suite sees it: parsed from the raw schema's text, null where it does not parse."""
    return f'try_strptime(CAST("InvoiceDate" AS VARCHAR), {lake.literal(lake.TIMESTAMP_FORMAT)})'


def _gate(settings: Settings, table: str, view: str, expectations: list[Any], run_name: str,
          notes: tuple[str, ...] = ()) -> GateResult:
    """Run a suite on ``view`` (SQL over Parquet files), named ``table`` in a DuckDB database of its own."""
    settings.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zm-gate-", dir=settings.work) as tmp:
        database = Path(tmp) / f"{table}.duckdb"
        with duckdb.connect(str(database)) as con:
            con.execute(f'CREATE VIEW "{table}" AS {view}')
        config = lake.engine_config(settings.data.memory_budget_mb, settings.data.threads, Path(tmp) / "spill")
        from training.validation import run_gate

        return run_gate(database, table, expectations, settings.reports, run_name, config, notes=notes)


def check_raw(settings: Settings, raw: lake.RawFile, ctx: SuiteContext, run_name: str) -> GateResult:
    """The raw suite on a normalised delivery (raises :class:`ValidationFailed`); its report says which UCI
    spelling the file used, or which columns it lacks and the two spellings the adapter reads."""
    dates = f' REPLACE ({_invoice_date()} AS "InvoiceDate")' if "InvoiceDate" in raw.columns else ""
    view = f"SELECT *{dates} FROM read_parquet({lake.literal(str(raw.path))})"
    from training.validation import raw_suite

    return _gate(settings, "raw_transactions", view, raw_suite(ctx, raw.types),
                 f"{run_name}-raw", notes=_column_notes(raw))


def _column_notes(raw: lake.RawFile) -> tuple[str, ...]:
    from training.data.schema import OLDER_NAMES, SPELLINGS

    if raw.spelling == "UCI Online Retail":
        return (f"columns: {raw.spelling}'s spelling ({', '.join(OLDER_NAMES)}), read as Online Retail II's",)
    if raw.spelling is not None:
        return (f"columns: {raw.spelling}'s spelling",)
    if not raw.missing:
        return ()
    known = "; ".join(f"{name}: {', '.join(names)}" for name, names in SPELLINGS.items())
    return (f"fix: the file lacks {', '.join(raw.missing)}. The adapter reads either spelling ({known}); rename "
            "the file's columns to one of them.",)


def check_clean(settings: Settings, clean: Path, ctx: SuiteContext, run_name: str) -> GateResult:
    """The clean suite on the clean table's Parquet file (raises :class:`ValidationFailed`)."""
    view = f"SELECT * FROM read_parquet({lake.literal(str(clean))})"
    from training.validation import clean_suite

    return _gate(settings, "clean_transactions", view, clean_suite(ctx), f"{run_name}-clean")


@dataclass(frozen=True)
class IngestResult:
    version: DataVersion
    clean: Path
    cleaning: CleaningReport | None
    gates: list[GateResult]

    def summary_lines(self) -> list[str]:
        out = [line for g in self.gates for line in g.summary_lines()]
        if self.cleaning:
            out += self.cleaning.lines()
        return out


def _previous_good(registry: DataRegistry, version: DataVersion) -> DataVersion | None:
    good = [v for v in registry.versions() if v.status == "good" and v.number < version.number]
    return good[-1] if good else None


def validate_version(settings: Settings, name: str, force: bool = False) -> IngestResult:
    """Gate version ``name``; raise :class:`ValidationFailed` (version marked bad) on failure."""
    registry = registry_for(settings)
    store = object_store(settings)
    version = registry.get(name)
    out_dir = settings.work / version.name
    if version.status == "good" and not force:
        cached = store.download(_key(name, CLEAN_FILE))
        if cached is not None:
            return IngestResult(version, cached, None, [])
    from training.validation import SuiteContext, ValidationFailed  # Great Expectations: 2.3 s, paid only to gate
    raw_dir = registry.fetch(version, out_dir / "raw")
    raw = normalised(settings, raw_dir / version.transactions_file, out_dir / "read")
    previous = _previous_good(registry, version)
    as_of = dt.date.fromisoformat(version.meta["as_of"])
    gates: list[GateResult] = []
    store.download_tree(VALIDATION)  # earlier runs' results, so Data Docs list every delivery
    try:
        ctx = SuiteContext(settings.validation, as_of, previous.meta.get("rows") if previous else None)
        gates.append(check_raw(settings, raw, ctx, name))
        candidate = out_dir / "read" / CLEAN_FILE
        report = cleaned(settings, raw, candidate)
        prev_clean = _clean_rows(settings, previous)
        ctx = SuiteContext(settings.validation, as_of, prev_clean)
        gates.append(check_clean(settings, candidate, ctx, name))
    except ValidationFailed as failed:
        shutil.rmtree(out_dir / "read", ignore_errors=True)
        store.upload_tree(VALIDATION)
        registry.mark(name, ok=False)
        audit.record(settings, "data.refused", f"data:{name}", {"why": str(failed).splitlines()[0],
                                                                 "report": str(failed)[:4000]})
        raise
    store.upload_tree(VALIDATION)
    clean_file = clean_path(settings, name)
    clean_file.parent.mkdir(parents=True, exist_ok=True)
    candidate.replace(clean_file)
    shutil.rmtree(out_dir / "read", ignore_errors=True)  # the normalised delivery: the version's bytes are in DVC
    store.upload(_key(name, CLEAN_FILE))
    store.put(_key(name, REPORT_FILE), json.dumps(report.to_dict(), indent=2).encode())
    version = registry.mark(name, ok=True)
    audit.record(settings, "data.validated", f"data:{name}", {"why": "passed the raw and clean suites",
                                                              "clean_rows": report.rows_out,
                                                              "dropped": report.to_dict()})
    return IngestResult(version, clean_file, report, gates)


def _clean_rows(settings: Settings, version: DataVersion | None) -> int | None:
    if version is None:
        return None
    report = object_store(settings).get(_key(version.name, REPORT_FILE))
    return int(json.loads(report)["rows_out"]) if report is not None else None


def forget_validations(settings: Settings, version: str) -> int:
    """Delete ``version``'s Great Expectations results and Data Docs pages from the object store (and its cache),
    the Data Docs index built again without them; returns how many files went."""
    from training.validation.gate import forget_runs

    store = object_store(settings)
    store.download_tree(VALIDATION)
    gone = forget_runs(settings.reports, [f"{version}-raw", f"{version}-clean"])
    for path in gone:
        store.delete(str(path.relative_to(store.cache)))
    store.upload_tree(VALIDATION)
    return len(gone)
