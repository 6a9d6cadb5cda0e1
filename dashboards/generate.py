"""Grafana dashboards as code (grafana-foundation-sdk, Grafana 11 flavour).

Two dashboards, written as JSON into the chart (charts/zero-margin/files/dashboards/), which ships them
as ConfigMaps for the Grafana sidecar:

- ``zm-models``: one loop over the model families. Per model, the top row shows accuracy and latency
  over time, the bottom row data drift and the anomaly rate (invalid requests and degraded answers).
- ``zm-serving``: serving health (requests/s, errors, p50/p99, cache hit ratio, feature fallbacks, rows per call,
  error budget) and canary versus stable (the same numbers by served model version).

Every query reads series the services export (inference_services/metrics.py), the monitoring job
pushes (monitoring/loop.py) or the rules record (monitoring/rules.py); tests/observability checks
each expression with promtool and the metric names against those modules.

    python -m dashboards.generate            # write the JSON
    python -m dashboards.generate --check    # exit 1 when the JSON differs (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

from zmlops.catalog import ENTRIES, FAMILIES

__all__ = ["ACCURACY", "AUDIT_ANNOTATION", "audit_sql", "build", "expressions", "main"]

OUT = Path(__file__).resolve().parents[1] / "charts" / "zero-margin" / "files" / "dashboards"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The audit trail (governance/audit.py) in the state database: promotions and rollbacks as annotations.
AUDIT_DS = DataSourceRef(type_val="grafana-postgresql-datasource", uid="${statedb}")
AUDIT_ANNOTATION = "promotions and rollbacks (audit trail)"
DELIVERY_ACTIONS = ("deploy.production_moved", "rollout.promoted", "rollout.rolled_back", "rollout.not_ready",
                    "registry.reconciled")
PREDICT = 'protocol=~"v1|v2"'

# What "accuracy" means per family, from the monitoring job's signals: (signal, legend, unit).
ACCURACY: dict[str, list[tuple[str, str, str]]] = {name: list(e.panels) for name, e in ENTRIES.items()}


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def _series(title: str, unit: str, queries: list[tuple[str, str]], description: str = "",
            width: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).height(8).span(width).min(0)
    if description:
        panel = panel.description(description)
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(title: str, unit: str, expr: str, description: str) -> stat.Panel:
    return (stat.Panel().title(title).unit(unit).datasource(DS).height(4).span(6).description(description)
            .with_target(_query(expr, "", "A")))


def _datasource() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def audit_sql() -> str:
    """The annotations' query: delivery decisions of every model from ``zm_audit`` (Grafana's time macro)."""
    actions = ", ".join(f"'{a}'" for a in DELIVERY_ACTIONS)
    return ("SELECT created_at AS time, action || ' ' || subject || ' by ' || actor AS text, action AS tags "
            f"FROM zm_audit WHERE action IN ({actions}) AND subject LIKE 'model:%' "
            "AND $__timeFilter(created_at) ORDER BY seq")


def _audit_annotation() -> dash.AnnotationQuery:
    return dash.AnnotationQuery().name(AUDIT_ANNOTATION).datasource(AUDIT_DS).enable(True).icon_color("purple")


def models_dashboard() -> dash.Dashboard:
    board = (dash.Dashboard("Zero Margin: models").uid("zm-models").tags(["zero-margin", "mlops"])
             .description("Per model: accuracy and latency over time (top), data drift and anomaly rate (bottom).")
             .time("now-30d", "now").refresh("1m").tooltip(DashboardCursorSync.CROSSHAIR)
             .with_variable(_datasource())
             .with_variable(dash.DatasourceVariable("statedb").label("State database (audit trail)")
                            .type("grafana-postgresql-datasource"))
             .annotation(_audit_annotation()))
    for family in FAMILIES:
        m = f'model="{family}"'
        board = board.with_row(dash.Row(family))
        board = board.with_panel(_series(
            f"{family}: accuracy", "percentunit",
            [(f'max by (signal) (zm_model_quality_signal{{{m},signal="{s}"}})', legend)
             for s, legend, _ in ACCURACY[family]],
            "From the monitoring DAG after each check (Pushgateway).",
        ))
        board = board.with_panel(_series(
            f"{family}: latency", "s",
            [(f'zm:request_duration_seconds:p50_5m{{{m}}}', "p50"),
             (f'zm:request_duration_seconds:p99_5m{{{m}}}', "p99")],
            "Server-side latency of predictions (Feast lookup included).",
        ))
        board = board.with_panel(_series(
            f"{family}: data drift", "percentunit",
            [(f"max(zm_data_drift_share{{{m}}})", "share of drifting columns"),
             (f'max(zm_monitoring_threshold{{{m},signal="drift_share"}})', "retrain threshold")],
            "Evidently drift tests of the monitoring DAG: share of monitored columns that drifted.",
        ))
        board = board.with_panel(_series(
            f"{family}: anomaly rate", "percentunit",
            [(f'sum(rate(zm_requests_total{{{m},{PREDICT},status=~"4.."}}[$__rate_interval]))\n/\n'
              f'sum(rate(zm_requests_total{{{m},{PREDICT}}}[$__rate_interval]))', "invalid requests (4xx)"),
             (f"zm:feature_fallbacks:ratio_rate10m{{{m}}}", "degraded answers (feature fallback)")],
            "Requests refused as invalid and answers given without online features.",
        ))
    return board


def experiments_dashboard() -> dash.Dashboard:
    """A/B tests: each running experiment's daily look (the monitoring DAG's experiments task, Pushgateway)."""
    e = 'experiment=~"$experiment"'
    return (dash.Dashboard("Zero Margin: experiments").uid("zm-experiments").tags(["zero-margin", "mlops"])
            .description("A/B tests of model versions (docs/experiments.md): click-through per variant, the z "
                         "statistic against its boundary, customers per variant, the decision.")
            .time("now-30d", "now").refresh("5m").with_variable(_datasource())
            .with_variable(dash.QueryVariable("experiment").label("Experiment").datasource(DS)
                           .query("label_values(zm_experiment_decision, experiment)").multi(True).include_all(True))
            .with_panel(_series("click-through per customer", "percentunit",
                                [(f"zm_experiment_click_through{{{e}}}", "{{experiment}} {{variant}}")],
                                "The share of each variant's customers who clicked, at each day's look."))
            .with_panel(_series("z against the boundary", "none",
                                [(f"zm_experiment_z{{{e}}}", "{{experiment}} z"),
                                 (f"zm_experiment_boundary{{{e}}}", "{{experiment}} boundary"),
                                 (f"-zm_experiment_boundary{{{e}}}", "{{experiment}} -boundary")],
                                "Above the boundary: ship; below minus the boundary: stop (O'Brien-Fleming "
                                "spending: strict early, near 1.96 at the last look)."))
            .with_panel(_series("customers per variant", "short",
                                [(f"zm_experiment_customers{{{e}}}", "{{experiment}} {{variant}}")],
                                "Counted once, in the variant of their first answer; a skew is a sample-ratio "
                                "mismatch (the look stops the experiment)."))
            .with_panel(_series("decision", "none", [(f"zm_experiment_decision{{{e}}}", "{{experiment}}")],
                                "1 ship, -1 stop, 0 continue.")))


def serving_dashboard() -> dash.Dashboard:
    by_version = "model, version"
    board = (dash.Dashboard("Zero Margin: serving").uid("zm-serving").tags(["zero-margin", "serving"])
             .description("Serving health of the KServe predictors; canary versus stable by model version.")
             .time("now-6h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR)
             .with_variable(_datasource()))
    board = board.with_row(dash.Row("Service level"))
    board = board.with_panel(_stat(
        "Availability, 30 days", "percentunit",
        f'1 - (sum(increase(zm_requests_total{{{PREDICT},status=~"5.."}}[30d]))\n'
        f"/ sum(increase(zm_requests_total{{{PREDICT}}}[30d])))",
        "Share of prediction requests answered without a 5xx (objective 99.9%).",
    ))
    board = board.with_panel(_stat(
        "Error budget left, 30 days", "percentunit",
        f'1 - (sum(increase(zm_requests_total{{{PREDICT},status=~"5.."}}[30d]))\n'
        f"/ sum(increase(zm_requests_total{{{PREDICT}}}[30d]))) / 0.001",
        "1 = untouched, 0 = spent (99.9% objective).",
    ))
    board = board.with_panel(_stat(
        "Ready models", "none", "sum(max by (model) (zm_model_ready))",
        "Families with at least one predictor that loaded its version and passed the smoke prediction.",
    ))
    board = board.with_panel(_stat(
        "Requests/s", "reqps", "sum(zm:requests:rate5m)", "Prediction requests per second over 5 min.",
    ))
    board = board.with_row(dash.Row("Traffic and errors"))
    board = board.with_panel(_series(
        "Requests/s by model", "reqps", [("zm:requests:rate5m", "{{model}}")], width=8))
    board = board.with_panel(_series(
        "5xx share by model", "percentunit", [("zm:request_errors:ratio_rate5m", "{{model}}")], width=8))
    board = board.with_panel(_series(
        "Answers by status", "reqps",
        [(f"sum by (status) (rate(zm_requests_total{{{PREDICT}}}[$__rate_interval]))", "{{status}}")], width=8))
    board = board.with_row(dash.Row("Latency, cache, fallbacks, batching"))
    board = board.with_panel(_series(
        "p50 and p99 by model", "s",
        [("zm:request_duration_seconds:p50_5m", "p50 {{model}}"),
         ("zm:request_duration_seconds:p99_5m", "p99 {{model}}")], width=6))
    board = board.with_panel(_series(
        "Cache hit ratios", "percentunit",
        [('sum by (model) (rate(zm_cache_requests_total{result="hit"}[$__rate_interval]))\n/\n'
          "sum by (model) (rate(zm_cache_requests_total[$__rate_interval]))", "answers {{model}}"),
         ('sum by (model) (rate(zm_feature_cache_requests_total{result="hit"}[$__rate_interval]))\n/\n'
          "sum by (model) (rate(zm_feature_cache_requests_total[$__rate_interval]))", "online features {{model}}")],
        width=6, description="Prediction cache (forecasts, recommendations) and online-feature cache (segmentation; "
        "dropped when the features are materialized again)."))
    board = board.with_panel(_series(
        "Feature fallbacks/s by reason", "reqps",
        [("sum by (model, reason) (rate(zm_feature_fallbacks_total[$__rate_interval]))", "{{model}} {{reason}}")],
        width=6))
    board = board.with_panel(_series(
        "Rows per model call", "short",
        [("sum by (model) (rate(zm_batch_rows_sum[$__rate_interval]))\n/\n"
          "sum by (model) (rate(zm_batch_rows_count[$__rate_interval]))", "mean {{model}}"),
         ("histogram_quantile(0.9, sum by (model, le) (rate(zm_batch_rows_bucket[$__rate_interval])))",
          "p90 {{model}}")], width=6,
        description="Continuous batching: rows of concurrent requests answered in one model call (1 when idle)."))
    board = board.with_row(dash.Row("Canary versus stable (by served version)"))
    board = board.with_panel(_series(
        "Requests/s by version", "reqps",
        [(f"sum by ({by_version}) (rate(zm_requests_total{{{PREDICT}}}[$__rate_interval]))",
          "{{model}} v{{version}}")], width=8))
    board = board.with_panel(_series(
        "5xx share by version", "percentunit",
        [(f'sum by ({by_version}) (rate(zm_requests_total{{{PREDICT},status=~"5.."}}[$__rate_interval]))\n/\n'
          f"sum by ({by_version}) (rate(zm_requests_total{{{PREDICT}}}[$__rate_interval]))",
          "{{model}} v{{version}}")], width=8))
    board = board.with_panel(_series(
        "p99 by version", "s",
        [(f"histogram_quantile(0.99, sum by ({by_version}, le) "
          f"(rate(zm_request_duration_seconds_bucket{{{PREDICT}}}[$__rate_interval])))", "{{model}} v{{version}}")],
        width=8))
    return board


def build() -> dict[str, dict[str, Any]]:
    """Dashboard JSON by uid."""
    out = {}
    for board in (models_dashboard(), serving_dashboard(), experiments_dashboard()):
        model = board.build()
        built = json.loads(json.dumps(model, cls=JSONEncoder))
        for annotation in built.get("annotations", {}).get("list", []):
            if annotation.get("name") == AUDIT_ANNOTATION:  # the SDK's annotation target has no SQL field yet
                annotation["target"] = {"refId": "Anno", "format": "table", "rawQuery": True, "rawSql": audit_sql()}
        out[str(model.uid)] = built
    return out


def expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard (panel targets)."""
    return [t["expr"] for p in board.get("panels", []) for t in p.get("targets", []) if "expr" in t]


def _text(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the committed JSON differs")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    boards = build()
    stale = []
    for uid, board in boards.items():
        path = args.out / f"{uid}.json"
        if args.check:
            if not path.exists() or path.read_text() != _text(board):
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_text(board))
            print(f"wrote {path}")
    extra = {p for p in args.out.glob("*.json") if p.stem not in boards}
    if args.check and (stale or extra):
        print(f"stale dashboards: {sorted(map(str, stale + sorted(extra)))}: run python -m dashboards.generate",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
