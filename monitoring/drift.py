"""Drift and quality checks of the production models, one per family.

Reference: the data version the production version was trained on (its ``data_version``
tag). Current: the newest good data version. Each check builds the same kind of table
from both (the feature code of :mod:`training.features.build`), runs Evidently's data
drift preset on the model's inputs, each column with the method its kind calls for (a
normed Wasserstein distance, PSI or Jensen-Shannon; recorded per column), saves the
Evidently HTML report, and adds family-specific signals (each family's
:class:`monitoring.checks.Checks`, named by its catalog entry).

Above ``monitoring.sample_rows`` rows per side each column is sketched to that many values
(drift scores move by less than 0.01 on these tables; see docs/monitoring.md).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.checks import CheckResult, Checks, Snapshots, column_drift
from zmlops import catalog
from zmlops.settings import Settings

__all__ = ["CheckResult", "assess", "check_family", "column_drift"]


def _clean(settings: Settings, version: str) -> pd.DataFrame:
    from training.data import ingest

    return pd.read_parquet(ingest.clean_file(settings, version))


def _production(settings: Settings, family: str) -> tuple[str, str, Any]:
    """(model version, its training data version, its estimator)."""
    from training import tracking

    version = tracking.alias_version(settings, family, "production")
    if version is None:
        raise LookupError(f"{family} has no production version to monitor")
    tags = tracking.client(settings).get_model_version(family, version).tags
    return version, tags["data_version"], tracking.load_estimator(settings, family, version)


def check_family(settings: Settings, family: str, current_version: str, out_dir: Path) -> CheckResult:
    """Run the family's checks on stored versions; ``out_dir`` receives the Evidently HTML report."""
    model_version, reference_version, estimator = _production(settings, family)
    checks: Checks = catalog.load(catalog.entry(family).checks)
    logged = {m: _logged_metric(settings, family, model_version, m) for m in checks.logged_metrics}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    html = out_dir / f"{family}-{current_version}-{stamp}.html"
    ref_clean, cur_clean = _clean(settings, reference_version), _clean(settings, current_version)
    result = assess(settings, family, ref_clean, cur_clean, estimator, logged, html)
    result.reference_version, result.current_version, result.model_version = (
        reference_version, current_version, model_version)
    from monitoring.requests import request_signals

    since = _last_check(settings, family, model_version)
    result.signals.update(request_signals(settings, family, model_version, estimator, ref_clean, cur_clean, since))
    return result


def assess(settings: Settings, family: str, ref_clean: pd.DataFrame, cur_clean: pd.DataFrame, estimator: Any,
           logged: dict[str, float], html: Path | None) -> CheckResult:
    """The family's checks (its catalog entry's ``checks``) on two clean transaction tables and the production
    estimator (no stores needed); ``logged`` holds the production run's metrics the checks read."""
    checks: Checks = catalog.load(catalog.entry(family).checks)
    result = CheckResult(family, "", "", "")
    newest = pd.Timestamp(cur_clean["invoice_ts"].max()) if len(cur_clean) else None
    week = None if newest is None or pd.isna(newest) else newest.to_pydatetime()
    result.data_until = week.isoformat() if week is not None else None
    snapshots = Snapshots(settings, ref_clean, cur_clean, estimator, logged, html, week)
    checks.assess(snapshots, result)
    result.reports = snapshots.reports
    drifted = [c for c, v in result.columns.items() if v["drifted"]]
    result.drift_share = len(drifted) / max(len(result.columns), 1)
    if result.drift_share >= settings.monitoring.drift_share and drifted:
        result.reasons.append(f"data drift in {', '.join(drifted)} "
                              f"({', '.join(result.columns[c]['method'] for c in drifted)})")
    result.report = html.name if html is not None and html.exists() else None
    return result


def _last_check(settings: Settings, family: str, model_version: str) -> str | None:
    """When this model version was last checked: its requests before that were read then."""
    from monitoring.loop import results

    times = [str(r["checked_at"]) for r in results(settings, family)
             if str(r.get("model_version")) == str(model_version) and r.get("checked_at")]
    return max(times) if times else None


def _logged_metric(settings: Settings, family: str, version: str, name: str) -> float:
    from training import tracking

    c = tracking.client(settings)
    run = c.get_run(c.get_model_version(family, version).run_id)
    return float(run.data.metrics[name])


def load_result(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
