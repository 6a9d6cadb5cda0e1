"""Model cards: Markdown generated from a training run's own numbers."""

from __future__ import annotations

from typing import Any

from training.families import Family
from training.trainers import Evaluation

__all__ = ["model_card"]

CITATION = (
    "Chen, D. (2012). Online Retail II [Dataset]. UCI Machine Learning Repository. https://doi.org/10.24432/C5CG6D"
)


def _fmt(v: float) -> str:
    return f"{v:,.4f}" if abs(v) < 100 else f"{v:,.1f}"


def model_card(
    family: Family,
    *,
    version: str,
    run_id: str,
    data: dict[str, Any],
    features: list[str],
    params: dict[str, Any],
    evaluation: Evaluation,
    gate: dict[str, Any],
) -> str:
    """The card of one registered version."""
    lines = [
        f"# Model card: {family.name} v{version}",
        "",
        f"**{family.title}.** {family.purpose}",
        "",
        "## Provenance",
        f"- MLflow run: `{run_id}`; registered model `{family.name}` version {version}",
        f"- Data version: `{data.get('data_version')}` ({data.get('source')}, as of {data.get('as_of')}, "
        f"{data.get('rows'):,} raw rows); transactions sha256 `{str(data.get('sha256'))[:16]}…`",
        f"- Feature cutoff: {data.get('feature_cutoff')}; code `{data.get('code_version')}`; "
        f"environment lock `{data.get('lock_hash')}`",
    ]
    if data.get("source") != "simulator":
        lines.append(f"- Data source citation: {CITATION}")
    lines += [
        "",
        "## Features",
        f"Feast feature service `{family.feature_service}`:",
        "",
        *[f"- `{f}`" for f in features],
        "",
        "## Hyper-parameters",
        "",
        *[f"- `{k}` = `{v}`" for k, v in sorted(params.items())],
        "",
        f"## Metrics against the baseline ({family.baseline_name})",
        "",
        "| metric | model | baseline |",
        "|---|---:|---:|",
    ]
    for k, v in sorted(evaluation.metrics.items()):
        base = evaluation.baseline.get(k)
        lines.append(f"| {k} | {_fmt(v)} | {_fmt(base) if base is not None else '–'} |")
    if evaluation.breakdown:
        keys = sorted({k for row in evaluation.breakdown.values() for k in row})
        lines += ["", "## Breakdown", "", "| group | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for group, row in evaluation.breakdown.items():
            lines.append(f"| {group} | " + " | ".join(_fmt(row[k]) if k in row else "–" for k in keys) + " |")
    for title, section in evaluation.sections.items():
        lines += ["", f"## {title}", "", *section]
    lines += [
        "",
        "## Promotion gate",
        f"- Decision: **{gate.get('decision')}** ({gate.get('reason')})",
        f"- Primary metric `{family.primary_metric}`: challenger {gate.get('challenger')}, baseline "
        f"{gate.get('baseline')}, "
        + (
            f"production v{gate.get('champion_version')} {gate.get('champion')}"
            if gate.get("champion") is not None
            else "no production version before"
        )
        + f"; tolerance {family.tolerance:.0%}",
        "",
        "## Intended use",
        family.purpose,
        "",
        "## Limitations",
        family.limitations,
        "",
    ]
    return "\n".join(lines)
