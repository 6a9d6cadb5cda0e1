"""A check's report for people: the decision in one sentence, then the evidence (docs/monitoring.md).

One page per monitoring check (``reports/monitoring/checks/<check>.html``, linked from the monitoring index), from
the check's summary alone (``CheckResult.to_dict()``): why it retrains or not, the drift of each monitored column
with the method Evidently chose for it, and the family's evidence tables (forecast against actual per category
with the intervals, the categories that moved most; the new products behind a recommendation retrain; each
segment's profile at training and now). A Jinja2 template, ``check_report.html.j2``, beside this module.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from monitoring.checks import Checks
from zmlops import catalog, pages
from zmlops.settings import Settings

__all__ = ["TEMPLATE", "decision", "moved_most", "render"]

TEMPLATE = Path(__file__).with_name("check_report.html.j2")


def decision(settings: Settings, result: dict[str, Any]) -> str:
    """The check's decision in one sentence: each reason to retrain, or the thresholds it stayed within."""
    model = f"{result['family']} v{result['model_version']}"
    reasons = result.get("reasons") or []
    if reasons:
        return f"Retrain {model}: {'; '.join(reasons)}."
    checks: Checks = catalog.load(catalog.entry(result["family"]).checks)
    within = []
    for view in checks.views:
        for signal in view.signals:
            if view.threshold and signal in result.get("signals", {}):
                within.append(f"{signal.replace('_', ' ')} {result['signals'][signal]:.3g} (retrains above "
                              f"{getattr(settings.monitoring, view.threshold):g})")
    drifted = sum(1 for c in result.get("columns", {}).values() if c.get("drifted"))
    columns = len(result.get("columns", {}))
    inputs = f"{drifted} of {columns} monitored inputs drifted" if columns else "no input compared yet"
    return f"No action for {model}: {inputs}" + (f"; {', '.join(within)}" if within else "") + "."


def moved_most(result: dict[str, Any], top: int = 3) -> list[dict[str, Any]]:
    """The categories whose forecast erred most since training: units WAPE and bias, worst first."""
    wape = result.get("breakdown", {}).get("units_wape", {})
    bias = result.get("breakdown", {}).get("units_bias", {})
    ranked = sorted(wape, key=lambda c: -wape[c])[:top]
    return [{"category": c, "wape": wape[c], "bias": bias.get(c, math.nan)} for c in ranked]


def render(settings: Settings, result: dict[str, Any]) -> str:
    """The check's page (HTML)."""
    forecast = result.get("evidence", {}).get("forecast_against_actual", [])
    inside = [r["units_lower"] <= r["units"] <= r["units_upper"] for r in forecast]
    profiles = result.get("evidence", {}).get("segment_profiles", [])
    features = [k[:-5] for k in (profiles[0] if profiles else {}) if k.endswith("_then") and k != "share_then"]
    return pages.render(
        TEMPLATE, {"num": _number}, r=result, decision=decision(settings, result), moved=moved_most(result),
        forecast=forecast, coverage=(sum(inside) / len(inside)) if inside else None, profiles=profiles,
        features=features, new_products=result.get("evidence", {}).get("new_products", []),
        title=catalog.entry(result["family"]).title)


def _number(value: Any, fmt: str = "{:,.0f}") -> str:
    """A number as ``fmt`` shows it, or "-" where there is none (NaN)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
