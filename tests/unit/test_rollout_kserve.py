"""The Kubernetes backend of the rollout against recorded InferenceServices of both KServe modes and
Prometheus answers, served over real HTTP to the official kubernetes client (no cluster can run here).

The fake API server keeps the recorded object, applies each merge patch the controller sends, checks the
result against the InferenceService CRD's schema (../shared/schemas/kserve/), and plays KServe's part:
Serverless, a changed container spec creates a new revision, which turns ready or not depending on the
scenario; Standard, a ``spec.canary`` entry gets a canary status (ready or not) and a changed stable
predictor rolls out (observed generation, PredictorReady). Prometheus answers per version according to the
scenario."""

from __future__ import annotations

import copy
import json
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client as k8s

from delivery.kserve import KServeRollout, PrometheusSource
from zmlops.settings import RolloutSettings, Settings

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).parents[1] / "fixtures" / "kserve"
RECORDED = {"Serverless": json.loads((FIXTURES / "demand-forecast.json").read_text()),
            "Standard": json.loads((FIXTURES / "demand-forecast-standard.json").read_text())}
CRD = Path(__file__).resolve().parents[2] / "../shared/schemas/kserve/serving.kserve.io_inferenceservices.yaml"


def _spec_validator() -> Any:
    import jsonschema
    import yaml

    if not CRD.exists():
        pytest.fail(f"{CRD} is missing: the KServe CRD every patch is checked against")
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema["properties"]["spec"])


SPEC = _spec_validator()
PATH = "/apis/serving.kserve.io/v1beta1/namespaces/mlops/inferenceservices/demand-forecast"


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class Cluster:
    def __init__(self, scenario: str, mode: str = "Serverless") -> None:
        self.scenario, self.mode = scenario, mode
        self.obj = copy.deepcopy(RECORDED[mode])
        self.patches: list[dict[str, Any]] = []
        self.revision = 3

    def apply(self, patch: dict[str, Any]) -> None:
        self.patches.append(patch)
        old = self.obj["spec"]["predictor"]["containers"]
        self.obj = merge(self.obj, patch)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in SPEC.iter_errors(self.obj["spec"])]
        assert not errors, f"the patch makes an InferenceService the CRD refuses: {errors}"
        changed = self.obj["spec"]["predictor"]["containers"] != old
        if self.mode == "Standard":
            status = self.obj["status"]
            status["canaryStatuses"] = [{"name": c["predictor"]["name"], "trafficPercent": c["trafficPercent"],
                                         "ready": self.scenario != "unready"}
                                        for c in self.obj["spec"].get("canary", [])]
            if changed:  # the stable Deployment rolls out the new spec
                self.obj["metadata"]["generation"] += 1
                if self.scenario != "stall":
                    status["observedGeneration"] = self.obj["metadata"]["generation"]
        elif changed:  # Serverless: a new revision
            self.revision += 1
            name = f"demand-forecast-predictor-{self.revision:05d}"
            predictor = self.obj["status"]["components"]["predictor"]
            predictor["latestCreatedRevision"] = name
            if self.scenario != "unready":
                predictor["latestReadyRevision"] = name

    def prometheus(self, query: str) -> list[dict[str, Any]]:
        candidate_errors = 12.0 if self.scenario == "errors" else 0.0
        if "zm_request_duration_seconds_bucket" in query:  # by (version, le): stable v4 p99 1.1 ms, candidate 1.5 ms
            fast = 0.0 if self.scenario == "slow" else 98.0  # slow: 98 of 100 answers between 2 and 5 ms
            counts = {"4": (("0.001", 890.0), ("0.002", 900.0), ("0.005", 900.0), ("+Inf", 900.0)),
                      "5": (("0.001", fast), ("0.002", fast + 2), ("0.005", 100.0), ("+Inf", 100.0))}
            return [{"metric": {"version": v, "le": le}, "value": [1795000000.0, str(n)]}
                    for v, buckets in counts.items() for le, n in buckets]
        if 'status=~"5.."' in query:
            values = {"4": 0.0, "5": candidate_errors}
        elif "forecast_units" in query:
            values = {"4": 210.0, "5": 205.0}
        else:
            values = {"4": 900.0, "5": 100.0}
        return [{"metric": {"version": v}, "value": [1795000000.0, str(x)]} for v, x in values.items()]


@pytest.fixture
def api() -> Iterator[tuple[Any, Cluster]]:
    state: dict[str, Cluster] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path == PATH:
                self._send(state["cluster"].obj)
            elif url.path == "/api/v1/query":
                query = parse_qs(url.query)["query"][0]
                self._send({"status": "success", "data": {"resultType": "vector",
                                                          "result": state["cluster"].prometheus(query)}})
            else:
                self._send({"kind": "Status", "code": 404}, 404)

        def do_PATCH(self) -> None:  # noqa: N802
            assert self.headers["content-type"] == "application/merge-patch+json"
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state["cluster"].apply(body)
            self._send(state["cluster"].obj)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    config = k8s.Configuration(host=host)
    custom = k8s.CustomObjectsApi(k8s.ApiClient(config))

    def make(scenario: str, tmp: Path, mode: str = "Serverless") -> tuple[KServeRollout, Cluster]:
        state["cluster"] = Cluster(scenario, mode)
        settings = Settings(home=tmp, rollout=RolloutSettings(window_seconds=0.01, k8s_poll_seconds=0.01,
                                                              ready_timeout_seconds=0.5, prometheus_url=host))
        registry = Registry()
        return KServeRollout(settings, "mlops", api=custom, prometheus=PrometheusSource(host),
                             registry=registry), state["cluster"]

    yield make, state  # type: ignore[misc]
    server.shutdown()


class Registry:
    """Records alias moves and tags (the MLflow registry is exercised by the local drills)."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {"production": "4", "previous-production": "3"}  # what the cluster serves
        self.tags: dict[tuple[str, str], str] = {}

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        if alias not in self.aliases:
            raise LookupError(alias)
        return types.SimpleNamespace(version=self.aliases[alias])

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[(version, key)] = value


def test_healthy_candidate_walks_the_plan_and_is_promoted(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("healthy", tmp_path)
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "promoted", out.reason
    first = cluster.patches[0]["spec"]["predictor"]
    assert first["canaryTrafficPercent"] == 10
    assert first["containers"][0]["args"] == ["demand-forecast", "--port", "8080", "--version", "5"]
    percents = [p["spec"]["predictor"].get("canaryTrafficPercent", "unset") for p in cluster.patches
                if "spec" in p and "canaryTrafficPercent" in p["spec"]["predictor"]]
    assert percents == [10, 10, 50, None]  # None removes the field: 100% to the new revision
    annotations = cluster.obj["metadata"]["annotations"]
    assert annotations["zero-margin/serving-version"] == "5" and annotations["zero-margin/previous-version"] == "4"
    assert rollout._registry.aliases == {"production": "5", "previous-production": "4"}
    assert rollout.decisions("demand-forecast")[-1]["what"] == "promoted"


@pytest.mark.parametrize(("scenario", "why"), [
    ("errors", "error rate 12.00%"), ("slow", "the stable 1.10 ms (limit 2x): 91 of 100 requests above 2.20 ms")])
def test_failing_candidate_is_rolled_back_and_the_stable_spec_restored(api: Any, tmp_path: Path, scenario: str,
                                                                       why: str) -> None:
    make, _ = api
    rollout, cluster = make(scenario, tmp_path)
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "rolled_back" and why in out.reason, out.reason
    predictor = cluster.obj["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["containers"][0]["args"][-2:] == ["--version", "4"]
    zero = [i for i, p in enumerate(cluster.patches) if p.get("spec", {}).get("predictor", {}).get(
        "canaryTrafficPercent") == 0]
    assert zero, "traffic pinned to the stable revision before the spec is restored"
    assert rollout._registry.tags[("5", "rollout.status")] == "rolled_back"
    assert rollout._registry.aliases == {"production": "4", "previous-production": "3"}


def test_a_registry_left_behind_by_a_crash_is_reconciled_at_the_next_deploy(api: Any, tmp_path: Path) -> None:
    from governance import audit

    make, _ = api
    rollout, cluster = make("healthy", tmp_path)
    rollout._registry.aliases["production"] = "5"  # a controller killed between the registry write and the patch
    rollout.deploy("demand-forecast", "5")
    moved = audit.entries(rollout.settings, "registry.reconciled")
    assert len(moved) == 1 and moved[0].details["moved"] == {"production": "4"}
    assert rollout._registry.aliases == {"production": "5", "previous-production": "4"}  # then promoted


def test_unready_revision_gets_the_stable_spec_back(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("unready", tmp_path)
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "not_ready"
    assert cluster.obj["spec"]["predictor"]["containers"][0]["args"][-1] == "4"
    assert "canaryTrafficPercent" not in cluster.obj["spec"]["predictor"]


def test_manual_rollback_uses_the_annotations(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("healthy", tmp_path)
    out = rollout.rollback("demand-forecast", "bad answers reported")
    assert out.version == "3"
    assert cluster.obj["spec"]["predictor"]["containers"][0]["args"][-2:] == ["--version", "3"]
    assert cluster.obj["metadata"]["annotations"]["zero-margin/serving-version"] == "3"
    assert rollout._registry.aliases == {"production": "3"}  # no warm version left behind it


def test_without_a_recorded_version_the_stable_one_is_what_prometheus_sees_served(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("healthy", tmp_path)
    del cluster.obj["metadata"]["annotations"]["zero-margin/serving-version"]  # fresh install: --alias production
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "promoted"
    assert out.checks[0]["stable"]["version"] == "4" and out.checks[0]["stable"]["requests"] == 900
    assert cluster.obj["metadata"]["annotations"]["zero-margin/previous-version"] == "4"


# ---------------------------------------------------------------- Standard mode: spec.canary (KServe 0.20+)

def test_standard_mode_walks_the_plan_on_a_named_canary_and_promotes_by_retargeting(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("healthy", tmp_path, "Standard")
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "promoted", out.reason
    weights = [p["spec"]["canary"][0]["trafficPercent"] for p in cluster.patches if p.get("spec", {}).get("canary")]
    assert weights == [10, 10, 50, 100]
    first = next(p["spec"]["canary"][0] for p in cluster.patches if p.get("spec", {}).get("canary"))
    assert first["predictor"]["name"] == "candidate-v5"
    assert first["predictor"]["containers"][0]["args"][-2:] == ["--version", "5"]
    assert not any("canaryTrafficPercent" in p.get("spec", {}).get("predictor", {}) for p in cluster.patches)
    spec = cluster.obj["spec"]
    assert "canary" not in spec and spec["predictor"]["containers"][0]["args"][-2:] == ["--version", "5"]
    assert cluster.obj["metadata"]["annotations"]["zero-margin/serving-version"] == "5"
    assert rollout._registry.aliases == {"production": "5", "previous-production": "4"}


def test_standard_mode_rolls_back_by_removing_the_entry(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("errors", tmp_path, "Standard")
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "rolled_back" and "error rate" in out.reason
    assert "canary" not in cluster.obj["spec"]
    assert cluster.obj["spec"]["predictor"]["containers"][0]["args"][-2:] == ["--version", "4"]  # never touched
    assert rollout._registry.aliases == {"production": "4", "previous-production": "3"}


def test_standard_mode_unready_canary_gets_no_traffic_and_production_stays(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("unready", tmp_path, "Standard")
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "not_ready"
    assert "canary" not in cluster.obj["spec"]
    assert rollout._registry.aliases["production"] == "4"
    assert rollout._registry.tags[("5", "rollout.status")] == "not_ready"


def test_standard_mode_a_stalled_retarget_keeps_the_canary_serving(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("stall", tmp_path, "Standard")
    out = rollout.deploy("demand-forecast", "5")
    assert out.result == "stalled"
    assert cluster.obj["spec"]["canary"][0]["trafficPercent"] == 100  # the candidate keeps all traffic
    assert rollout._registry.aliases["production"] == "4"


def test_standard_mode_manual_rollback_removes_any_canary(api: Any, tmp_path: Path) -> None:
    make, _ = api
    rollout, cluster = make("healthy", tmp_path, "Standard")
    out = rollout.rollback("demand-forecast", "bad answers reported")
    assert out.version == "3" and "canary" not in cluster.obj["spec"]
    assert cluster.obj["spec"]["predictor"]["containers"][0]["args"][-2:] == ["--version", "3"]


class Killed(BaseException):
    """The controller's process ends here (SIGKILL runs no cleanup: nothing catches a BaseException)."""


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_a_controller_killed_mid_canary_is_ended_by_the_next_deploy(api: Any, tmp_path: Path, mode: str) -> None:
    from governance import audit

    make, _ = api
    dying, cluster = make("healthy", tmp_path, mode)

    def killed(*_: Any) -> Any:
        raise Killed

    dying.judge_window = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        dying.deploy("demand-forecast", "5")
    annotations = cluster.obj["metadata"]["annotations"]
    assert annotations["zero-margin/candidate-version"] == "5"  # left mid-canary at 10%
    assert (cluster.obj["spec"]["canary"][0]["trafficPercent"] if mode == "Standard"
            else cluster.obj["spec"]["predictor"]["canaryTrafficPercent"]) == 10

    from delivery.kserve import KServeRollout

    fresh = KServeRollout(dying.settings, "mlops", api=dying.api, prometheus=dying.prometheus, registry=dying._registry)
    fresh.reconcile("demand-forecast")
    spec, annotations = cluster.obj["spec"], cluster.obj["metadata"]["annotations"]
    assert "canary" not in spec and "canaryTrafficPercent" not in spec["predictor"]
    assert spec["predictor"]["containers"][0]["args"][-2:] == ["--version", "4"]
    assert "zero-margin/candidate-version" not in annotations and annotations["zero-margin/serving-version"] == "4"
    assert dying._registry.tags[("5", "rollout.status")] == "interrupted"
    assert dying._registry.aliases == {"production": "4", "previous-production": "3"}
    ended = audit.entries(dying.settings, "rollout.rolled_back", audit.model_subject("demand-forecast", "5"))
    assert len(ended) == 1 and ended[0].details["why"].startswith("interrupted"), ended
    if mode == "Serverless":  # traffic pinned to the stable revision before its spec came back
        pins = [p for p in cluster.patches if p.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent") == 0]
        assert pins
    assert fresh.deploy("demand-forecast", "5").result == "promoted"  # and the next rollout runs as usual
