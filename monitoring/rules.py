"""Prometheus recording and alert rules of the stack, generated from one place.

The rules read two kinds of series:

- the inference services' own metrics (``zm_requests_total``, ``zm_request_duration_seconds``,
  ``zm_feature_fallbacks_total``, ``zm_model_ready``), scraped from every predictor pod;
- the monitoring DAG's batch numbers (``zm_data_drift_share``, ``zm_model_quality_signal``), pushed
  after every check together with the thresholds the check used (``zm_monitoring_threshold``), so the
  alerts compare against the same numbers as the retrain decision and nothing is hard-coded twice.

Availability follows the multi-window, multi-burn-rate recipe of the Google SRE workbook for a
99.9% objective: page when the error budget burns 14.4 times too fast over both 1 h and 5 min, or 6
times over both 6 h and 30 min.

Alerts carry ``model``, ``severity`` (``page`` or ``ticket``) and ``action``: ``retrain`` alerts go to
the alert receiver, which emits the family's retrain asset event in Airflow; ``notify`` alerts are for
people (retraining does not fix a broken feature store or a slow pod).

    python -m monitoring.rules             # write charts/zero-margin/files/prometheus-rules.yaml
    python -m monitoring.rules --check     # exit 1 when the file differs from this module
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from zmlops.catalog import FAMILIES

__all__ = ["SLO", "LATENCY_P99_SECONDS", "FALLBACK_RATE", "SHADOW_DROP_RATE", "ERROR_RATE", "HIT_RATE_DROP",
           "OUTAGE_FOR", "MONITORING_STALE_HOURS", "ERASURE_WARN_DAYS", "groups", "render", "main"]

RULES_FILE = Path(__file__).resolve().parents[1] / "charts" / "zero-margin" / "files" / "prometheus-rules.yaml"

SLO = 0.999  # availability objective of inference (non-5xx answers / all answers)
BURN_RATES = (  # (burn rate, long window, short window, for, severity)
    (14.4, "1h", "5m", "2m", "page"),
    (6.0, "6h", "30m", "15m", "page"),
)
# server-side p99 per model over 5 min (docs/benchmarks.md: at most 12.5 ms at half the max rate here)
LATENCY_P99_SECONDS = 0.025
ERROR_RATE = 0.01  # 5xx share over 10 min that opens a ticket before the budget alerts page
FALLBACK_RATE = 0.05  # share of answers given without online features
SHADOW_DROP_RATE = 0.05  # share of the copies meant for a shadow version that were dropped (full queue, shadow down)
HIT_RATE_DROP = 0.2  # relative drop of the served recommendation hit rate against its 7-day mean
OUTAGE_FOR = "2m"  # no ready predictor of a model for this long pages (a rollout replaces pods one by one)
MONITORING_STALE_HOURS = 36  # the monitoring DAG runs daily: a check older than this means it stopped
ERASURE_WARN_DAYS = 7  # a ticket this long before an erasure's retrain deadline; a page once it has passed
PREDICT = 'protocol=~"v1|v2"'
WINDOWS = sorted({w for _, long, short, _, _ in BURN_RATES for w in (long, short)} | {"10m"}, key=lambda w: (
    {"m": 60, "h": 3600}[w[-1]] * int(w[:-1])))


def _alert(name: str, expr: str, for_: str, severity: str, action: str, summary: str,
           description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_,
                            "labels": {"severity": severity, "action": action},
                            "annotations": {"summary": summary, "description": description,
                                            "runbook_url": f"docs/runbooks.md#{name.lower()}"}}


def _recording() -> dict[str, Any]:
    rules = []
    for w in WINDOWS:
        rules.append({
            "record": f"zm:request_errors:ratio_rate{w}",
            "expr": (f'sum by (model) (rate(zm_requests_total{{{PREDICT},status=~"5.."}}[{w}]))\n'
                     f"/\nsum by (model) (rate(zm_requests_total{{{PREDICT}}}[{w}]))"),
        })
    rules.append({"record": "zm:requests:rate5m",
                  "expr": f"sum by (model) (rate(zm_requests_total{{{PREDICT}}}[5m]))"})
    rules.append({"record": "zm:request_duration_seconds:p99_5m",
                  "expr": f"histogram_quantile(0.99, sum by (model, le) "
                          f"(rate(zm_request_duration_seconds_bucket{{{PREDICT}}}[5m])))"})
    rules.append({"record": "zm:request_duration_seconds:p50_5m",
                  "expr": f"histogram_quantile(0.50, sum by (model, le) "
                          f"(rate(zm_request_duration_seconds_bucket{{{PREDICT}}}[5m])))"})
    rules.append({"record": "zm:feature_fallbacks:ratio_rate10m",
                  "expr": "sum by (model) (rate(zm_feature_fallbacks_total[10m]))\n/\n"
                          f"sum by (model) (rate(zm_requests_total{{{PREDICT}}}[10m]))"})
    return {"name": "zm-serving-recording", "interval": "30s", "rules": rules}


def _serving_alerts() -> dict[str, Any]:
    budget = round(1 - SLO, 6)
    rules = []
    for rate, long, short, for_, severity in BURN_RATES:
        name = f"ZmAvailabilityBudgetBurn{long.upper()}"
        rules.append(_alert(
            name,
            f"zm:request_errors:ratio_rate{long} > ({rate} * {budget})\n"
            f"and\nzm:request_errors:ratio_rate{short} > ({rate} * {budget})",
            for_, severity, "notify",
            f"{{{{ $labels.model }}}} burns its 99.9% error budget {rate}x too fast ({long} and {short})",
            f"5xx share {{{{ $value | humanizePercentage }}}} over {short}; at this rate the 30-day budget lasts "
            f"{30 / rate:.1f} days. Check the predictor pods and the last deployment (zm rollback).",
        ))
    rules.append(_alert(
        "ZmErrorRateHigh", f"zm:request_errors:ratio_rate10m > {ERROR_RATE}", "10m", "ticket", "notify",
        "{{ $labels.model }} answers more than 1% of requests with a 5xx",
        "5xx share {{ $value | humanizePercentage }} over 10 min.",
    ))
    rules.append(_alert(
        "ZmLatencyP99High", f"zm:request_duration_seconds:p99_5m > {LATENCY_P99_SECONDS}", "10m", "ticket", "notify",
        f"{{{{ $labels.model }}}} p99 latency above {LATENCY_P99_SECONDS * 1000:.0f} ms",
        "Server-side p99 {{ $value | humanizeDuration }} over 5 min (Feast lookup included).",
    ))
    rules.append(_alert(
        "ZmFeatureFallbackRateHigh", f"zm:feature_fallbacks:ratio_rate10m > {FALLBACK_RATE}", "10m", "ticket",
        "notify", "{{ $labels.model }} answers without online features (degraded) too often",
        "{{ $value | humanizePercentage }} of answers over 10 min used the fallback; check the Feast online "
        "store (Redis) and its latency.",
    ))
    rules.append(_alert(
        "ZmShadowCopiesDropped",
        f'sum by (model) (rate(zm_shadow_requests_total{{result="dropped"}}[10m])) / '
        f"sum by (model) (rate(zm_shadow_requests_total[10m])) > {SHADOW_DROP_RATE}", "10m", "ticket", "notify",
        "{{ $labels.model }}: shadow traffic drops its copies",
        "{{ $value | humanizePercentage }} of the copies of production's requests meant for the shadow version over "
        "10 min were dropped (its queue full, or the shadow predictor unreachable): the comparison covers fewer "
        "requests than it says. Production's answers are not affected.",
    ))
    for family in FAMILIES:  # absent(): with every pod gone there is no series left to compare
        rules.append(_alert(
            "ZmPredictorsDown", f'absent(zm_model_ready{{model="{family}"}} == 1)', OUTAGE_FOR, "page", "notify",
            f"{family}: no predictor replica is up and ready",
            "Prometheus scrapes no replica of the model that reports a loaded model: clients get errors or no "
            "answer. Check the InferenceService, its pods and events (kubectl get isvc,pods), and MLflow.",
        ) | {"labels": {"severity": "page", "action": "notify", "model": family}})
    rules.append(_alert(
        "ZmModelNotReady", "max by (model) (zm_model_ready) == 0", "5m", "ticket", "notify",
        "{{ $labels.model }} has no ready replica reporting a loaded model",
        "Every scraped predictor of the model reports zm_model_ready 0 (loading failed or the smoke prediction "
        "failed); see the pod logs.",
    ))
    return {"name": "zm-serving-alerts", "rules": rules}


def _threshold(signal: str) -> str:
    return f'on (model) max by (model) (zm_monitoring_threshold{{signal="{signal}"}})'


def _model_alerts() -> dict[str, Any]:
    signal = 'zm_model_quality_signal{{signal="{}"}}'.format
    rules = [
        _alert(
            "ZmDataDrift", f"max by (model) (zm_data_drift_share)\n>= {_threshold('drift_share')}", "0m",
            "ticket", "notify", "{{ $labels.model }}: the share of drifting columns reached the retrain threshold",
            "{{ $value | humanizePercentage }} of monitored columns drifted (Evidently); the monitoring DAG "
            "has asked for retraining. Reports: the monitoring index.",
        ),
        _alert(
            "ZmForecastAccuracyDrop", f"max by (model) ({signal('units_wape_increase')})\n"
            f"> {_threshold('forecast_wape_increase')}", "0m", "ticket", "notify",
            "{{ $labels.model }}: realised WAPE is more than 5 points above the backtest",
            "Realised units WAPE exceeds the backtest by {{ $value | humanizePercentage }}.",
        ),
        _alert(
            "ZmSegmentShareShift", f"max by (model) ({signal('segment_share_shift')})\n"
            f"> {_threshold('segment_share_shift')}", "0m", "ticket", "notify",
            "{{ $labels.model }}: a segment's share of customers moved beyond the threshold",
            "Largest change of a segment's share {{ $value | humanizePercentage }}.",
        ),
        _alert(
            "ZmServedSegmentShift", f"max by (model) ({signal('served_segment_shift')})\n"
            f"> {_threshold('segment_share_shift')}", "0m", "ticket", "retrain",
            "{{ $labels.model }}: segments served to clients moved away from the training shares",
            "Largest change of a served segment's share {{ $value | humanizePercentage }} (request log).",
        ),
        _alert(
            "ZmRecommendationHitRateDrop",
            f"max by (model) ({signal('recommendation_hit_rate')})\n< {1 - HIT_RATE_DROP} * max by (model) "
            f"(avg_over_time({signal('recommendation_hit_rate')}[7d] offset 1d))",
            "0m", "ticket", "retrain",
            "{{ $labels.model }}: served recommendations are bought less often than in the past week",
            f"Hit rate {{{{ $value | humanizePercentage }}}}, more than {HIT_RATE_DROP:.0%} below its 7-day mean "
            "(request log joined with later purchases).",
        ),
    ]
    rules.append(_alert(
        "ZmMonitoringStale",
        f"time() - max by (model) (zm_monitoring_last_check_timestamp_seconds) > {MONITORING_STALE_HOURS * 3600}",
        "15m", "ticket", "notify",
        f"{{{{ $labels.model }}}}: the monitoring DAG has not checked the model for {MONITORING_STALE_HOURS} hours",
        "Drift, accuracy and hit-rate alerts are blind while the daily check does not run. Check the "
        "zmlops_monitoring DAG in Airflow (paused, failing, or the Pushgateway unreachable).",
    ))
    deadline = "max by (model) (zm_erasure_retrain_deadline_timestamp_seconds)"
    rules.append(_alert(
        "ZmErasureRetrainDue", f"{deadline} - time() < {ERASURE_WARN_DAYS * 86400} > 0", "0m", "ticket", "notify",
        "{{ $labels.model }}: production still holds an erased customer's data; its retrain deadline is near",
        f"The deadline (privacy.erasure_retrain_days after the erasure) is less than {ERASURE_WARN_DAYS} days away "
        "({{ $value | humanizeDuration }}). The monitoring DAG sent the model to training; a successor the gate "
        "refused leaves production on the retired data.",
    ))
    rules.append(_alert(
        "ZmErasureRetrainOverdue", f"time() > {deadline}", "0m", "page", "notify",
        "{{ $labels.model }}: an erasure's retrain deadline has passed and production still holds their data",
        "The model serving production was trained on a data version an erasure retired, and the deadline the "
        "erasure recorded has passed: a legal obligation is being missed.",
    ))
    for family in FAMILIES:
        rules.append(_alert(
            "ZmMonitoringMissing", f'absent(zm_monitoring_last_check_timestamp_seconds{{model="{family}"}})',
            f"{MONITORING_STALE_HOURS}h", "ticket", "notify",
            f"{family}: the monitoring DAG has never reported a check",
            "No monitoring numbers reached the Pushgateway for this model: the zmlops_monitoring DAG is paused, "
            "failing, or cannot push.",
        ) | {"labels": {"severity": "ticket", "action": "notify", "model": family}})
    return {"name": "zm-model-alerts", "interval": "1m", "rules": rules}


def groups() -> dict[str, Any]:
    return {"groups": [_recording(), _serving_alerts(), _model_alerts()]}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    head = "# Generated by `python -m monitoring.rules` from monitoring/rules.py; do not edit.\n"
    return head + yaml.dump(groups(), Dumper=_Dumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the rules file is stale")
    parser.add_argument("--out", type=Path, default=RULES_FILE, help=f"rules file (default {RULES_FILE})")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is stale: run python -m monitoring.rules", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
