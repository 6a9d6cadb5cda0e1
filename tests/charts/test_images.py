"""The two images and the Airflow values file, checked without a Docker engine or the Airflow chart:
each Dockerfile installs its locked group (`uv sync --frozen`), copies only what exists, runs as a
non-root user, pins its base images; the commands the chart runs exist in the image's environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.charts

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"serving": ROOT / "docker" / "serving.Dockerfile", "pipelines": ROOT / "docker" / "pipelines.Dockerfile"}


def _lock_groups() -> dict[str, set[str]]:
    """Package names of each dependency group as locked (the project's own entry)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    project = next(p for p in lock["package"] if p["name"] == "zero-margin-mlops")
    groups = project.get("dev-dependencies", {})
    return {g: {d["name"] for d in deps} for g, deps in groups.items()}


@pytest.mark.parametrize("group", IMAGES)
def test_image_installs_its_locked_group_and_copies_what_exists(group: str) -> None:
    text = IMAGES[group].read_text()
    syncs = re.findall(r"uv sync ([^\n]+)", text)
    assert syncs and all("--frozen" in s and f"--group {group}" in s and "--no-default-groups" in s for s in syncs)
    assert any("--no-editable" in s for s in syncs)
    for src in re.findall(r"^COPY (?!--from)(?:--chown=\S+ )?(.+) \S+$", text, flags=re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"{IMAGES[group].name}: COPY {path} does not exist"


@pytest.mark.parametrize("group", IMAGES)
def test_image_runs_non_root_from_pinned_bases(group: str) -> None:
    text = IMAGES[group].read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, flags=re.M):
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image
    python = re.search(r"python:?(3\.\d+)", text)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python and python.group(1) in requires


@pytest.mark.parametrize("group", IMAGES)
def test_image_carries_the_code_version_it_was_built_from(group: str) -> None:
    """No git checkout in an image: the build argument ZM_CODE_VERSION (``zm version``) becomes the final
    stage's environment, which zmlops.version.code_version reads first."""
    final = IMAGES[group].read_text().rsplit("\nFROM ", 1)[1]
    assert re.search(r"^ARG ZM_CODE_VERSION=", final, flags=re.M), group
    assert re.search(r"^ENV ZM_CODE_VERSION=\$\{ZM_CODE_VERSION\}$", final, flags=re.M), group
    assert 'docker build --build-arg ZM_CODE_VERSION="$version"' in (ROOT / "docs" / "install.md").read_text()


def test_the_commands_the_chart_runs_are_in_the_images() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = set(project["project"]["scripts"])
    groups = _lock_groups()
    base = {re.split(r"[<>=\[ ]", d)[0] for d in project["project"]["dependencies"]}
    # serving image: zm-serve (ours), feast (feature server); pipelines image: mlflow server, alert receiver
    assert {"zm-serve", "zm-alert-receiver"} <= scripts
    assert "feast" in base and "mlflow" in base and "kserve" in groups["serving"]
    assert {"apache-airflow", "apache-airflow-providers-cncf-kubernetes", "psycopg2-binary"} <= groups["pipelines"]
    chart = "\n".join(p.read_text() for p in (ROOT / "charts" / "zero-margin" / "templates").glob("*.yaml"))
    assert 'command: ["zm-serve"]' in chart and 'command: ["zm-alert-receiver"]' in chart
    assert 'command: ["python", "-m", "zmlops.mlflow_server"]' in chart and 'command: ["feast"]' in chart
    assert 'command: ["mlflow", "server"]' in chart  # without MLflow's auth app


def test_airflow_values_use_our_image_kubernetes_executor_and_our_settings() -> None:
    values = yaml.safe_load((ROOT / "charts" / "airflow-values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "charts" / "zero-margin" / "values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor"
    assert values["images"]["airflow"]["repository"] == chart["images"]["pipelines"]["repository"]
    assert values["images"]["airflow"]["tag"] == chart["images"]["pipelines"]["tag"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    airflow = next(p["version"] for p in lock["package"] if p["name"] == "apache-airflow")
    assert values["airflowVersion"] == airflow
    assert "zm-config" in values["extraEnvFrom"]
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False
    env = yaml.safe_load(values["extraEnv"])
    # secrets by reference only; the literals are where the tasks' cache of the object store lives and the name
    # of MLflow's service account they use
    assert all("secretKeyRef" in e["valueFrom"] for e in env if "valueFrom" in e)
    assert {e["name"]: e["value"] for e in env if "value" in e} == {"ZM_HOME": "/opt/airflow/zm",
                                                                    "MLFLOW_TRACKING_USERNAME": "pipelines"}
    secret = chart["secrets"]["name"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e} == {secret}
    # the zero-margin chart's policies let Airflow's pods (tier: airflow) through
    assert chart["networkPolicy"]["airflowPodSelector"] == {"tier": "airflow"}
    pipelines = IMAGES["pipelines"].read_text()
    assert re.search(rf"apache/airflow:{re.escape(airflow)}-python", pipelines)
