"""What the local Kubernetes topology runs: every process with its command, environment, address and probe.

:func:`plan` reads the rendered chart (``python -m stack.render`` in the delivery environment, with
``stack/values.yaml``: what a platform team sets for this "cluster"), ``charts/airflow-values.yaml`` and
the Secrets, and returns one :class:`Spec` per process. The Service names the chart uses resolve to the
processes' addresses through ``/etc/hosts`` (:mod:`stack.hosts`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stack import airflow as af
from stack.backing import BACKING_HOSTS, NAMESPACE, OIDC_ISSUER, Addresses, postgres_bin, service_names
from stack.manifests import IMAGES, REPO, Manifests, Pod, _repository, translate

__all__ = ["Spec", "Layout", "plan", "render_chart", "STACK_VALUES"]

STACK_VALUES = Path(__file__).with_name("values.yaml")
PIPELINES_BIN = REPO / ".venvs" / "pipelines" / "bin"
DELIVERY_PY = REPO / ".venvs" / "delivery" / "bin" / "python"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
IMAGE_ENV = {  # what the Dockerfiles set (docker/*.Dockerfile)
    "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "FEAST_USAGE": "False",
    "OPENBLAS_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "False", "SCARF_ANALYTICS": "false",
}


@dataclass
class Spec:
    """One process of the topology."""

    name: str
    group: str  # backing | pod | airflow
    argv: list[str]
    env: dict[str, str]
    ip: str
    ready: str | None  # http://... or tcp://host:port
    workdir: bool = True  # runs in a working directory of its own, created empty (and wiped by `restart --wipe`)
    user: str | None = None  # run as this user (PostgreSQL refuses root)
    stop_seconds: float = 30.0
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)  # emptyDir volumes: folders of the working directory
    files: dict[str, str] = field(default_factory=dict)  # secret and configMap volumes' files (volume/name -> text)
    pod: str = ""  # the pod whose working directory it shares (its own name when empty)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Layout:
    """The harness's own folders under ``root`` (``.zm/stack`` by default)."""

    root: Path

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def services(self) -> Path:
        return self.root / "services"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    def pod_dir(self, name: str) -> Path:
        return self.pods / name


def render_chart(values_files: list[Path]) -> list[dict[str, Any]]:
    """The chart rendered by Helm's Go SDK in the delivery environment (a cluster with the Prometheus operator)."""
    args = [str(DELIVERY_PY), "-m", "stack.render", "--namespace", NAMESPACE]
    for path in values_files:
        args += ["-f", str(path)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"helm render failed: {done.stderr.strip()[-2000:]}")
    docs: list[dict[str, Any]] = json.loads(done.stdout)
    return docs


def _image_env(image: str) -> dict[str, str]:
    found = IMAGES.get(_repository(image))
    path = f"{found.bin}:{BASE_PATH}" if found and found.bin else BASE_PATH
    return {"PATH": path, **IMAGE_ENV}


def _pod_spec(layout: Layout, manifests: Manifests, pod: Pod) -> Spec:
    workdir = layout.pod_dir(pod.pod)
    mounts = {path: workdir / volume for path, volume in pod.mounts.items()}
    container = manifests.container(pod)
    own = manifests.env(container, pod.ip, pod.pod, NAMESPACE)
    env = {k: translate(v, pod.ip, mounts) for k, v in own.items()}
    argv = [translate(a, pod.ip, mounts) for a in pod.command]
    argv = [_expand_all(a, env) for a in argv]
    argv[0] = pod.program
    env = {**_image_env(pod.image), "HOME": str(workdir / "home"), "TMPDIR": str(mounts.get("/tmp", workdir / "tmp")),
           **env}
    probe = pod.readiness or {}
    ready = None
    if "httpGet" in probe:
        port = probe["httpGet"]["port"]
        ready = f"http://{pod.ip}:{pod.ports.get(port, port)}{probe['httpGet'].get('path', '/')}"
    elif "tcpSocket" in probe:
        port = probe["tcpSocket"]["port"]
        ready = f"tcp://{pod.ip}:{pod.ports.get(port, port)}"
    return Spec(pod.name, "pod", argv, env, pod.ip, ready, labels=pod.labels, ports=pod.ports,
                volumes=sorted(set(pod.mounts.values())), files=pod.files, pod=pod.pod)


def _expand_all(text: str, env: dict[str, str]) -> str:
    from stack.manifests import expand

    return expand(text, env)


def backing_specs(layout: Layout, secrets: dict[str, dict[str, str]]) -> list[Spec]:
    svc = layout.services
    ip = Addresses.backing
    redis_password = secrets["redis"]["password"]
    s3 = secrets["zero-margin-secrets"]
    return [
        Spec("postgresql", "backing", [str(postgres_bin() / "postgres"), "-D", str(svc / "postgresql" / "data"),
                                        "-h", ip("postgresql"), "-p", "5432", "-k", str(svc / "postgresql")],
             {"PATH": BASE_PATH}, ip("postgresql"), f"tcp://{ip('postgresql')}:5432", workdir=False,
             user="postgres" if os.geteuid() == 0 else None),
        Spec("redis", "backing", ["redis-server", "--bind", ip("redis"), "--port", "6379", "--requirepass",
                                  redis_password, "--dir", str(svc / "redis"), "--save", "60 1", "--appendonly", "no",
                                  "--protected-mode", "no"],
             {"PATH": BASE_PATH}, ip("redis"), f"tcp://{ip('redis')}:6379", workdir=False),
        Spec("s3", "backing", [str(PIPELINES_BIN / "moto_server"), "-H", ip("s3"), "-p", "9000"],
             {"PATH": BASE_PATH, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(64 * 1024 * 1024),
              # its Service names are the endpoint, not virtual-hosted bucket names
              "MOTO_S3_CUSTOM_ENDPOINTS": ",".join(f"http://{n}:9000" for n in BACKING_HOSTS["s3"]),
              "AWS_ACCESS_KEY_ID": s3["s3-access-key-id"], "AWS_SECRET_ACCESS_KEY": s3["s3-secret-access-key"]},
             ip("s3"), f"http://{ip('s3')}:9000/", workdir=False),
        Spec("git", "backing", ["git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
                                f"--base-path={svc / 'git'}", f"--listen={ip('git')}", "--port=9418", str(svc / "git")],
             {"PATH": BASE_PATH}, ip("git"), f"tcp://{ip('git')}:9418", workdir=False),
        Spec("oidc", "backing", [sys.executable, "-m", "stack.oidc", "--host", ip("oidc"), "--port", "9400",
                                 "--issuer", OIDC_ISSUER],
             # plain HTTP on this machine's loopback network, as MLflow here (Authlib refuses it otherwise)
             {"PATH": BASE_PATH, "PYTHONPATH": str(REPO), "ZM_OIDC_CLIENTS": secrets["zm-oidc"]["clients"],
              "AUTHLIB_INSECURE_TRANSPORT": "1"},
             ip("oidc"), f"http://{ip('oidc')}:9400/healthz", workdir=False),
        Spec("sink", "backing", [sys.executable, "-m", "stack.sink", "--host", ip("sink"), "--port", "9099",
                                 "--out", str(svc / "sink" / "received.jsonl")],
             {"PATH": BASE_PATH, "PYTHONPATH": str(REPO)}, ip("sink"), f"http://{ip('sink')}:9099/healthz",
             workdir=False),
    ]


def monitoring_specs(layout: Layout) -> list[Spec]:
    ip = Addresses.backing
    cfg = layout.config
    return [
        Spec("prometheus", "backing", [
            "prometheus", f"--config.file={cfg / 'prometheus.yml'}",
            f"--storage.tsdb.path={layout.services / 'prometheus'}", f"--web.listen-address={ip('prometheus')}:9090",
            "--web.enable-lifecycle", "--storage.tsdb.retention.time=2d"],
            {"PATH": BASE_PATH}, ip("prometheus"), f"http://{ip('prometheus')}:9090/-/ready", workdir=False),
        Spec("alertmanager", "backing", [
            "prometheus-alertmanager", f"--config.file={cfg / 'alertmanager.yml'}",
            f"--storage.path={layout.services / 'alertmanager'}", f"--web.listen-address={ip('alertmanager')}:9093",
            "--cluster.listen-address="],
            {"PATH": BASE_PATH}, ip("alertmanager"), f"http://{ip('alertmanager')}:9093/-/ready", workdir=False),
    ]


def plan(layout: Layout, manifests: Manifests) -> tuple[list[Spec], list[Pod], dict[str, list[str]]]:
    """(every chart and Airflow process, the chart's pods with their addresses, hosts: address -> names)."""
    pods = manifests.pods(NAMESPACE)
    addresses: dict[str, str] = {}
    for pod in pods:  # one address per pod, shared by its containers
        pod.ip = addresses.setdefault(pod.pod, Addresses.pod(len(addresses)))
    specs = [_pod_spec(layout, manifests, pod) for pod in pods]
    hosts: dict[str, list[str]] = {Addresses.backing(name): names for name, names in BACKING_HOSTS.items()}
    for name, (selector, _ports) in manifests.services().items():
        for pod in pods:
            if manifests.selects(selector, pod):
                hosts.setdefault(pod.ip, []).extend(service_names(name, NAMESPACE))
                break
    for pod in {p.pod: p for p in pods}.values():  # KServe's predictor Service, and the pod's own name
        hosts.setdefault(pod.ip, []).append(pod.pod)
        if pod.kind == "InferenceService":
            hosts[pod.ip] += service_names(pod.name, NAMESPACE)[1:]
    values = af.load_values()
    for i, component in enumerate(af.COMPONENTS):
        ip = Addresses.airflow(i)
        home = layout.pod_dir(f"airflow-{component}")
        env = {**_image_env("ghcr.io/zero-margin/pipelines:0"),
               **af.rebase(af.airflow_env(values, manifests, ip, NAMESPACE), home),
               "AIRFLOW_HOME": str(home), "ZM_STACK_PODS": str(layout.pods),
               "ZM_STACK_TASK_LOGS": str(layout.logs / "tasks"),
               "ZM_STACK_WORKER_ENV": str(layout.config / "airflow-worker-env.json"), "PYTHONPATH": str(REPO)}
        ready = f"http://{ip}:{af.API_PORT}/api/v2/monitor/health" if component == "api-server" else None
        specs.append(Spec(f"airflow-{component}", "airflow", af.component_command(component, ip), env, ip, ready,
                          labels={"tier": "airflow", "component": component, "release": af.RELEASE}))
        if component == "api-server":
            hosts.setdefault(ip, []).extend(service_names(af.API_SERVICE, NAMESPACE))
    return specs, pods, hosts


def worker_env(manifests: Manifests) -> dict[str, str]:
    """The environment of Airflow's task pods (the executor gives every task a copy)."""
    values = af.load_values()
    return {**_image_env("ghcr.io/zero-margin/pipelines:0"), **af.airflow_env(values, manifests, "", NAMESPACE)}
