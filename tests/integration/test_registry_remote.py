"""The data registry behind a git remote (the k8s profile): working copies that can be wiped, writers that race.

Each registry here is what one pod has: its own working copy of the same remote (a bare repository,
as any git server holds it) and the same DVC remote.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from training.data.versions import DataRegistry, sha256_of

pytestmark = pytest.mark.integration


@pytest.fixture
def remote(tmp_path: Path) -> tuple[str, str]:
    bare = tmp_path / "server" / "data-registry.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    return str(bare), str(tmp_path / "dvc-remote")


def _pod(tmp_path: Path, name: str, remote: tuple[str, str]) -> DataRegistry:
    return DataRegistry(tmp_path / name / "data-registry", remote[1], git_remote=remote[0])


def _delivery(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "deliveries" / name
    folder.mkdir(parents=True)
    (folder / "transactions.csv").write_text(text)
    return folder


def test_a_version_written_by_one_pod_is_read_by_another_and_survives_a_wiped_disk(
        tmp_path: Path, remote: tuple[str, str]) -> None:
    writer = _pod(tmp_path, "ingest-pod", remote)
    v1 = writer.add_snapshot(_delivery(tmp_path, "a", "id,qty\n1,2\n"), {"source": "test"}, "transactions.csv")
    writer.mark(v1.name, ok=True)
    shutil.rmtree(tmp_path / "ingest-pod")  # the pod is gone with its disk

    reader = _pod(tmp_path, "task-pod", remote)  # a new pod: an empty disk
    assert [v.name for v in reader.versions()] == ["v1"]
    current = reader.resolve("current")
    assert current.name == "v1" and current.status == "good"
    got = reader.fetch(current, tmp_path / "task-pod" / "raw")
    assert sha256_of(got / "transactions.csv") == v1.files["transactions.csv"]


def test_racing_writers_get_distinct_versions_and_current_never_moves_back(
        tmp_path: Path, remote: tuple[str, str]) -> None:
    _pod(tmp_path, "init", remote).ensure()
    pods = [_pod(tmp_path, f"pod-{i}", remote) for i in range(3)]
    added: dict[int, str] = {}
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            delivery = _delivery(tmp_path, f"d{i}", f"id,qty\n{i},{i}\n")
            added[i] = pods[i].add_snapshot(delivery, {"source": f"pod-{i}"}, "transactions.csv").name
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(added.values()) == ["v1", "v2", "v3"]  # one number each, none overwritten
    sources = {v.name: v.meta["source"] for v in _pod(tmp_path, "check", remote).versions()}
    assert sources == {name: f"pod-{i}" for i, name in added.items()}

    # verdicts from different pods, newest first: current stays at the newest good version
    newest = max(added.values(), key=lambda n: int(n[1:]))
    oldest = min(added.values(), key=lambda n: int(n[1:]))
    pods[0].mark(newest, ok=True)
    pods[1].mark(oldest, ok=True)  # a slow pod's older verdict arrives last
    assert _pod(tmp_path, "check2", remote).current().name == newest  # type: ignore[union-attr]


def test_a_refused_version_is_recorded_and_never_becomes_current(tmp_path: Path, remote: tuple[str, str]) -> None:
    pod = _pod(tmp_path, "pod", remote)
    good = pod.add_snapshot(_delivery(tmp_path, "g", "id\n1\n"), {"source": "g"}, "transactions.csv")
    pod.mark(good.name, ok=True)
    bad = pod.add_snapshot(_delivery(tmp_path, "b", "id\nx\n"), {"source": "b"}, "transactions.csv")
    pod.mark(bad.name, ok=False)
    other = _pod(tmp_path, "other", remote)
    assert {v.name: v.status for v in other.versions()} == {"v1": "good", "v2": "bad"}
    assert other.current().name == "v1"  # type: ignore[union-attr]
