"""Airflow's components as the official chart configures them from ``charts/airflow-values.yaml``.

The official chart is not available offline, so its part is done here, for what our values use and
nothing else: ``config`` becomes ``airflow.cfg`` (here ``AIRFLOW__SECTION__KEY`` variables, the same
thing), the Secrets named in the values provide the metadata database, Fernet, API and JWT keys,
``extraEnv`` and ``extraEnvFrom`` are resolved like any container's environment, DAGs are the ones
baked into the image (``/opt/airflow/dags``), and the execution API is the api-server's Service.
The one substitution: ``executor: KubernetesExecutor`` runs every task as a new process in a new
empty directory (:mod:`stack.executor`), since there is no Kubernetes to create pods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stack.manifests import REPO, Manifests

__all__ = ["VALUES", "COMPONENTS", "load_values", "airflow_env", "API_SERVICE"]

VALUES = REPO / "charts" / "airflow-values.yaml"
RELEASE = "airflow"
API_SERVICE = f"{RELEASE}-api-server"
API_PORT = 8080
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
EXECUTORS = {"KubernetesExecutor": "stack.executor.PodProcessExecutor"}


def load_values(path: Path = VALUES) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


def _section_env(config: dict[str, dict[str, Any]]) -> dict[str, str]:
    out = {}
    for section, settings in (config or {}).items():
        for key, value in (settings or {}).items():
            out[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(value)
    return out


def airflow_env(values: dict[str, Any], manifests: Manifests, ip: str, namespace: str) -> dict[str, str]:
    """The environment every Airflow container of the chart (and every task pod) gets."""
    secret = manifests.secrets
    env: dict[str, str] = {
        # the chart's own defaults that our values rely on
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{API_SERVICE}:{API_PORT}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://{API_SERVICE}:{API_PORT}",
        "AIRFLOW__CORE__EXECUTOR": EXECUTORS.get(values["executor"], values["executor"]),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": secret[values["data"]["metadataSecretName"]]["connection"],
        "AIRFLOW__CORE__FERNET_KEY": secret[values["fernetKeySecretName"]]["fernet-key"],
        "AIRFLOW__API__SECRET_KEY": secret[values["apiSecretKeySecretName"]]["api-secret-key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secret[values["jwtSecretName"]]["jwt-secret"],
    }
    env.update(_section_env(values.get("config", {})))
    container = {"envFrom": yaml.safe_load(values.get("extraEnvFrom") or "[]"),
                 "env": yaml.safe_load(values.get("extraEnv") or "[]")}
    env.update(manifests.env(container, ip, "airflow", namespace))
    return env


def rebase(env: dict[str, str], home: Path) -> dict[str, str]:
    """The image's Airflow home (/opt/airflow, the pod's own disk) is the process's working directory here."""
    return {k: v.replace("/opt/airflow", str(home)) if k != "AIRFLOW__CORE__DAGS_FOLDER" else v
            for k, v in env.items()}


def component_command(component: str, ip: str) -> list[str]:
    if component == "api-server":
        return ["airflow", "api-server", "--host", ip, "--port", str(API_PORT)]
    return ["airflow", component]
