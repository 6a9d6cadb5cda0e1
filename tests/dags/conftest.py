"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME with a migrated SQLite database.

Airflow reads its configuration when first imported, so the environment is set here,
before any test module imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="zm-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
})


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    return AIRFLOW_HOME


@pytest.fixture
def zm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ZM_HOME for the tasks that dag.test() runs in this process."""
    from zmlops.settings import get_settings

    home = tmp_path / "zm"
    monkeypatch.setenv("ZM_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def load_dag(name: str) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"dag_{name}", REPO / "dags" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ApprovalTaskInstance:
    """What the approval task reads from its task instance: the review's XCom; what it writes: the skip list."""

    map_index = -1

    def __init__(self, asked: dict[str, Any]) -> None:
        self.asked, self.pushed = asked, {}  # type: dict[str, Any], dict[str, Any]

    def xcom_pull(self, task_ids: str) -> dict[str, Any]:
        assert task_ids == "review"
        return self.asked

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value
