"""Results of the monitoring checks: reports index, Prometheus metrics, incidents (re-entry once).

- Every check writes its Evidently HTML report and a JSON summary under the object store's
  ``reports/monitoring/`` (``ZM_HOME/reports/monitoring/`` locally); ``index.html`` there lists
  every report, newest first, so an analyst opens one file.
- The numbers are written in Prometheus' text format to ``reports/monitoring/metrics.prom`` and
  pushed to the Pushgateway when one is set (the drift alert rules read them).
- An incident (family, production version, data version) re-enters training at most once:
  :func:`claim_incident` inserts its key into the state database and says whether this
  caller is the first (the Alertmanager receiver claims through the same table).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zmlops import statedb
from zmlops.catalog import FAMILIES
from zmlops.settings import MonitoringSettings, Settings
from zmlops.stores import object_store

__all__ = ["check_name", "monitoring_dir", "save_result", "results", "write_index", "write_metrics",
           "write_experiment_metrics", "claim_incident", "incidents", "reconcile_pushgateway", "prune_reports"]

PREFIX = "reports/monitoring"
CHECKS = "checks"  # each check's page (monitoring.report), under PREFIX
INDEX = Path(__file__).with_name("index.html.j2")


def monitoring_dir(settings: Settings) -> Path:
    """The local folder the checks write their reports into before :func:`save_result` stores them."""
    folder = object_store(settings).path(PREFIX)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_name(result: dict[str, Any]) -> str:
    """A check's name, FAMILY-VERSION-STAMP (its Evidently report's): its summary, page and snapshots are named so."""
    return str(result.get("report") or f"{result['family']}-{result['current_version']}").removesuffix(".html")


def save_result(settings: Settings, result: dict[str, Any]) -> str:
    """Store one check's summary (and its Evidently report); returns the summary's key."""
    store = object_store(settings)
    name = check_name(result)
    if result.get("report"):
        store.upload(f"{PREFIX}/{result['report']}")
    key = f"{PREFIX}/{name}.json"
    stamped = {**result, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.put(key, json.dumps(stamped, indent=2).encode())
    from monitoring.report import render

    store.put(f"{PREFIX}/{CHECKS}/{name}.html", render(settings, stamped).encode())  # the page for people
    return key


def results(settings: Settings, family: str | None = None) -> list[dict[str, Any]]:
    """Every stored check summary (of one family, or all), newest first."""
    store = object_store(settings)
    keys = [k for k in store.keys(PREFIX) if k.endswith(".json") and "/" not in k[len(PREFIX) + 1:]
            and (family is None or k[len(PREFIX) + 1:].startswith(f"{family}-"))]
    found = [json.loads(data) for data in store.get_many(keys).values()]
    return sorted(found, key=lambda r: str(r.get("checked_at", "")), reverse=True)


_STAMPED = re.compile(r"^(?P<name>.+)-(?P<stamp>\d{8}T\d{6})\.(?:html|json)$")  # FAMILY-VERSION-STAMP


def prune_reports(settings: Settings, today: dt.date | None = None) -> list[str]:
    """Delete the check reports (Evidently HTML, its snapshots for the workspace, summaries) older than
    ``monitoring.report_retention_days``; each family's newest check stays whatever its age (the next check
    compares with it). Returns the keys."""
    store = object_store(settings)
    cutoff = ((today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=settings.monitoring.report_retention_days))
    stamped = [(next((f for f in FAMILIES if m["name"].startswith(f"{f}-")), m["name"]), m["stamp"], key)
               for key in store.keys(PREFIX) if (m := _STAMPED.match(key.rsplit("/", 1)[-1]))]
    newest: dict[str, str] = {}
    for family, stamp, _ in stamped:
        newest[family] = max(newest.get(family, ""), stamp)
    gone = [key for family, stamp, key in stamped
            if stamp < cutoff.strftime("%Y%m%dT000000") and stamp != newest[family]]
    for key in gone:
        store.delete(key)
    return sorted(gone)


def deliveries(settings: Settings) -> list[dict[str, Any]]:
    """Every delivery's data-gate summary (``training.validation.gate``; the object store's
    ``reports/validation/summaries/``): refused first, then the newest first."""
    from training.data.ingest import VALIDATION

    store = object_store(settings)
    keys = [k for k in store.keys(f"{VALIDATION}/summaries") if k.endswith(".json")]
    found = [json.loads(data) for data in store.get_many(keys).values()]
    found.sort(key=lambda d: str(d.get("run_name", "")), reverse=True)
    return sorted(found, key=lambda d: bool(d.get("success")))


def write_index(settings: Settings) -> Path:
    """``index.html``: every check, newest first (its page and its Evidently report), then every delivery's data
    gate, refused first, with the Data Docs (a Jinja2 template, ``index.html.j2``)."""
    from zmlops import pages

    checks = []
    for r in results(settings):
        checks.append({**r, "checked_at": r.get("checked_at", ""), "page": f"{CHECKS}/{check_name(r)}.html",
                       "report": r.get("report"),
                       "verdict": "retrain: " + "; ".join(r["reasons"]) if r.get("reasons") else "no action",
                       "signals": ", ".join(f"{k} {v:.3f}" for k, v in r.get("signals", {}).items())})
    page = pages.render(
        INDEX, checks=checks, deliveries=deliveries(settings),
        data_docs="../validation/gx/uncommitted/data_docs/local_site/index.html")
    return object_store(settings).put(f"{PREFIX}/index.html", page.encode())


PUSH_JOB = "zm-monitoring"


def write_metrics(settings: Settings, results: list[dict[str, Any]]) -> Path:
    """The latest numbers per model in Prometheus' text format, and to the Pushgateway when one is set.

    The thresholds the check used go along (``zm_monitoring_threshold``): the alert rules compare
    against them, so a threshold lives in settings only (monitoring/rules.py).
    """
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

    registry = CollectorRegistry()
    share = Gauge("zm_data_drift_share", "Share of monitored columns with drift.", ["model"], registry=registry)
    score = Gauge("zm_data_drift_score", "Drift score per column (method in the label).",
                  ["model", "column", "method"], registry=registry)
    signal = Gauge("zm_model_quality_signal", "Family-specific monitoring numbers.", ["model", "signal"],
                   registry=registry)
    decision = Gauge("zm_retrain_recommended", "1 when the last check asked for retraining.", ["model"],
                     registry=registry)
    threshold = Gauge("zm_monitoring_threshold", "Thresholds of the retrain decisions, from settings.",
                      ["model", "signal"], registry=registry)
    checked = Gauge("zm_monitoring_last_check_timestamp_seconds", "When the model was last checked.", ["model"],
                    registry=registry)
    deadline = Gauge("zm_erasure_retrain_deadline_timestamp_seconds", "When the model, trained on data an erasure "
                     "retired, must be retrained without it (privacy.erasure_retrain_days).", ["model"],
                     registry=registry)
    m = settings.monitoring
    limits = {"drift_share": m.drift_share, "segment_share_shift": m.segment_share_shift,
              "new_product_share": m.new_product_share, "forecast_wape_increase": m.forecast_wape_increase}
    for r in results:
        share.labels(r["family"]).set(r["drift_share"])
        decision.labels(r["family"]).set(1.0 if r.get("reasons") else 0.0)
        for column, v in r.get("columns", {}).items():
            score.labels(r["family"], column, v["method"]).set(v["score"])
        for name, value in r.get("signals", {}).items():
            signal.labels(r["family"], name).set(value)
        for name, value in limits.items():
            threshold.labels(r["family"], name).set(value)
        checked.labels(r["family"]).set_to_current_time()
        if r.get("erasure_retrain_by") is not None:
            deadline.labels(r["family"]).set(r["erasure_retrain_by"])
    path = monitoring_dir(settings) / "metrics.prom"
    write_to_textfile(str(path), registry)
    object_store(settings).upload(f"{PREFIX}/metrics.prom")
    if m.pushgateway_url:
        push_to_gateway(m.pushgateway_url, job=PUSH_JOB, registry=registry, timeout=10, handler=_push_handler(m))
    return path


def write_experiment_metrics(settings: Settings, analyses: list[dict[str, Any]]) -> Path:
    """The running A/B tests' latest looks (:meth:`delivery.experiments.Analysis.to_dict`) as metrics:
    ``reports/monitoring/experiments.prom`` and, when one is set, the Pushgateway (its own group, so the checks'
    push does not replace it)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

    registry = CollectorRegistry()
    labels = ["experiment", "model"]
    rate = Gauge("zm_experiment_click_through", "Click-through per customer of each variant at the latest look.",
                 [*labels, "variant"], registry=registry)
    customers = Gauge("zm_experiment_customers", "Customers counted per variant at the latest look.",
                      [*labels, "variant"], registry=registry)
    z = Gauge("zm_experiment_z", "z of treatment minus control at the latest look.", labels, registry=registry)
    boundary = Gauge("zm_experiment_boundary", "The |z| that stops the experiment at the latest look.", labels,
                     registry=registry)
    decided = Gauge("zm_experiment_decision", "1 ship, -1 stop, 0 continue.", labels, registry=registry)
    for a in analyses:
        key = (a["design"]["name"], a["design"]["family"])
        decided.labels(*key).set({"ship": 1.0, "stop": -1.0}.get(a["decision"], 0.0))
        if not a["looks"]:
            continue
        last = a["looks"][-1]
        z.labels(*key).set(last["z"])
        boundary.labels(*key).set(last["boundary"])
        for variant, value in last["rate"].items():
            rate.labels(*key, variant).set(value)
            customers.labels(*key, variant).set(last["customers"][variant])
    path = monitoring_dir(settings) / "experiments.prom"
    write_to_textfile(str(path), registry)
    object_store(settings).upload(f"{PREFIX}/experiments.prom")
    m = settings.monitoring
    if m.pushgateway_url:
        push_to_gateway(m.pushgateway_url, job=PUSH_JOB, grouping_key={"group": "experiments"}, registry=registry,
                        timeout=10, handler=_push_handler(m))
    return path


def _pushgateway_auth(m: MonitoringSettings) -> tuple[str, str] | None:
    """The monitoring job's basic-auth credentials for the Pushgateway, when set."""
    return (m.pushgateway_username, m.pushgateway_password.get_secret_value()) if m.pushgateway_password else None


def _push_handler(m: MonitoringSettings) -> Callable[..., Callable[[], None]]:
    """prometheus_client's push handler, with those credentials."""
    from prometheus_client.exposition import basic_auth_handler, default_handler

    credentials = _pushgateway_auth(m)
    if credentials is None:
        return default_handler

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, *credentials)

    return handler


def reconcile_pushgateway(settings: Settings) -> bool:
    """Give the Pushgateway the last stored numbers if it lost them (a restart with an empty disk); returns
    whether it pushed. The object store's ``reports/monitoring/metrics.prom`` is the source of truth."""
    import httpx
    from prometheus_client import CollectorRegistry, push_to_gateway
    from prometheus_client.parser import text_string_to_metric_families

    url = settings.monitoring.pushgateway_url
    if not url:
        return False
    current = httpx.get(f"{url.rstrip('/')}/metrics", timeout=5, auth=_pushgateway_auth(settings.monitoring))
    current.raise_for_status()
    if f'job="{PUSH_JOB}"' in current.text:
        return False
    data = object_store(settings).get(f"{PREFIX}/metrics.prom")
    if data is None:
        return False
    text = data.decode()

    class Stored:  # the stored text as a collector, pushed the way write_metrics pushes
        def collect(self) -> Any:
            return text_string_to_metric_families(text)

    registry = CollectorRegistry()
    registry.register(Stored())  # type: ignore[arg-type]
    push_to_gateway(url, job=PUSH_JOB, registry=registry, timeout=10, handler=_push_handler(settings.monitoring))
    return True


def claim_incident(settings: Settings, key: str, source: str, reason: str) -> bool:
    """Record the incident ``key``; True only for the first caller (any process, any pod)."""
    return statedb.claim(settings, key, source, reason)


def incidents(settings: Settings) -> list[dict[str, Any]]:
    """Every incident that re-entered training, oldest first."""
    return statedb.claims(settings)
