"""The k8s profile keeps Optuna's studies in PostgreSQL (the state database): a study and the next data version's
warm start from it, against Debian's PostgreSQL (make test installs it for the topology)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    from stack.backing import init_postgres, needs_root, postgres_bin

    root = Path(tempfile.mkdtemp(prefix="zm-tuning-pg-"))  # init_postgres gives it to the postgres user
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_postgres(root / "data", {})
    password = (root / "superuser.password").read_text()
    run_as = ["runuser", "-u", "postgres", "--"] if needs_root() else []
    proc = subprocess.Popen([*run_as, str(postgres_bin() / "postgres"), "-D", str(root / "data"), "-p", str(port),
                             "-k", str(root), "-c", "listen_addresses=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "PGPASSWORD": password}
    psql = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-qc"]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([*psql, "select 1"], env=env, capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.3)
        subprocess.run([*psql, "CREATE DATABASE zm"], env=env, check=True, capture_output=True)
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/zm"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_studies_live_in_postgresql_and_the_next_version_starts_from_the_best(postgres_url: str,
                                                                              tmp_path: Path) -> None:
    import optuna
    from pydantic import SecretStr

    from training import tuning
    from zmlops.settings import Settings, TuningSettings

    def space(trial: Any) -> dict[str, Any]:
        return {"x": trial.suggest_float("x", -5.0, 5.0)}

    def folds(data: Any, params: dict[str, Any]) -> Iterator[float]:
        yield from (-(params["x"] - 2.0) ** 2 for _ in range(2))

    family = SimpleNamespace(name="toy", primary_metric="score", greater_is_better=True, search_space=space,
                             tuning_folds=folds)
    settings = Settings(home=tmp_path, tuning=TuningSettings(storage_url=SecretStr(postgres_url), startup_trials=3))
    assert settings.tuning_storage == postgres_url
    first = tuning.tune(settings, family, None, "v1", {"x": 0.0}, max_trials=15, budget_seconds=60,
                        say=lambda _: None)
    second = tuning.tune(settings, family, None, "v2", {"x": 0.0}, max_trials=2, budget_seconds=60,
                         say=lambda _: None)
    assert first.default == -4.0 and first.improved() and second.warm_start == "toy/v1"
    assert second.best == pytest.approx(first.best)  # trial 1 of v2 is v1's best
    names = {s.study_name for s in optuna.get_all_study_summaries(postgres_url)}
    assert names == {"toy/v1", "toy/v2"} and not (tmp_path / "state.db").exists()  # nothing on the pod's disk
