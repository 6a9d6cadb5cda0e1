"""How the harness reads the chart: the rendered manifests become processes with Kubernetes' semantics, and
the operator's objects become Prometheus and Alertmanager configuration that their own tools accept."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import airflow as af
from stack.backing import alertmanager_config, new_secrets, prometheus_config, prometheus_rules
from stack.manifests import REPO, Manifests, expand, translate
from stack.topology import STACK_VALUES, Layout, plan, render_chart

pytestmark = pytest.mark.unit


@cache
def _docs() -> tuple[dict[str, Any], ...]:
    return tuple(render_chart([STACK_VALUES]))


def _manifests() -> Manifests:
    return Manifests(list(_docs()), new_secrets())


def test_environment_follows_kubernetes_order_and_references() -> None:
    m = Manifests([{"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"A": "from-map", "B": "b"}}],
                  {"sec": {"k": "s3cret"}})
    container = {"envFrom": [{"configMapRef": {"name": "cfg"}}],
                 "env": [{"name": "A", "value": "own"},  # env wins over envFrom
                         {"name": "C", "value": "$(B)-$(A)-$$(A)-$(NOPE)"},
                         {"name": "D", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}},
                         {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                         {"name": "E", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "gone",
                                                                       "optional": True}}}]}
    env = m.env(container, "127.42.2.9", "pod-a", "mlops")
    assert env == {"A": "own", "B": "b", "C": "b-own-$(A)-$(NOPE)", "D": "s3cret", "IP": "127.42.2.9"}
    with pytest.raises(KeyError, match="Secret sec has no key missing"):
        m.env({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "missing"}}}]}, "", "", "")
    assert expand("--uri=$(U)", {"U": "postgresql://x"}) == "--uri=postgresql://x"


def test_the_three_translations_and_nothing_else(tmp_path: Path) -> None:
    mounts = {"/var/lib/zm": tmp_path / "state", "/tmp": tmp_path / "tmp"}
    assert translate("--host=0.0.0.0", "127.42.2.3", mounts) == "--host=127.42.2.3"
    assert translate("--web.listen-address=:9091", "127.42.2.4", mounts) == "--web.listen-address=127.42.2.4:9091"
    assert translate("/var/lib/zm", "", mounts) == str(tmp_path / "state")
    assert translate("--persistence.file=/var/lib/zm/pg.db", "", mounts) == f"--persistence.file={tmp_path}/state/pg.db"
    assert translate("--expose-prometheus=/tmp/m", "", mounts) == f"--expose-prometheus={tmp_path}/tmp/m"
    assert translate("http://zm-mlflow.mlops.svc:5000/tmp", "", mounts) == "http://zm-mlflow.mlops.svc:5000/tmp"
    image_path = translate("/app/feature_repo/feature_store.k8s.yaml", "", mounts)
    assert image_path.endswith("/feature_repo/feature_store.k8s.yaml") and not image_path.startswith("/app/")


def test_every_workload_of_the_chart_becomes_a_process_with_its_own_address_and_disk(tmp_path: Path) -> None:
    specs, pods, hosts = plan(Layout(tmp_path), _manifests())
    names = {s.pod or s.name for s in specs}  # pods (a container of a pod of several is POD.CONTAINER)
    rendered = {d["metadata"]["name"] for d in _docs() if d["kind"] == "Deployment"} | \
        {f"{d['metadata']['name']}-predictor" for d in _docs() if d["kind"] == "InferenceService"}
    assert rendered <= names and {f"airflow-{c}" for c in af.COMPONENTS} <= names
    ips = {s.pod or s.name: s.ip for s in specs}
    assert len(set(ips.values())) == len(ips)  # each pod its own network namespace, shared by its containers
    assert all(s.ip == ips[s.pod or s.name] for s in specs)
    for spec in specs:
        if spec.group != "pod":
            continue
        assert "0.0.0.0" not in " ".join(spec.argv) + " ".join(spec.env.values()), spec.name
        if "ZM_PROFILE" in spec.env:  # our images' workloads (the Pushgateway reads no settings)
            assert spec.env["ZM_PROFILE"] == "k8s"
            assert spec.env["ZM_HOME"].startswith(str(tmp_path / "pods" / (spec.pod or spec.name)))
        assert not any(k.startswith("ZM_") and v.startswith("/var/") for k, v in spec.env.items()), spec.name
    mlflow = next(s for s in specs if s.name == "zm-mlflow")
    assert any(a.startswith("--backend-store-uri=postgresql://") for a in mlflow.argv)  # $(VAR) from the Secret
    by_name = {n: ip for ip, ns in hosts.items() for n in ns}
    assert by_name["zm-mlflow.mlops.svc"] == mlflow.ip and "airflow-api-server" in by_name


def test_prometheus_and_alertmanager_accept_the_translated_operator_objects(tmp_path: Path) -> None:
    m = _manifests()
    _specs, pods, _hosts = plan(Layout(tmp_path), m)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules(m)))
    config = prometheus_config(m, pods, rules, "127.42.1.6:9093")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"mlops/zm-predictors", "mlops/zm-pushgateway"}  # MLflow's auth app keeps /metrics
    assert len(jobs["mlops/zm-predictors"]["static_configs"]) == 3 and jobs["mlops/zm-pushgateway"]["honor_labels"]
    # the predictors' /metrics needs a key: the PodMonitor's authorization, resolved from its Secret
    assert jobs["mlops/zm-predictors"]["authorization"] == {
        "type": "Bearer", "credentials": m.secrets["zero-margin-secrets"]["serving-metrics-token"]}
    # the Pushgateway asks Prometheus for the scrape user's basic auth, at the proxy's port only (the Pushgateway
    # itself listens on its pod's loopback)
    pushgateway_secrets = m.secrets["zero-margin-secrets"]
    assert jobs["mlops/zm-pushgateway"]["basic_auth"] == {
        "username": "prometheus", "password": pushgateway_secrets["pushgateway-scrape-password"]}
    proxy = next(s for s in _specs if s.name == "zm-pushgateway.proxy")
    gateway = next(s for s in _specs if s.name == "zm-pushgateway.pushgateway")
    assert [t["targets"] for t in jobs["mlops/zm-pushgateway"]["static_configs"]] == [[f"{proxy.ip}:9091"]]
    # one pod: one address, one working directory; the proxy reaches the Pushgateway on the pod's loopback
    assert proxy.ip == gateway.ip and proxy.pod == gateway.pod == "zm-pushgateway"
    assert f"--web.listen-address={gateway.ip}:9092" in gateway.argv
    assert proxy.env["PUSHGATEWAY"] == f"{gateway.ip}:9092" and proxy.env["LISTEN"] == f"{proxy.ip}:9091"
    pod_dir = tmp_path / "pods" / "zm-pushgateway"
    assert proxy.argv[-4:] == ["-f", str(pod_dir / "proxy-config" / "haproxy.cfg"),
                               "-f", str(pod_dir / "users" / "users.cfg")]
    # the rules from the chart's ConfigMap, the users (bcrypt hashes only) from the Secret
    rules = (REPO / "charts" / "zero-margin" / "files" / "pushgateway-proxy.cfg").read_text()
    assert proxy.files["proxy-config/haproxy.cfg"].strip() == rules.strip()
    assert proxy.files["users/users.cfg"] == pushgateway_secrets["pushgateway-users"]
    assert "groups pushers" in next(line for line in pushgateway_secrets["pushgateway-users"].splitlines()
                                    if line.strip().startswith("user monitoring "))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    am = alertmanager_config(m)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am))
    receivers = {r["name"]: r for r in am["receivers"]}
    assert receivers["mlops/zm-alerts/retrain"]["webhook_configs"][0]["url"].endswith("/alertmanager")
    assert receivers["mlops/zm-alerts/retrain"]["webhook_configs"][0]["http_config"]["authorization"] == {
        "type": "Bearer", "credentials": m.secrets["zero-margin-secrets"]["alert-receiver-token"]}  # scope alerts
    assert receivers["mlops/zm-alerts/chat"]["slack_configs"][0]["api_url"] == \
        m.secrets["zero-margin-alerting"]["slack-webhook-url"]  # the Secret's value, resolved as the operator does
    assert am["route"]["routes"][0]["matchers"][0] == 'namespace="mlops"'
    for tool, args in (("promtool", ["check", "config", str(tmp_path / "prometheus.yml")]),
                       ("amtool", ["check-config", str(tmp_path / "alertmanager.yml")])):
        binary = shutil.which(tool)
        assert binary, f"{tool} is missing: make test installs the Debian packages"
        done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_airflow_values_give_an_auth_manager_in_the_lock_and_let_the_receiver_and_tasks_reach_the_api() -> None:
    """Read against the official chart's templates (1.18): the API server's NetworkPolicy admits only the peers in
    apiServer.networkPolicy.ingress.from; PodDisruptionBudgets come from <component>.podDisruptionBudget."""
    import importlib

    values = af.load_values()
    module, _, name = values["config"]["core"]["auth_manager"].rpartition(".")
    assert getattr(importlib.import_module(module), name)  # FAB's auth manager is installed in the image
    peers = values["apiServer"]["networkPolicy"]["ingress"]["from"]
    receiver = next(d for d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "zm-alert-receiver")
    pod_labels = receiver["spec"]["template"]["metadata"]["labels"]
    worker_labels = {"tier": "airflow", "component": "worker", "release": "airflow"}

    def admitted(labels: dict[str, str]) -> bool:
        return any("podSelector" in p and all(labels.get(k) == v for k, v in p["podSelector"]["matchLabels"].items())
                   for p in peers)

    assert admitted(pod_labels) and admitted(worker_labels)
    assert values["apiServer"]["networkPolicy"]["ingress"]["ports"]
    assert all(values[c]["podDisruptionBudget"]["enabled"] for c in ("apiServer", "scheduler"))
    assert values["apiServer"]["replicas"] >= 2 and values["scheduler"]["replicas"] >= 2
    # every Secret the values reference is one the installer creates (docs/install.md, and the harness); an optional
    # key (pushgateway-user, set only while a password rotates) is named in docs/security.md
    secrets = new_secrets()
    rotation = (REPO / "docs" / "security.md").read_text()
    for item in yaml.safe_load(values["extraEnv"]):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in secrets[ref["name"]] or (ref.get("optional") and f"`{ref['key']}`" in rotation), ref
    for key in ("metadataSecretName",):
        assert values["data"][key] in secrets
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key] in secrets
