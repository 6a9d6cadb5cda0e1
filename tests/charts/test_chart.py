"""The Helm chart, validated offline: rendered with Helm's Go SDK (helm-python-sdk), every document
checked against the Kubernetes schemas (kubernetes-validate, strict) and InferenceServices against the
KServe CRD, scanned by checkov, and held to the production policies over several values combinations.

Runs in the delivery environment (`make test` does: `.venvs/delivery/bin/python -m pytest --noconftest
-m charts tests/charts`); it imports nothing from the project but the family names.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests import needs

pytestmark = pytest.mark.charts

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zero-margin"
KSERVE_CRDS = (ROOT / "../shared/schemas/kserve").resolve()
KUBE_VERSION = "1.31.0"
NAMESPACE = "mlops"
# a production install turns the feature server on with its identity provider (the chart's default leaves it off)
FEATURE_SERVER = {"featureServer": {"enabled": True, "oidc": {
    "discoveryUrl": "https://sso.example.com/realms/retail/.well-known/openid-configuration",
    "issuer": "https://sso.example.com/realms/retail"}}}
PROFILES = {
    "production": FEATURE_SERVER,
    "minimal": yaml.safe_load((CHART / "ci" / "minimal-values.yaml").read_text()),
    "canary": yaml.safe_load((CHART / "ci" / "canary-values.yaml").read_text()),
    "tls": {"inference": {"tls": {"enabled": True}}, "mlflow": {"tls": {"enabled": True}},
            "featureServer": {**FEATURE_SERVER["featureServer"], "tls": {"enabled": True}}},
}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "InferenceService")
# Kinds without a schema in kubernetes-validate; InferenceService is validated against the KServe CRD,
# the Prometheus operator kinds by the rules tests (promtool) and the checks below, cert-manager's Certificate
# by the checks below.
CUSTOM_KINDS = {"InferenceService", "PodMonitor", "PrometheusRule", "AlertmanagerConfig", "Certificate"}


def families() -> tuple[str, ...]:
    from zmlops.catalog import FAMILIES  # the standard library only: importable in the delivery environment

    return FAMILIES


@cache
def _chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render(values: dict[str, Any] | None = None, operator: bool = True) -> list[dict[str, Any]]:
    """The chart in a cluster with the Prometheus operator's APIs (``operator``) or without them."""
    from stack.render import OPERATOR_APIS
    from stack.render import render as helm_render

    return helm_render(values or {}, name="zm", namespace=NAMESPACE, api_versions=OPERATOR_APIS if operator else ())


@cache
def rendered(profile: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(PROFILES[profile]))


def kinds(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "InferenceService":
        return dict(doc["spec"]["predictor"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(doc["spec"]["template"]["spec"])


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "InferenceService":
        # KServe adds this label to predictor pods, besides the predictor's own labels
        return {**doc["spec"]["predictor"]["labels"], "serving.kserve.io/inferenceservice": doc["metadata"]["name"],
                "component": "predictor"}
    return dict(doc["spec"]["template"]["metadata"]["labels"])


# ---------------------------------------------------------------- the contract: values and schema


def test_values_schema_is_generated_from_the_documented_values() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "charts" / "values_schema.py"), str(CHART), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_leaf_has_type_description_and_default() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], path: str) -> int:
        assert node.get("type") and node.get("description"), path
        if "properties" in node:
            assert node["additionalProperties"] is False, path
            return sum(walk(child, f"{path}.{key}") for key, child in node["properties"].items())
        assert "default" in node, path
        return 1

    assert sum(walk(child, key) for key, child in schema["properties"].items()) > 60


def test_chart_models_are_the_model_families() -> None:
    assert set(_chart().values["inference"]["models"]) == set(families())


def test_lint_is_clean() -> None:
    for profile, values in PROFILES.items():
        report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert problems == [], (profile, problems)


@pytest.mark.parametrize(("values", "message"), [
    ({"inference": {"minReplica": 2}}, "minReplica"),
    ({"mlfow": {"enabled": False}}, "mlfow"),
    ({"images": {"serving": {"tag": "latest"}}}, "tag"),
    ({"images": {"serving": {"digest": "abc"}}}, "digest"),
    ({"inference": {"resources": {"requests": {"cpu": "lots"}}}}, "cpu"),
    ({"inference": {"deploymentMode": "Knative"}}, "deploymentMode"),
    ({"inference": {"models": {"demand-forcast": {"enabled": True}}}}, "demand-forcast"),
])
def test_typos_and_bad_values_fail_the_render_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert message in str(err.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"inference": {"canary": {"enabled": True}}}, "inference.deploymentMode=Serverless"),
    ({"inference": {"gatewayApi": False}}, "set inference.gatewayApi=true"),
    ({"inference": {"minReplicas": 5, "maxReplicas": 3}}, "inference.minReplicas (5) is above"),
    ({"mlflow": {"enabled": False}}, "mlflow.externalTrackingUri"),
    ({"inference": {"models": {f: {"enabled": False} for f in families()}}}, "every family is disabled"),
])
def test_cross_field_rules_fail_with_the_fix(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert message in str(err.value)


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("profile", PROFILES)
def test_core_documents_validate_strictly_against_kubernetes(profile: str) -> None:
    docs = rendered(profile)
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)  # raises on any error
        checked += 1
    assert checked >= 5


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as JSON schema that refuses unknown fields, as the API server prunes them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        return out
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


@cache
def isvc_validator() -> jsonschema.Draft7Validator:
    schema = isvc_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def isvc_schema() -> dict[str, Any]:
    crd = yaml.safe_load((KSERVE_CRDS / "serving.kserve.io_inferenceservices.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # metadata is an ObjectMeta; the API server checks it, the CRD leaves it open
    schema["properties"]["metadata"] = {"type": "object"}
    return dict(schema)


@needs.path(KSERVE_CRDS, "KServe CRDs (../shared/schemas/kserve)")
@pytest.mark.parametrize("profile", PROFILES)
def test_inference_services_validate_against_the_kserve_crd(profile: str) -> None:
    services = kinds(rendered(profile), "InferenceService")
    assert {s["metadata"]["name"] for s in services} == set(families())
    for doc in services:
        assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
        isvc_validator().validate(doc)


@needs.path(KSERVE_CRDS, "KServe CRDs (../shared/schemas/kserve)")
def test_the_crd_validation_refuses_unknown_fields() -> None:
    doc = copy.deepcopy(kinds(rendered("production"), "InferenceService")[0])
    doc["spec"]["predictor"]["minReplica"] = 2
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        isvc_validator().validate(doc)
    doc = copy.deepcopy(kinds(rendered("production"), "InferenceService")[0])
    doc["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(jsonschema.ValidationError, match="httpGett"):
        isvc_validator().validate(doc)


@needs.path(KSERVE_CRDS, "KServe CRDs (../shared/schemas/kserve)")
def test_shadow_traffic_gets_a_shadow_predictor_per_model_or_runs_in_production_s_pods() -> None:
    """``inference.shadow.alias`` with mode predictor (the default): one more InferenceService per model,
    NAME-shadow, serving the alias with one replica and no canary (valid against the KServe CRD and Kubernetes'
    schemas, its own certificate under TLS); production's predictors get its address and the key they send the
    copies with, and may reach it; the shadow predictors send nothing on. Mode process: no extra workload, every
    predictor loads the alias's version itself."""
    docs = render({"inference": {"shadow": {"alias": "staging"}, "tls": {"enabled": True}}})
    services = {d["metadata"]["name"]: d for d in kinds(tuple(docs), "InferenceService")}
    assert set(services) == set(families()) | {f"{f}-shadow" for f in families()}
    for name, doc in services.items():
        isvc_validator().validate(doc)
        predictor = doc["spec"]["predictor"]
        env = {e["name"]: e for e in predictor["containers"][0]["env"]}
        if name.endswith("-shadow"):
            family = name.removesuffix("-shadow")
            assert predictor["containers"][0]["args"] == [family, "--port", "8080", "--alias", "staging"]
            assert predictor["minReplicas"] == predictor["maxReplicas"] == 1 and "canaryTrafficPercent" not in predictor
            assert "ZM_SERVING__SHADOW_URL" not in env and doc["metadata"]["labels"]["zero-margin/shadow"] == "true"
            assert {"secret": {"secretName": f"{name}-predictor-tls", "defaultMode": 0o400}, "name": "tls"} in \
                predictor["volumes"]
        else:
            assert env["ZM_SERVING__SHADOW_URL"]["value"] == \
                f"https://{name}-shadow-predictor.{NAMESPACE}.svc.cluster.local"
            assert env["ZM_AUTH__CLIENT_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "serving-shadow-token"
            assert env["SSL_CERT_FILE"]["value"] == "/etc/zero-margin/tls/ca.crt"
    assert {f"{f}-shadow-predictor-tls" for f in families()} <= {d["metadata"]["name"] for d in kinds(
        tuple(docs), "Certificate")}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "zm-config")["data"]
    assert "ZM_SERVING__SHADOW_ALIAS" not in config  # no pod answers copies itself
    predictors = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "zm-predictors")
    assert {"protocol": "TCP", "port": 8080} in [p for rule in predictors["spec"]["egress"] for p in rule["ports"]]
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)

    in_process = render({"inference": {"shadow": {"alias": "staging", "mode": "process"}}})
    assert {d["metadata"]["name"] for d in kinds(tuple(in_process), "InferenceService")} == set(families())
    config = next(d for d in in_process if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "zm-config")["data"]
    assert config["ZM_SERVING__SHADOW_ALIAS"] == "staging"
    with pytest.raises(Exception, match="mode"):
        render({"inference": {"shadow": {"alias": "staging", "mode": "gateway"}}})


def test_prometheus_rule_carries_the_generated_rules() -> None:
    rule = kinds(rendered("production"), "PrometheusRule")[0]
    generated = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    for group in rule["spec"]["groups"]:  # the chart adds the release namespace to every alert
        for r in group["rules"]:
            if "alert" in r:
                assert r["labels"].pop("namespace") == NAMESPACE
    assert rule["spec"] == generated
    labelled = render({"monitoring": {"alertLabels": {"team": "retail-ml"}}})
    spec = kinds(tuple(labelled), "PrometheusRule")[0]["spec"]
    alerts = [r for g in spec["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all(r["labels"]["team"] == "retail-ml" and r["labels"]["severity"] for r in alerts)


def test_dashboards_ship_as_sidecar_configmaps() -> None:
    maps = [d for d in rendered("production") if d["kind"] == "ConfigMap"
            and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {name: json.loads(body) for m in maps for name, body in m["data"].items()}
    files = {p.name: json.loads(p.read_text()) for p in (CHART / "files" / "dashboards").glob("*.json")}
    assert shipped == files and len(files) >= 2


# ---------------------------------------------------------------- checkov


@pytest.mark.parametrize("profile", PROFILES)
def test_checkov_finds_no_failed_check(profile: str, tmp_path: Path) -> None:
    out_dir = tmp_path / profile
    out_dir.mkdir()
    (out_dir / "manifests.yaml").write_text(yaml.safe_dump_all(list(rendered(profile)), sort_keys=False))
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
           "ENABLE_DEFINITION_KEY": "false"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("checkov")), "--directory", str(out_dir), "--framework", "kubernetes",
         "--output", "json", "--skip-download"],
        capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(len(r.get("results", {}).get("passed_checks", [])) for r in reports)
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    assert failed == [], failed
    assert passed > 50  # checks ran (90 on the minimal profile, 353 on production)
    assert all(c.get("check_result", {}).get("suppress_comment") for c in skipped), "every skip gives its reason"


# ---------------------------------------------------------------- production policies


PRODUCTION = ("production", "canary")


@pytest.mark.parametrize("profile", PRODUCTION)
def test_predictors_have_replicas_autoscaling_disruption_budget_and_spread(profile: str) -> None:
    docs = rendered(profile)
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in kinds(docs, "PodDisruptionBudget")}
    for isvc in kinds(docs, "InferenceService"):
        p = isvc["spec"]["predictor"]
        assert p["minReplicas"] >= 2 and p["maxReplicas"] > p["minReplicas"]
        mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        if mode != "Serverless":  # KServe creates the HPA from these fields in RawDeployment mode
            assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
        assert p["scaleMetric"] and p["scaleTarget"]
        keys = {c["topologyKey"] for c in p["topologySpreadConstraints"]}
        assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
        labels = pod_labels(isvc)
        assert any(all(labels.get(k) == v for k, v in sel) for sel in budgets), isvc["metadata"]["name"]


def test_replicas_never_share_a_node_when_there_are_two_or_more() -> None:
    for profile, hard in (("production", "DoNotSchedule"), ("minimal", None)):
        for doc in rendered(profile):
            if doc["kind"] not in WORKLOADS:
                continue
            constraints = pod_spec(doc).get("topologySpreadConstraints", [])
            spread = {c["topologyKey"]: c["whenUnsatisfiable"] for c in constraints}
            replicas = doc["spec"]["predictor"]["minReplicas"] if doc["kind"] == "InferenceService" \
                else doc["spec"].get("replicas", 1)
            if hard and replicas >= 2:
                assert spread["kubernetes.io/hostname"] == hard, doc["metadata"]["name"]
            elif spread:
                assert spread.get("kubernetes.io/hostname") == "ScheduleAnyway", doc["metadata"]["name"]


def test_a_settings_change_rolls_every_pod() -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        out = {}
        for doc in render(values):
            if doc["kind"] == "InferenceService":
                out[doc["metadata"]["name"]] = doc["spec"]["predictor"]["annotations"]["checksum/config"]
            elif doc["kind"] in WORKLOADS and reads_settings(doc["spec"]["template"]["spec"]):
                out[doc["metadata"]["name"]] = doc["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return out

    def reads_settings(pod: dict[str, Any]) -> bool:  # the Pushgateway reads none of ours: nothing to roll
        text = json.dumps(pod)
        return "zero-margin-config" in text or "zm-config" in text or '"ZM_' in text

    before = checksums(FEATURE_SERVER)
    after = checksums({**FEATURE_SERVER, "settings": {"monitoring": {"driftShare": 0.3}}})
    assert set(before) == set(after) and len(before) >= 6
    assert {"zm-mlflow", "zm-feature-server", "zm-alert-receiver"} <= set(before)
    assert all(before[name] != after[name] for name in before), "a pod would keep running on the old settings"
    assert checksums(FEATURE_SERVER) == before  # deterministic: an unchanged upgrade rolls nothing


def test_one_slow_readiness_answer_does_not_take_a_predictor_out() -> None:
    for isvc in kinds(rendered("production"), "InferenceService"):
        probe = isvc["spec"]["predictor"]["containers"][0]["readinessProbe"]
        assert probe["failureThreshold"] >= 2 and probe["timeoutSeconds"] >= 2
        drain = next(e for e in isvc["spec"]["predictor"]["containers"][0]["env"]
                     if e["name"] == "ZM_SERVING__DRAIN_SECONDS")
        # draining lasts longer than the Service needs to notice (failureThreshold periods)
        assert float(drain["value"]) >= probe["failureThreshold"] * probe["periodSeconds"]


def test_without_the_prometheus_operator_the_chart_installs_and_says_nothing_of_it() -> None:
    docs = render({}, operator=False)
    assert {d["kind"] for d in docs} & {"PrometheusRule", "PodMonitor", "AlertmanagerConfig"} == set()
    assert {"InferenceService", "Deployment", "ConfigMap"} <= {d["kind"] for d in docs}
    with_operator = {d["kind"] for d in rendered("production")}
    assert {"PrometheusRule", "PodMonitor", "AlertmanagerConfig"} <= with_operator


def test_alert_routes_reach_the_receiver_and_the_people_with_secrets_by_reference() -> None:
    docs = render({"alerting": {"pagerduty": {"enabled": True}, "slack": {"enabled": True},
                                "email": {"enabled": True}}})
    (config,) = kinds(tuple(docs), "AlertmanagerConfig")
    routes = {r["receiver"]: r for r in config["spec"]["route"]["routes"]}
    assert routes["retrain"]["matchers"] == [{"name": "action", "value": "retrain", "matchType": "="}]
    assert routes["page"]["matchers"] == [{"name": "severity", "value": "page", "matchType": "="}]
    assert "matchers" not in routes["chat"] and routes["email"]["matchers"][0]["value"] == "ticket"
    receivers = {r["name"]: r for r in config["spec"]["receivers"]}
    assert receivers["retrain"]["webhookConfigs"][0]["url"] == "http://zm-alert-receiver.mlops.svc:9095/alertmanager"
    assert receivers["page"]["pagerdutyConfigs"][0]["routingKey"] == {"name": "zero-margin-alerting",
                                                                      "key": "pagerduty-routing-key"}
    assert set(receivers["chat"]["slackConfigs"][0]["apiURL"]) == {"name", "key"}
    assert set(receivers["email"]["emailConfigs"][0]["authPassword"]) == {"name", "key"}
    # every alert carries the release's namespace (the operator's namespace matcher routes only those)
    rule = kinds(tuple(docs), "PrometheusRule")[0]
    assert all(r["labels"]["namespace"] == NAMESPACE for g in rule["spec"]["groups"] for r in g["rules"]
               if "alert" in r)


def test_mlflow_answers_its_service_names_behind_its_auth_app() -> None:
    docs = rendered("production")
    (mlflow,) = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == "zm-mlflow"]
    container = pod_spec(mlflow)["containers"][0]
    args = container["args"]
    assert container["command"] == ["python", "-m", "zmlops.mlflow_server"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("key") for e in container["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "mlflow-admin-password"
    assert env["MLFLOW_ACCOUNT_SERVING_PASSWORD"] == "mlflow-serving-password"
    # without MLflow's job runner (seven Huey consumers per pod, none of whose jobs the project runs)
    assert {"configMapRef": {"name": "zm-config"}} in container["envFrom"]
    config = next(d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "zm-config")
    assert config["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    for isvc in kinds(docs, "InferenceService"):  # the predictors read as the account serving
        pe = {e["name"]: e for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
        assert pe["MLFLOW_TRACKING_USERNAME"]["value"] == "serving"
        assert pe["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "mlflow-serving-password"
    # MLflow's /metrics admits administrators only behind its auth app: no scrape of it then
    assert not any(a.startswith("--expose-prometheus=") for a in args)
    assert "zm-mlflow" not in {d["metadata"]["name"] for d in kinds(docs, "PodMonitor")}
    hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    import fnmatch

    for host in ("zm-mlflow:5000", "zm-mlflow.mlops.svc:5000", "zm-mlflow.mlops.svc.cluster.local:5000",
                 "10.12.0.7:5000"):
        assert any(fnmatch.fnmatch(host, pattern) for pattern in hosts), host
    assert not any(fnmatch.fnmatch("evil.example.com", pattern) for pattern in hosts)


def test_canary_fields_are_set_only_with_the_canary_profile() -> None:
    for profile, expected in (("production", None), ("canary", 10)):
        for isvc in kinds(rendered(profile), "InferenceService"):
            assert isvc["spec"]["predictor"].get("canaryTrafficPercent") == expected


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_is_restricted_non_root_read_only_and_without_token(profile: str) -> None:
    for doc in rendered(profile):
        if doc["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(doc)
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged"), name
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, name


@pytest.mark.parametrize("profile", PROFILES)
def test_probes_differ_and_resources_are_bounded(profile: str) -> None:
    for doc in rendered(profile):
        if doc["kind"] not in WORKLOADS:
            continue
        for c in pod_spec(doc)["containers"]:
            name = f"{doc['metadata']['name']}/{c['name']}"
            assert c["readinessProbe"] != c["livenessProbe"], name
            for kind in ("requests", "limits"):  # scratch disk too: the kubelet evicts a pod above its limit
                assert {"cpu", "memory", "ephemeral-storage"} <= set(c["resources"][kind]), name


@pytest.mark.parametrize("profile", PROFILES)
def test_images_are_pinned_and_secrets_only_referenced(profile: str) -> None:
    docs = rendered(profile)
    assert kinds(docs, "Secret") == []
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        for c in pod_spec(doc)["containers"]:
            image = c["image"]
            assert "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")), image
            for env in c.get("env", []):
                if any(word in env["name"] for word in ("KEY", "PASSWORD", "SECRET", "REDIS", "REGISTRY", "URI")):
                    if env["name"] in ("ZM_MLFLOW_TRACKING_URI",) or env["name"].endswith("_FILE"):
                        continue  # a URL without credentials; a path into a mounted Secret
                    assert "secretKeyRef" in env.get("valueFrom", {}), (doc["metadata"]["name"], env["name"])
    digest = next(i for i in kinds(docs, "InferenceService"))["spec"]["predictor"]["containers"][0]["image"]
    assert ("@sha256:" in digest) == (profile == "canary")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("profile", PROFILES)
def test_network_is_denied_by_default_with_an_allow_for_every_listening_pod(profile: str) -> None:
    docs = rendered(profile)
    policies = kinds(docs, "NetworkPolicy")
    deny = [p for p in policies if p["metadata"]["name"].endswith("default-deny")]
    assert len(deny) == 1 and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        labels = pod_labels(doc)
        assert _selects(deny[0]["spec"]["podSelector"], labels), doc["metadata"]["name"]
        allows = [p for p in policies if p is not deny[0] and "ingress" in p["spec"]
                  and _selects(p["spec"]["podSelector"], labels)]
        ports = {port["containerPort"] for c in pod_spec(doc)["containers"] for port in c.get("ports", [])}
        allowed = {port["port"] for p in allows for rule in p["spec"]["ingress"] for port in rule.get("ports", [])}
        assert ports and ports <= allowed, (doc["metadata"]["name"], ports, allowed)


def test_minimal_profile_renders_only_what_it_asks_for() -> None:
    docs = rendered("minimal")
    assert {d["kind"] for d in docs} >= {"InferenceService", "ConfigMap", "NetworkPolicy"}
    assert not kinds(docs, "PrometheusRule") and not kinds(docs, "PodMonitor")
    names = {d["metadata"]["name"] for d in docs}
    assert not any("mlflow" in n or "pushgateway" in n or "feature-server" in n for n in names)
    config = next(d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"] == "zm-config")
    assert config["data"]["ZM_MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"
    assert config["data"]["ZM_PROFILE"] == "k8s" and config["data"]["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_the_rollout_role_grants_only_what_the_canary_needs() -> None:
    docs = rendered("production")
    role = kinds(docs, "Role")[0]
    assert role["rules"] == [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                              "verbs": ["get", "list", "watch", "patch"]}]
    binding = kinds(docs, "RoleBinding")[0]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": NAMESPACE}]
    assert not kinds(docs, "ClusterRole") and not kinds(docs, "ClusterRoleBinding")
    config = next(d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"] == "zm-config")["data"]
    assert config["ZM_ROLLOUT__NAMESPACE"] == NAMESPACE and config["ZM_ROLLOUT__PROMETHEUS_URL"].startswith("http")


def _settings_fields() -> dict[str, set[str]]:
    """Field names of zmlops.settings: "" for the top level, else the nested section's name (read with ast:
    the delivery environment does not install the project)."""
    tree = ast.parse((ROOT / "zmlops" / "settings.py").read_text())
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}

    def fields(cls: ast.ClassDef) -> dict[str, str]:
        return {n.target.id: ast.unparse(n.annotation) for n in cls.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}

    top = fields(classes["Settings"])
    out = {"": set(top)}
    for name, annotation in top.items():
        if annotation in classes:
            out[name] = set(fields(classes[annotation]))
    return out


def test_every_zm_variable_the_chart_sets_is_a_setting() -> None:
    """A misspelt ZM_* name would be ignored by pydantic-settings (extra="ignore"): the pod would run on defaults.
    The feature server runs `feast serve` on feature_store.k8s.yaml, whose ${ZM_...} placeholders Feast fills."""
    import re

    known = _settings_fields()
    placeholders = set(re.findall(r"\$\{(ZM_\w+)\}", (ROOT / "feature_repo" / "feature_store.k8s.yaml").read_text()))
    assert placeholders, "feature_store.k8s.yaml has no ${ZM_...} placeholders any more"
    assert {"serving", "rollout", "monitoring"} <= set(known)
    names = set()
    for doc in rendered("production"):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "zm-config":
            names |= set(doc["data"])
        if doc["kind"] in WORKLOADS:
            names |= {e["name"] for c in pod_spec(doc)["containers"] for e in c.get("env", [])}
    settings = sorted(n for n in names if n.startswith("ZM_"))
    assert "ZM_SERVING__FEATURE_CACHE_SIZE" in settings
    for name in set(settings) - placeholders:
        section, _, field = name.removeprefix("ZM_").lower().rpartition("__")
        assert field in known.get(section, set()), f"{name} is not a field of zmlops.settings"


def test_feature_settings_reach_the_predictors_as_numbers_pydantic_reads() -> None:
    config = next(d for d in render({"inference": {"features": {"cacheSize": 2000000, "cacheSeconds": 60,
                                                                 "timeoutMs": 20},
                                                    "recommendation": {"rankingTableMb": 1000000}}})
                  if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "zm-config")["data"]
    assert config["ZM_SERVING__RANKING_TABLE_MB"] == "1000000"
    assert config["ZM_SERVING__FEATURE_CACHE_SIZE"] == "2000000"  # not Go's 2e+06, which an int field refuses
    assert config["ZM_SERVING__FEATURE_CACHE_SECONDS"] == "60" and config["ZM_SERVING__FEATURE_TIMEOUT_MS"] == "20"
    with pytest.raises(Exception, match="cacheSize"):
        render({"inference": {"features": {"cacheSize": -1}}})
    with pytest.raises(Exception, match="rankingTableMb"):
        render({"inference": {"recommendation": {"rankingTableMb": -1}}})


def test_tls_gives_each_predictor_a_certificate_and_serves_and_probes_https() -> None:
    docs = rendered("tls")
    certificates = {d["metadata"]["name"]: d["spec"] for d in kinds(docs, "Certificate")}
    assert set(certificates) == {f"{f}-predictor-tls" for f in families()} | {"zm-mlflow-tls", "zm-feature-server-tls"}
    for family in families():
        spec = certificates[f"{family}-predictor-tls"]
        assert spec["secretName"] == f"{family}-predictor-tls" and spec["issuerRef"]["group"] == "cert-manager.io"
        assert f"{family}-predictor.{NAMESPACE}.svc" in spec["dnsNames"]
        assert f"zero-margin-predictors.{NAMESPACE}.svc" in spec["dnsNames"]
    for isvc in kinds(docs, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        container = predictor["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["ZM_SERVING__TLS_CERT_FILE"] == "/etc/zero-margin/tls/tls.crt"
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounted["tls"] == "/etc/zero-margin/tls"
        secrets = {v["name"]: v["secret"]["secretName"] for v in predictor["volumes"] if "secret" in v}
        assert secrets["tls"] == f"{isvc['metadata']['name']}-predictor-tls"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    (monitor,) = [d for d in kinds(docs, "PodMonitor") if d["metadata"]["name"] == "zm-predictors"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["ca"]["secret"]["key"] == "ca.crt"
    assert endpoint["tlsConfig"]["serverName"] == f"zero-margin-predictors.{NAMESPACE}.svc"
    assert not kinds(rendered("production"), "Certificate")  # off by default


def test_mlflow_tls_serves_https_and_its_clients_check_it_against_the_ca() -> None:
    """mlflow.tls: MLflow's container gets the certificate and uvicorn's TLS options (the form
    tests/integration/test_mlflow_auth.py starts the real server with), probes HTTPS; the tracking URI is https and
    every pod that calls MLflow (predictors; Airflow through charts/airflow-values.yaml) has the CA where
    MLFLOW_TRACKING_SERVER_CERT_PATH points."""
    docs = rendered("tls")
    (certificate,) = [d["spec"] for d in kinds(docs, "Certificate") if d["metadata"]["name"] == "zm-mlflow-tls"]
    assert certificate["secretName"] == "zm-mlflow-tls" and f"zm-mlflow.{NAMESPACE}.svc" in certificate["dnsNames"]
    (mlflow,) = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == "zm-mlflow"]
    container = pod_spec(mlflow)["containers"][0]
    assert ("--uvicorn-opts=--timeout-graceful-shutdown 10 --ssl-certfile=/etc/zero-margin/tls/tls.crt "
            "--ssl-keyfile=/etc/zero-margin/tls/tls.key" in container["args"])
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["tls"] == "/etc/zero-margin/tls"
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in pod_spec(mlflow)["volumes"]}["tls"] \
        == "zm-mlflow-tls"
    config = next(d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "zm-config")
    assert config["ZM_MLFLOW_TRACKING_URI"] == f"https://zm-mlflow.{NAMESPACE}.svc:5000"
    ca_file = config["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    folder, name = ca_file.rsplit("/", 1)

    def holds_ca(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> bool:
        secret = {v["name"]: v.get("secret", {}) for v in volumes}
        return any(m["mountPath"] == folder and secret.get(m["name"], {}).get("secretName") == "zm-mlflow-tls"
                   and {"key": "ca.crt", "path": name} in secret[m["name"]]["items"] for m in mounts)

    for isvc in kinds(docs, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        assert holds_ca(predictor["volumes"], predictor["containers"][0]["volumeMounts"]), isvc["metadata"]["name"]
    airflow = yaml.safe_load((ROOT / "charts" / "airflow-values.yaml").read_text())
    assert holds_ca(airflow["volumes"], airflow["volumeMounts"])
    production = next(d["data"] for d in rendered("production") if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == "zm-config")
    assert production["ZM_MLFLOW_TRACKING_URI"].startswith("http://")
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" not in production


def test_feature_server_tls_serves_https_with_its_certificate() -> None:
    """featureServer.tls: feast serve gets --key/--cert (the form tests/serving/test_feature_server.py starts the real
    server with) from its cert-manager Secret, and probes HTTPS; without it, plain HTTP."""
    docs = rendered("tls")
    (certificate,) = [d["spec"] for d in kinds(docs, "Certificate") if d["metadata"]["name"] == "zm-feature-server-tls"]
    assert f"zm-feature-server.{NAMESPACE}.svc" in certificate["dnsNames"]
    (server,) = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == "zm-feature-server"]
    container = pod_spec(server)["containers"][0]
    args = container["args"]
    assert args[args.index("--key") + 1] == "/etc/zero-margin/tls/tls.key"
    assert args[args.index("--cert") + 1] == "/etc/zero-margin/tls/tls.crt"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["tls"] == "/etc/zero-margin/tls"
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in pod_spec(server)["volumes"]}["tls"] \
        == "zm-feature-server-tls"
    (plain,) = [d for d in kinds(rendered("production"), "Deployment") if d["metadata"]["name"] == "zm-feature-server"]
    assert "--key" not in pod_spec(plain)["containers"][0]["args"]
    assert "scheme" not in pod_spec(plain)["containers"][0]["readinessProbe"]["httpGet"]


def test_the_feature_server_runs_only_with_an_issuer_whose_tokens_it_checks() -> None:
    """Off by default; on, it needs the issuer (a clear failure otherwise) and gets it as the variables
    feature_store.k8s.yaml's auth section names."""
    import re

    assert not [d for d in render({}) if "feature-server" in d["metadata"]["name"]]
    with pytest.raises(Exception, match="featureServer.oidc.discoveryUrl"):
        render({"featureServer": {"enabled": True}})
    (server,) = [d for d in kinds(rendered("production"), "Deployment")
                 if d["metadata"]["name"] == "zm-feature-server"]
    container = pod_spec(server)["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    oidc = FEATURE_SERVER["featureServer"]["oidc"]
    assert env["ZM_FEAST_OIDC_DISCOVERY_URL"] == oidc["discoveryUrl"] and env["ZM_FEAST_OIDC_ISSUER"] == oidc["issuer"]
    assert env["ZM_FEAST_OIDC_AUDIENCE"] == env["ZM_FEAST_OIDC_CLIENT_ID"] == "zero-margin-feast"
    config = yaml.safe_load((ROOT / "feature_repo" / "feature_store.k8s.yaml").read_text())
    assert config["auth"]["type"] == "oidc"
    assert set(re.findall(r"\$\{(\w+)\}", json.dumps(config["auth"]))) <= set(env)
    assert "/app/feature_repo/feature_store.k8s.yaml" in container["args"]


def test_mlflow_accepts_a_previous_password_only_from_an_optional_secret_key() -> None:
    """While an account's password rotates its previous one is in the Secret; otherwise the key is absent and the
    pod must still start (optional), and MLflow then runs its own check (zmlops/mlflow_server.py)."""
    (mlflow,) = [d for d in kinds(rendered("production"), "Deployment") if d["metadata"]["name"] == "zm-mlflow"]
    env = {e["name"]: e for e in pod_spec(mlflow)["containers"][0]["env"]}
    for account in ("PIPELINES", "SERVING"):
        ref = env[f"MLFLOW_ACCOUNT_{account}_PREVIOUS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True and ref["key"] == f"mlflow-{account.lower()}-previous-password"
        assert "optional" not in env[f"MLFLOW_ACCOUNT_{account}_PASSWORD"]["valueFrom"]["secretKeyRef"]
