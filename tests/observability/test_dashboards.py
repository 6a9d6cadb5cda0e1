"""Grafana dashboards: regenerated JSON equals the committed JSON, every PromQL expression passes promtool,
and every series a panel reads is one the services export, the monitoring job pushes or a rule records."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from dashboards import generate
from monitoring import rules
from monitoring.loop import write_experiment_metrics, write_metrics
from tests import needs
from zmlops.catalog import FAMILIES
from zmlops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$experiment": ".*"}


def _exported_series(tmp_path: Path) -> set[str]:
    """Series names the predictors export (their metrics module) and the monitoring job writes."""
    from prometheus_client import REGISTRY

    import inference_services.metrics  # noqa: F401 - registers the families (prometheus_client only, no kserve)

    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for family in REGISTRY.collect():  # what /metrics exposes, samples or not
        if family.name.startswith("zm_"):
            names |= {family.name + s for s in suffixes[family.type]}
    result = {"family": "demand-forecast", "drift_share": 0.1, "reasons": [], "columns": {},
              "signals": {"units_wape_increase": 0.0}, "erasure_retrain_by": 1.8e9}  # after an erasure
    text = write_metrics(Settings(home=tmp_path / "zm"), [result]).read_text()
    look = {"z": 1.2, "boundary": 2.5, "rate": {"control": 0.05, "treatment": 0.055},
            "customers": {"control": 100, "treatment": 98}}
    experiment = {"design": {"name": "e", "family": "product-recommendation"}, "decision": "continue",
                  "looks": [look]}
    text += write_experiment_metrics(Settings(home=tmp_path / "zm"), [experiment]).read_text()
    names |= {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    names |= {r["record"] for g in rules.groups()["groups"] for r in g["rules"] if "record" in r}
    return names


def test_committed_json_is_what_the_generator_writes() -> None:
    assert generate.main(["--check"]) == 0, "run: python -m dashboards.generate"


def test_one_block_per_model_with_accuracy_latency_on_top_and_drift_anomalies_below() -> None:
    board = generate.build()["zm-models"]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == list(FAMILIES)
    for family in FAMILIES:
        panels = {p["title"].split(": ")[1]: p["gridPos"] for p in board["panels"]
                  if p["type"] != "row" and p["title"].startswith(family + ":")}
        assert panels["accuracy"]["y"] == panels["latency"]["y"] < panels["data drift"]["y"] == \
            panels["anomaly rate"]["y"]
    assert set(generate.ACCURACY) == set(FAMILIES)


def test_accuracy_signals_are_ones_the_monitoring_job_computes() -> None:
    import importlib
    import inspect

    from zmlops.catalog import ENTRIES

    for family, signals in generate.ACCURACY.items():
        source = inspect.getsource(importlib.import_module(ENTRIES[family].checks.partition(":")[0]))
        for signal, _, _ in signals:
            # literally, or as the f-string the forecast check builds per target (units, revenue)
            assert f'"{signal}"' in source or f'"{signal.replace("_units_", "_{target}_")}"' in source, (
                family, signal)


@needs.binary("promtool")
def test_every_expression_parses_and_reads_known_series(tmp_path: Path) -> None:
    known = _exported_series(tmp_path)
    exprs = [e for board in generate.build().values() for e in generate.expressions(board)]
    assert len(exprs) > 20
    substituted = []
    for expr in exprs:
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        substituted.append(expr)
        for name in re.findall(r"\b(zm[_:][a-zA-Z0-9_:]+)\s*(?:\{|\[|\)|$)", expr):
            assert name in known, f"{name} (in {expr!r}) is not exported, pushed or recorded"
    doc = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(substituted)]}]}
    path = tmp_path / "dashboard-exprs.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promotions_and_rollbacks_are_annotations_read_from_the_audit_trail(tmp_path: Path) -> None:
    """The models dashboard's annotation query, run on a real state database (Grafana's time macro replaced):
    it returns the delivery decisions, with their actor, and nothing else."""
    import sqlalchemy as sa

    from governance import audit
    from zmlops import statedb

    board = generate.build()["zm-models"]
    [annotation] = [a for a in board["annotations"]["list"] if a["name"] == generate.AUDIT_ANNOTATION]
    assert annotation["datasource"]["uid"] == "${statedb}"
    assert "statedb" in {v["name"] for v in board["templating"]["list"]}
    settings = Settings(home=tmp_path / "zm")
    audit.record(settings, "data.created", "data:v2", {"rows": 10})
    audit.record(settings, "model.gated", "model:demand-forecast:v2", {"decision": "staged"})
    audit.record(settings, "rollout.promoted", "model:demand-forecast:v2", {"why": "passed 9 checks"}, who="run-7")
    audit.record(settings, "rollout.rolled_back", "model:product-recommendation:v4", {"why": "p99"}, who="run-8")
    sql = annotation["target"]["rawSql"].replace("$__timeFilter(created_at)", "created_at >= '1970-01-01'")
    with statedb.engine(settings).connect() as conn:
        rows = conn.execute(sa.text(sql)).mappings().all()
    assert [(r["tags"], r["text"]) for r in rows] == [
        ("rollout.promoted", "rollout.promoted model:demand-forecast:v2 by run-7"),
        ("rollout.rolled_back", "rollout.rolled_back model:product-recommendation:v4 by run-8")]
