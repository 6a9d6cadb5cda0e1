"""Both environments exist, come from the same lock, and keep their incompatible pins apart."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests import needs
from tests.conftest import REPO

pytestmark = pytest.mark.unit

PROBE = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"


def _version(env: str, dist: str) -> str | None:
    python = REPO / ".venvs" / env / "bin" / "python"
    if not python.exists():
        needs.missing(f"{python} missing: run `make envs`")
    done = subprocess.run([str(python), "-c", PROBE, dist], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _major_minor(v: str) -> tuple[int, int]:
    major, minor = v.split(".")[:2]
    return int(major), int(minor)


def test_pipelines_environment_has_airflow_3_and_no_kserve() -> None:
    airflow = _version("pipelines", "apache-airflow")
    assert airflow is not None and airflow.startswith("3.")
    assert _major_minor(_version("pipelines", "psutil") or "0.0") >= (6, 1)
    assert _version("pipelines", "kserve") is None
    for dist in ("mlflow", "dvc", "feast", "great-expectations", "evidently", "implicit", "statsmodels"):
        assert _version("pipelines", dist) is not None, dist


def test_serving_environment_has_kserve_and_no_airflow() -> None:
    assert (_version("serving", "kserve") or "").startswith("0.21")
    assert _major_minor(_version("serving", "psutil") or "9.9") < (6, 0)
    assert _version("serving", "apache-airflow") is None
    for dist in ("mlflow", "feast", "scikit-learn", "implicit", "statsmodels", "prometheus-client"):
        assert _version("serving", dist) is not None, dist


def test_shared_libraries_resolve_to_the_same_versions() -> None:
    for dist in ("scikit-learn", "numpy", "pandas", "mlflow", "feast"):
        assert _version("pipelines", dist) == _version("serving", dist), dist


def test_bytecode_was_compiled_at_install() -> None:
    site = next((REPO / ".venvs" / "serving" / "lib").glob("python3.*/site-packages"))
    assert list((site / "kserve").glob("__pycache__/*.pyc")), "kserve has no compiled bytecode"


def test_lock_is_committed_and_current() -> None:
    assert (REPO / "uv.lock").exists()
    bootstrapped = REPO / ".tools/bin/uv"
    uv = str(bootstrapped) if bootstrapped.exists() else shutil.which("uv")
    if uv is None:
        needs.missing("no uv: neither .tools/bin/uv (make bootstraps it) nor uv on PATH")
    done = subprocess.run([uv, "lock", "--check", "--offline"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # pyproject.toml and uv.lock agree
