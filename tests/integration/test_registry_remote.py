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


def test_a_retired_version_s_bytes_leave_the_s3_remote_and_every_pod_refuses_it(tmp_path: Path, s3: str) -> None:
    """The erasure's retirement on the k8s profile's stores: a git server and a DVC remote on S3. The retired
    version's own objects are deleted from the bucket (the objects a kept version shares stay), and a pod with an
    empty disk sees the retirement and refuses to fetch it."""
    import boto3

    from training.data.versions import VersionRetired

    remote = (tmp_path / "server" / "data-registry.git", f"{s3}/dvc-retire")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote[0])], check=True)
    writer = _pod(tmp_path, "ingest-pod", (str(remote[0]), remote[1]))
    rows = "id,qty\n" + "".join(f"{i},1\n" for i in range(50))
    first, second = _delivery(tmp_path, "a", rows), _delivery(tmp_path, "b", rows.replace("1,1\n", "1,0\n", 1))
    for folder in (first, second):  # a file both versions hold: one object, kept
        (folder / "notes.txt").write_text("unchanged by the erasure\n")
    v1 = writer.add_snapshot(first, {"source": "test"}, "transactions.csv")
    writer.mark(v1.name, ok=True)
    v2 = writer.add_snapshot(second, {"source": "test"}, "transactions.csv")
    writer.mark(v2.name, ok=True)
    bucket, prefix = s3.removeprefix("s3://").split("/", 1)
    s3_client = boto3.client("s3", region_name="us-east-1")

    def held() -> set[str]:
        listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/dvc-retire/")
        return {o["Key"].removeprefix(f"{prefix}/dvc-retire/") for o in listed.get("Contents", [])}

    before, objects = held(), {v: writer.objects(v) for v in ("v1", "v2")}
    assert objects["v1"] <= before and objects["v2"] <= before
    deleted = writer.retire("v1", "erasure customer:0123456789abcdef: ticket 1")
    assert set(deleted) == objects["v1"] - objects["v2"] and len(deleted) == 2  # its listing and its table
    assert held() == before - set(deleted) and objects["v2"] <= held()

    reader = _pod(tmp_path, "task-pod", (str(remote[0]), remote[1]))  # a new pod: an empty disk
    assert reader.get("v1").status == "retired" and reader.resolve("current").name == "v2"
    with pytest.raises(VersionRetired, match="ticket 1"):
        reader.fetch(reader.get("v1"), tmp_path / "task-pod" / "raw")
    got = reader.fetch(reader.get("v2"), tmp_path / "task-pod" / "raw2")
    assert sha256_of(got / "transactions.csv") == v2.files["transactions.csv"]
