"""dvc.yaml runs through package entry points, and a repro on unchanged inputs does nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_repro_runs_once_then_is_a_no_op(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    for name in ("dvc.yaml",):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / "training", work / "training", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["simulate"].update(customers=150, products=60, weeks=30)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ZM_HOME": str(tmp_path / "zm")}
    _run(["git", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    first = _run([sys.executable, "-m", "dvc", "repro"], work, env)
    for stage in ("simulate", "clean", "validate"):
        assert f"Running stage '{stage}'" in first
    assert (work / "data" / "clean" / "clean.parquet").exists()
    assert "19/19 expectations passed" in first
    second = _run([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second
    # a param change reruns exactly the stages downstream of it
    params["simulate"]["seed"] = 43
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    third = _run([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Running stage 'simulate'" in third and "Running stage 'clean'" in third
