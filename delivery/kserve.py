"""Kubernetes backend of the rollout: the same plan and analysis, on KServe InferenceServices, in either mode.

KServe splits canary traffic two ways, and the controller drives the one the InferenceService runs in
(``status.deploymentMode``, else its ``serving.kserve.io/deploymentMode`` annotation):

- **Standard** (RawDeployment; the chart's default; KServe 0.20+): ``spec.canary`` holds one named canary
  predictor (``candidate-v<version>``, the stable predictor's spec pinned to the candidate) with its
  ``trafficPercent``; KServe puts the weights on the Gateway API HTTPRoute. Promotion retargets the stable
  predictor to the candidate version and removes the entry once it rolled out; rollback removes the entry.
- **Serverless** (Knative): ``spec.predictor.canaryTrafficPercent`` splits traffic between the last
  rolled-out revision and the new one; promotion removes the field, rollback pins it to 0 and restores
  the stable spec.

In both: a candidate that never turns ready gets no traffic and production stays; per step the controller
waits one analysis window and asks Prometheus for each version's requests, 5xx, p99 and mean forecast
(the services' own metrics carry the version); :func:`delivery.analysis.judge` decides, as locally.
KServe itself never rolls back a candidate that passed readiness and then misbehaves: this controller does.

The served version is kept in the InferenceService's annotations (``zero-margin/serving-version``,
``zero-margin/previous-version``) so a manual rollback knows where to go without MLflow, and the next deploy
reconciles the registry's aliases with them. ``zero-margin/candidate-version`` is set while a rollout runs:
found by the next deploy (the controller's pod died mid-rollout; the deploy task's retry is that next
deploy), the candidate is taken out and the stable version serves alone again (:meth:`KServeRollout.reconcile`).
One controller per InferenceService at a time: the training DAG deploys each family once per run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from delivery.analysis import Verdict, VersionStats
from delivery.recorder import PREVIOUS, PRODUCTION, Outcome, Recorder
from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["KServeRollout", "PrometheusSource"]

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
SERVING, PREVIOUS_ANNOTATION = "zero-margin/serving-version", "zero-margin/previous-version"
CANDIDATE, MODE_ANNOTATION = "zero-margin/candidate-version", "serving.kserve.io/deploymentMode"


def canary_name(version: str) -> str:
    """The canary predictor's name in ``spec.canary`` (a DNS label)."""
    return f"candidate-v{version}"


class PrometheusSource:
    """Per-version numbers of one model over the last window, by PromQL."""

    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=10)

    def _result(self, query: str) -> list[dict[str, Any]]:
        r = self.client.get(f"{self.url}/api/v1/query", params={"query": query})
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus: {body.get('error', body)}")
        return [item for item in body["data"]["result"] if not math.isnan(float(item["value"][1]))]  # NaN: no data

    def _vector(self, query: str) -> dict[str, float]:
        """Value by version (series without data, NaN, left out)."""
        return {item["metric"].get("version", ""): float(item["value"][1]) for item in self._result(query)}

    def _histograms(self, query: str) -> dict[str, dict[float, float]]:
        """``le`` -> count by version, from a query that sums bucket series ``by (version, le)``."""
        out: dict[str, dict[float, float]] = {}
        for item in self._result(query):
            out.setdefault(item["metric"].get("version", ""), {})[float(item["metric"]["le"])] = float(item["value"][1])
        return out

    def served_versions(self, family: str) -> list[str]:
        """The version each scraped replica of ``family`` serves now (``zm_model_version_info``)."""
        return sorted(str(item["metric"].get("version", ""))
                      for item in self._result(f'zm_model_version_info{{model="{family}"}} == 1'))

    def stats(self, family: str, seconds: float) -> dict[str, VersionStats]:
        w = f"{max(int(seconds), 1)}s"
        sel = f'model="{family}",protocol=~"v1|v2"'
        requests = self._vector(f"sum by (version) (increase(zm_requests_total{{{sel}}}[{w}]))")
        errors = self._vector(f'sum by (version) (increase(zm_requests_total{{{sel},status=~"5.."}}[{w}]))')
        latency = self._histograms(f"sum by (version, le) (increase(zm_request_duration_seconds_bucket{{{sel}}}[{w}]))")
        units = self._vector(f'sum by (version) (increase(zm_forecast_units_sum{{model="{family}"}}[{w}])) / '
                             f'sum by (version) (increase(zm_forecast_units_count{{model="{family}"}}[{w}]))')
        return {v: VersionStats(v, n, errors.get(v, 0.0), latency.get(v, {}), units.get(v))
                for v, n in requests.items()}


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

    def _until(self, check: Callable[[], bool]) -> bool:
        """``check`` every ``rollout.k8s_poll_seconds`` until it holds or ``rollout.ready_timeout_seconds`` pass."""
        r = self.settings.rollout
        return bool(until(check, r.ready_timeout_seconds, r.k8s_poll_seconds))

    def _wait_ready(self, family: str, before: str | None) -> bool:
        def rolled() -> bool:
            created, ready, _ = self._revisions(self.get(family))
            return bool(created and created != before and ready == created)

        return self._until(rolled)

    # ------------------------------------------------------------------ the plan

    @staticmethod
    def mode(obj: dict[str, Any]) -> str:
        """``Serverless`` or ``Standard`` (KServe 0.20's name for RawDeployment), from the object itself."""
        found = (obj.get("status", {}).get("deploymentMode")
                 or obj["metadata"].get("annotations", {}).get(MODE_ANNOTATION) or "Standard")
        return "Serverless" if found == "Serverless" else "Standard"

    def _canary(self, obj: dict[str, Any], version: str, percent: int) -> list[dict[str, Any]]:
        """``spec.canary`` of Standard mode: one named canary predictor, the stable one pinned to ``version``."""
        predictor = {k: v for k, v in copy.deepcopy(obj["spec"]["predictor"]).items() if k != "canaryTrafficPercent"}
        predictor.update(name=canary_name(version), containers=self._containers(obj, version))
        return [{"predictor": predictor, "trafficPercent": percent}]

    def _wait_canary(self, family: str, name: str) -> bool:
        def ready() -> bool:
            statuses = self.get(family).get("status", {}).get("canaryStatuses") or []
            return any(c.get("name") == name and c.get("ready") for c in statuses)

        return self._until(ready)

    def _wait_predictor(self, family: str) -> bool:
        """Standard mode: the stable predictor rolled out its new spec (observed and ready)."""
        def rolled_out() -> bool:
            obj = self.get(family)
            status = obj.get("status", {})
            ready = any(c.get("type") == "PredictorReady" and c.get("status") == "True"
                        for c in status.get("conditions", []))
            return ready and status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)

        return self._until(rolled_out)

    def reconcile(self, family: str) -> dict[str, str | None]:
        """End a rollout a dead controller left (the candidate taken out, recorded), then set the registry's
        aliases from the annotations. Returns the aliases it moved."""
        obj = self.get(family)
        annotations = obj["metadata"].get("annotations", {})
        left, stable = annotations.get(CANDIDATE), annotations.get(SERVING)
        if left:
            mode = self.mode(obj)
            if mode == "Serverless":  # all traffic to the last rolled-out revision first
                self.patch(family, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
            if stable:
                self._restore(family, self._containers(obj, str(stable)), mode)
                why = (f"interrupted: the controller stopped mid-rollout; the candidate taken out, "
                       f"v{stable} serves alone ({mode} mode)")
            else:  # no stable version recorded: the stable predictor's spec stays as it is
                self.patch(family, {"metadata": {"annotations": {CANDIDATE: None}},
                                    "spec": {"canary": None} if mode == "Standard" else {}})
                why = (f"interrupted: the controller stopped mid-rollout; the candidate taken out ({mode} mode; no "
                       "stable version recorded, the predictor's spec left as it is)")
            note = self._registry_update(family, {}, {str(left): {"rollout.status": "interrupted",
                                                                  "rollout.reason": why}})
            self.record(family, str(left), "rolled back", why, registry=note or "tagged")
        if not stable:
            return {}
        return self.reconcile_aliases(family, str(stable), annotations.get(PREVIOUS_ANNOTATION))

    def deploy(self, family: str, version: str) -> Outcome:
        """Run the plan in the InferenceService's own mode: ``spec.canary`` in Standard mode (KServe 0.20+: a
        named canary predictor, traffic weights on the HTTPRoute), ``canaryTrafficPercent`` in Serverless."""
        r = self.settings.rollout
        started = time.monotonic()
        self.reconcile(family)  # a crash mid-rollout may have left a candidate, or the aliases behind what serves
        obj = self.get(family)
        annotations = obj["metadata"].get("annotations", {})
        stable = str(annotations.get(SERVING, ""))
        if not stable:  # first rollout after install: the predictor follows the alias; ask what it serves
            served = self.prometheus.stats(family, max(r.window_seconds, 300))
            stable = max((v for v in served if v != version), key=lambda v: served[v].requests, default="")
        if stable == version:
            return Outcome(family, version, "promoted", "already the stable version", 0.0)
        mode = self.mode(obj)
        stable_containers = copy.deepcopy(obj["spec"]["predictor"]["containers"])
        before, _, _ = self._revisions(obj)
        self.record(family, version, "rollout started", f"candidate against stable v{stable or '?'} on KServe "
                    f"({mode} mode)", plan=list(r.steps), window_seconds=r.window_seconds, namespace=self.namespace)
        running = {CANDIDATE: version, **({SERVING: stable} if stable else {})}  # what the next deploy reconciles
        if mode == "Standard":
            self.patch(family, {"metadata": {"annotations": running},
                                "spec": {"canary": self._canary(obj, version, r.steps[0])}})
            ready = self._wait_canary(family, canary_name(version))
        else:
            self.patch(family, {"metadata": {"annotations": running},
                                "spec": {"predictor": {"canaryTrafficPercent": r.steps[0],
                                                       "containers": self._containers(obj, version)}}})
            ready = self._wait_ready(family, before)
        if not ready:
            self._restore(family, stable_containers, mode)
            return self.not_ready(family, version, f"the candidate was not ready within "
                                  f"{r.ready_timeout_seconds:.0f} s (KServe sent it no traffic)", started)

        def route(percent: int) -> None:
            if mode == "Standard":  # the list is atomic: the whole entry, with its new weight
                self.patch(family, {"spec": {"canary": self._canary(obj, version, percent)}})
            else:  # 100%: the field removed, all traffic to the new revision
                self.patch(family, {"spec": {"predictor": {"canaryTrafficPercent": percent if percent < 100
                                                           else None}}})

        def check() -> Verdict:
            time.sleep(r.window_seconds)
            numbers = self.prometheus.stats(family, r.window_seconds)
            return self.judge_window(numbers.get(version, VersionStats(version, 0, 0)),
                                     numbers.get(stable, VersionStats(stable, 0, 0)))

        why, checks, _ = self.walk_plan(family, version, route, check)
        if why:
            if mode == "Serverless":
                self.patch(family, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})  # at once
            self._restore(family, stable_containers, mode)  # Standard: the entry removed, its weight with it
            note = self._registry_update(family, {PRODUCTION: stable} if stable else {},
                                         {version: {"rollout.status": "rolled_back", "rollout.reason": why[:500]}})
            self.record(family, version, "rolled back", why, last_check=checks[-1], registry=note or "tagged")
            return Outcome(family, version, "rolled_back", why, time.monotonic() - started, checks)
        if mode == "Standard":  # promotion: the stable predictor retargeted to the candidate, then the entry removed
            self.patch(family, {"spec": {"predictor": {"containers": self._containers(obj, version)}}})
            if not self._wait_predictor(family):
                why = (f"the stable predictor did not roll out v{version} within {r.ready_timeout_seconds:.0f} s; "
                       "the canary keeps serving it")
                self.record(family, version, "promotion stalled", why)
                return Outcome(family, version, "stalled", why, time.monotonic() - started, checks)
            self.patch(family, {"spec": {"canary": None}})
        self.patch(family, {"metadata": {"annotations": {SERVING: version, PREVIOUS_ANNOTATION: stable,
                                                         CANDIDATE: None}}})
        why = self.promoted_why(checks)
        aliases: dict[str, str | None] = {PRODUCTION: version, **({PREVIOUS: stable} if stable else {})}
        note = self._registry_update(family, aliases, {version: {"rollout.status": "promoted", "rollout.reason": why}})
        self.record(family, version, "promoted", why, replaced=stable, registry=note or "aliases moved")
        return Outcome(family, version, "promoted", why, time.monotonic() - started, checks)

    def _restore(self, family: str, containers: list[dict[str, Any]], mode: str) -> None:
        """The stable spec back (``containers``), the candidate out: Standard mode removes the canary entry."""
        if mode == "Standard":
            self.patch(family, {"metadata": {"annotations": {CANDIDATE: None}},
                                "spec": {"canary": None, "predictor": {"containers": containers}}})
            return
        self.patch(family, {"metadata": {"annotations": {CANDIDATE: None}},
                            "spec": {"predictor": {"canaryTrafficPercent": None, "containers": containers}}})

    def rollback(self, family: str, reason: str = "manual rollback") -> Outcome:
        """Serve the previous version again (from the InferenceService's annotations; no MLflow needed)."""
        started = time.monotonic()
        obj = self.get(family)
        annotations = obj["metadata"].get("annotations", {})
        previous, current = annotations.get(PREVIOUS_ANNOTATION), annotations.get(SERVING)
        if not previous:
            raise RuntimeError(f"{family}: no previous version recorded on the InferenceService")
        spec: dict[str, Any] = {"predictor": {"containers": self._containers(obj, str(previous))}}
        if self.mode(obj) == "Standard":
            spec["canary"] = None
        else:
            spec["predictor"]["canaryTrafficPercent"] = None
        self.patch(family, {"metadata": {"annotations": {SERVING: previous, PREVIOUS_ANNOTATION: None}},
                            "spec": spec})
        seconds = time.monotonic() - started
        note = self._registry_update(family, {PRODUCTION: str(previous), PREVIOUS: None},
                                     {str(current): {"rollout.status": "rolled_back", "rollout.reason": reason[:500]}}
                                     if current else {})
        self.record(family, str(previous), "rolled back", reason, replaced=current, registry=note or "alias moved")
        return Outcome(family, str(previous), "rolled_back", reason, seconds)
