"""Kubernetes backend of the rollout: the same plan and analysis, on KServe InferenceServices.

KServe's canary (``spec.predictor.canaryTrafficPercent``, Serverless mode) splits traffic between the
last rolled-out revision and the newest one, but never rolls back a revision that passed readiness and
then misbehaves. This controller closes that gap:

1. patch the predictor to serve the candidate version (``--version <v>``: a new revision) with
   ``canaryTrafficPercent`` at the plan's first step, through the official kubernetes client;
2. wait until the new revision is ready; if it never is, restore the stable spec (KServe sent it no
   traffic);
3. per step, patch the percent, wait one analysis window and ask Prometheus for each version's
   requests, 5xx, p99 and mean forecast over the window (the services' own metrics carry the version);
   :func:`zmlops.rollout.analysis.judge` decides, as locally;
4. promote (``canaryTrafficPercent`` removed: 100% to the new revision; registry aliases moved) or roll
   back (``canaryTrafficPercent: 0`` at once, then the stable spec restored).

The served version is kept in the InferenceService's annotations (``zero-margin/serving-version``,
``zero-margin/previous-version``) so a manual rollback knows where to go without MLflow.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx

from zmlops.rollout.analysis import Verdict, VersionStats
from zmlops.rollout.controller import PREVIOUS, PRODUCTION, Outcome, Recorder
from zmlops.settings import Settings

__all__ = ["KServeRollout", "PrometheusSource"]

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
SERVING, PREVIOUS_ANNOTATION = "zero-margin/serving-version", "zero-margin/previous-version"


class PrometheusSource:
    """Per-version numbers of one model over the last window, by PromQL."""

    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=10)

    def _vector(self, query: str) -> dict[str, float]:
        r = self.client.get(f"{self.url}/api/v1/query", params={"query": query})
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus: {body.get('error', body)}")
        out = {}
        for item in body["data"]["result"]:
            value = float(item["value"][1])
            if value == value:  # NaN: no data
                out[item["metric"].get("version", "")] = value
        return out

    def served_versions(self, family: str) -> list[str]:
        """The version each scraped replica of ``family`` serves now (``zm_model_version_info``)."""
        r = self.client.get(f"{self.url}/api/v1/query",
                            params={"query": f'zm_model_version_info{{model="{family}"}} == 1'})
        r.raise_for_status()
        return sorted(str(item["metric"].get("version", "")) for item in r.json()["data"]["result"])

    def stats(self, family: str, seconds: float) -> dict[str, VersionStats]:
        w = f"{max(int(seconds), 1)}s"
        sel = f'model="{family}",protocol=~"v1|v2"'
        requests = self._vector(f"sum by (version) (increase(zm_requests_total{{{sel}}}[{w}]))")
        errors = self._vector(f'sum by (version) (increase(zm_requests_total{{{sel},status=~"5.."}}[{w}]))')
        p99 = self._vector(f"histogram_quantile(0.99, sum by (version, le) "
                           f"(increase(zm_request_duration_seconds_bucket{{{sel}}}[{w}])))")
        units = self._vector(f'sum by (version) (increase(zm_forecast_units_sum{{model="{family}"}}[{w}])) / '
                             f'sum by (version) (increase(zm_forecast_units_count{{model="{family}"}}[{w}]))')
        return {v: VersionStats(v, n, errors.get(v, 0.0), p99.get(v), units.get(v)) for v, n in requests.items()}


class KServeRollout(Recorder):
    """``deploy`` and ``rollback`` on the InferenceService named after the family, in ``namespace``."""

    def __init__(self, settings: Settings, namespace: str, api: Any = None, prometheus: PrometheusSource | None = None,
                 registry: Any = None) -> None:
        super().__init__(settings, registry)
        self.namespace = namespace
        if api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api = client.CustomObjectsApi()
        self.api = api
        self.prometheus = prometheus or PrometheusSource(settings.rollout.prometheus_url)

    # ------------------------------------------------------------------ the InferenceService

    def get(self, family: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, family)
        return obj

    def patch(self, family: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                      family, body)
        return obj

    @staticmethod
    def _containers(obj: dict[str, Any], version: str) -> list[dict[str, Any]]:
        """The predictor's containers with the model container serving ``version`` (pinned)."""
        containers: list[dict[str, Any]] = copy.deepcopy(obj["spec"]["predictor"]["containers"])
        args = list(containers[0].get("args", []))
        for flag in ("--alias", "--version"):
            if flag in args:
                i = args.index(flag)
                del args[i:i + 2]
        containers[0]["args"] = [*args, "--version", version]
        return containers

    @staticmethod
    def _revisions(obj: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
        p = obj.get("status", {}).get("components", {}).get("predictor", {})
        return p.get("latestCreatedRevision"), p.get("latestReadyRevision"), p.get("latestRolledoutRevision")

    def _wait_ready(self, family: str, before: str | None) -> bool:
        deadline = time.monotonic() + self.settings.rollout.ready_timeout_seconds
        while time.monotonic() < deadline:
            created, ready, _ = self._revisions(self.get(family))
            if created and created != before and ready == created:
                return True
            time.sleep(self.settings.rollout.k8s_poll_seconds)
        return False

    # ------------------------------------------------------------------ the plan

    def deploy(self, family: str, version: str) -> Outcome:
        r = self.settings.rollout
        started = time.monotonic()
        obj = self.get(family)
        stable = str(obj["metadata"].get("annotations", {}).get(SERVING, ""))
        if not stable:  # first rollout after install: the predictor follows the alias; ask what it serves
            served = self.prometheus.stats(family, max(r.window_seconds, 300))
            stable = max((v for v in served if v != version), key=lambda v: served[v].requests, default="")
        annotations = obj["metadata"].get("annotations", {})
        if annotations.get(SERVING):  # a crash mid-rollout may have left the aliases behind what is served
            self.reconcile_aliases(family, stable, annotations.get(PREVIOUS_ANNOTATION))
        if stable == version:
            return Outcome(family, version, "promoted", "already the stable version", 0.0)
        stable_containers = copy.deepcopy(obj["spec"]["predictor"]["containers"])
        before, _, _ = self._revisions(obj)
        self.record(family, version, "rollout started", f"candidate against stable v{stable or '?'} on KServe",
                    plan=list(r.steps), window_seconds=r.window_seconds, namespace=self.namespace)
        self.patch(family, {"metadata": {"annotations": {"zero-margin/candidate-version": version}},
                            "spec": {"predictor": {"canaryTrafficPercent": r.steps[0],
                                                   "containers": self._containers(obj, version)}}})
        if not self._wait_ready(family, before):
            self._restore(family, stable_containers)
            return self.not_ready(family, version, f"new revision not ready within {r.ready_timeout_seconds:.0f} s "
                                  "(KServe sent it no traffic)", started)

        def route(percent: int) -> None:  # 100%: the field removed, all traffic to the new revision
            self.patch(family, {"spec": {"predictor": {"canaryTrafficPercent": percent if percent < 100 else None}}})

        def check() -> Verdict:
            time.sleep(r.window_seconds)
            numbers = self.prometheus.stats(family, r.window_seconds)
            return self.judge_window(numbers.get(version, VersionStats(version, 0, 0, None)),
                                     numbers.get(stable, VersionStats(stable, 0, 0, None)))

        why, checks, _ = self.walk_plan(family, version, route, check)
        if why:
            self.patch(family, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})  # at once
            self._restore(family, stable_containers)
            note = self._registry_update(family, {PRODUCTION: stable} if stable else {},
                                         {version: {"rollout.status": "rolled_back", "rollout.reason": why[:500]}})
            self.record(family, version, "rolled back", why, last_check=checks[-1], registry=note or "tagged")
            return Outcome(family, version, "rolled_back", why, time.monotonic() - started, checks)
        self.patch(family, {"metadata": {"annotations": {SERVING: version, PREVIOUS_ANNOTATION: stable,
                                                         "zero-margin/candidate-version": None}}})
        why = self.promoted_why(checks)
        aliases = {PRODUCTION: version, **({PREVIOUS: stable} if stable else {})}
        note = self._registry_update(family, aliases, {version: {"rollout.status": "promoted", "rollout.reason": why}})
        self.record(family, version, "promoted", why, replaced=stable, registry=note or "aliases moved")
        return Outcome(family, version, "promoted", why, time.monotonic() - started, checks)

    def _restore(self, family: str, containers: list[dict[str, Any]]) -> None:
        self.patch(family, {"metadata": {"annotations": {"zero-margin/candidate-version": None}},
                            "spec": {"predictor": {"canaryTrafficPercent": None, "containers": containers}}})

    def rollback(self, family: str, reason: str = "manual rollback") -> Outcome:
        """Serve the previous version again (from the InferenceService's annotations; no MLflow needed)."""
        started = time.monotonic()
        obj = self.get(family)
        annotations = obj["metadata"].get("annotations", {})
        previous, current = annotations.get(PREVIOUS_ANNOTATION), annotations.get(SERVING)
        if not previous:
            raise RuntimeError(f"{family}: no previous version recorded on the InferenceService")
        self.patch(family, {"metadata": {"annotations": {SERVING: previous, PREVIOUS_ANNOTATION: None}},
                            "spec": {"predictor": {"canaryTrafficPercent": None,
                                                   "containers": self._containers(obj, str(previous))}}})
        seconds = time.monotonic() - started
        note = self._registry_update(family, {PRODUCTION: str(previous), PREVIOUS: None},
                                     {str(current): {"rollout.status": "rolled_back", "rollout.reason": reason[:500]}}
                                     if current else {})
        self.record(family, str(previous), "rolled back", reason, replaced=current, registry=note or "alias moved")
        return Outcome(family, str(previous), "rolled_back", reason, seconds)
