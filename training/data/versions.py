"""Versioned raw data: a Git + DVC data registry.

Each snapshot is one commit of a dedicated registry repository (``raw.dvc`` and
``version.json`` in git, the bytes in the DVC cache and remote) tagged ``vN``. The
gate's verdict is recorded as a tag ``good/vN`` or ``bad/vN``; the tag ``current``
points at the newest good version and moves only when a new version passes, so a
bad snapshot is kept for inspection but never becomes current. "The data as of
version X" is :meth:`DataRegistry.fetch`, which returns exactly the bytes stored.

The DVC remote is a local folder in the local profile and an S3-compatible bucket in
the k8s profile; it is configured and committed before the first ``dvc add`` (DVC
reads remote settings per commit).

With a git remote (``data_registry_remote``; always in the k8s profile, where a task
pod's disk is wiped after every task) the local repository is only a working copy:
it is cloned when missing, brought up to date before every read, and every version,
verdict and move of ``current`` is pushed. Two writers racing for the same ``vN``
are told apart by the push: the loser fetches and takes the next number; ``current``
moves by compare-and-swap (``--force-with-lease``), never backwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from zmlops.settings import telemetry_env

__all__ = ["DataRegistry", "DataVersion", "VersionNotFound", "sha256_of"]

Status = Literal["pending", "good", "bad", "retired"]


class VersionNotFound(LookupError):
    """The requested data version does not exist (the message lists the ones that do)."""


class VersionRetired(VersionNotFound):
    """The version was retired (an erasure): its bytes are deleted from the DVC cache and remote."""


@dataclass(frozen=True)
class DataVersion:
    name: str  # "v3"
    commit: str
    status: Status
    meta: dict[str, Any]

    @property
    def number(self) -> int:
        return int(self.name[1:])

    @property
    def files(self) -> dict[str, str]:
        """File name -> sha256 of the snapshot's files."""
        return dict(self.meta["files"])

    @property
    def transactions_file(self) -> str:
        return str(self.meta["transactions_file"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DataRegistry:
    """The data registry repository at ``root`` with DVC remote ``remote_url``."""

    def __init__(self, root: Path, remote_url: str, git_remote: str | None = None) -> None:
        self.root = root
        self.remote_url = remote_url
        self.git_remote = git_remote
        self._synced_at = -1e9

    # -- commands ---------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(telemetry_env())
        env.setdefault("GIT_AUTHOR_NAME", "zero-margin data registry")
        env.setdefault("GIT_AUTHOR_EMAIL", "data-registry@zero-margin.invalid")
        env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
        env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
        return env

    def _git(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True,
                              env=self._env(), check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _dvc(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=self.root, capture_output=True,
                              text=True, env=self._env(), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout.strip()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- setup ------------------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the registry (git, DVC, default remote) once, or clone it from the git remote."""
        with self._locked():
            if (self.root / ".dvc" / "config").exists():
                return
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / ".git").exists():
                self._git("init", "-q", "-b", "main")
            if self.git_remote:
                self._git("remote", "remove", "origin", check=False)
                self._git("remote", "add", "origin", self.git_remote)
                if self._fetch():  # the registry exists on the remote: this is a working copy of it
                    return
            self._dvc("init", "-q")
            self._dvc("config", "core.autostage", "true")
            if "://" not in self.remote_url:
                Path(self.remote_url).mkdir(parents=True, exist_ok=True)
            self._dvc("remote", "add", "-d", "storage", self.remote_url)
            (self.root / "README.md").write_text(
                "# Zero Margin data registry\n\nOne commit per raw snapshot, tagged vN; see `version.json`.\n"
            )
            self._git("add", "-A")
            self._git("commit", "-q", "-m", "Initialise data registry (DVC remote configured)")
            if self.git_remote and not self._push("main"):
                self._fetch()  # another writer initialised it first: take theirs

    # -- the git remote ---------------------------------------------------------------------------------
    def _fetch(self) -> bool:
        """Mirror the remote's branch and tags into the working copy; False when the remote is empty."""
        done = subprocess.run(["git", "-C", str(self.root), "fetch", "-q", "--force", "--prune", "--prune-tags",
                               "--tags", "origin", "+refs/heads/main:refs/remotes/origin/main"],
                              capture_output=True, text=True, env=self._env(), check=False)
        if done.returncode != 0:
            if "couldn't find remote ref" in done.stderr:
                return False
            raise RuntimeError(f"git fetch from the data registry remote failed: {done.stderr.strip()}")
        self._git("reset", "-q", "--hard", "refs/remotes/origin/main")
        self._synced_at = time.monotonic()
        return True

    def _refresh(self) -> None:
        """Before a read: the remote's state, at most once a second (local registries need nothing)."""
        if self.git_remote and time.monotonic() - self._synced_at > 1.0:
            with self._locked():
                if (self.root / ".git").exists():
                    self._fetch()

    def _push(self, *refspecs: str, lease: str | None = None) -> bool:
        """Push atomically; False when the remote refused (someone else pushed first, or ``lease``,
        a ``--force-with-lease`` expectation, no longer holds)."""
        options = [f"--force-with-lease={lease}"] if lease is not None else []
        done = subprocess.run(["git", "-C", str(self.root), "push", "-q", "--atomic", *options, "origin", *refspecs],
                              capture_output=True, text=True, env=self._env(), check=False)
        if done.returncode == 0:
            return True
        if "rejected" in done.stderr or "already exists" in done.stderr or "stale info" in done.stderr:
            return False
        raise RuntimeError(f"git push to the data registry remote failed: {done.stderr.strip()}")

    # -- writing ----------------------------------------------------------------------------------------
    def add_snapshot(self, src_dir: Path, meta: dict[str, Any], transactions_file: str) -> DataVersion:
        """Version the files of ``src_dir`` as the next ``vN`` (pending until the gate marks it)."""
        self.ensure()
        for _attempt in range(10):
            with self._locked():
                if self.git_remote:
                    self._fetch()
                number = max((v.number for v in self._versions()), default=0) + 1
                name = f"v{number}"
                raw = self.root / "raw"
                shutil.rmtree(raw, ignore_errors=True)
                shutil.copytree(src_dir, raw)
                files = {p.name: sha256_of(p) for p in sorted(raw.iterdir()) if p.is_file()}
                if transactions_file not in files:
                    raise FileNotFoundError(f"{transactions_file} is not in {src_dir}")
                record = {**meta, "version": name, "files": files, "transactions_file": transactions_file}
                (self.root / "version.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
                self._dvc("add", "-q", "raw")
                # staged from their content, never from the index's stat cache: after a reset, a new version.json
                # of the same size written within the same tick would otherwise look unchanged ("racy git")
                self._git("rm", "-q", "--cached", "--ignore-unmatch", "version.json", "raw.dvc")
                self._git("add", "-A")
                self._git("commit", "-q", "-m", f"data {name}: {meta.get('source', 'snapshot')}")
                self._git("tag", name)
                self._dvc("push", "-q")  # the bytes first: a pushed tag always has its data on the remote
                if not self.git_remote or self._push("main", f"refs/tags/{name}"):
                    return self._get(name)
                self._git("tag", "-d", name)  # another writer took vN: start again from the remote's state
        raise RuntimeError("could not add a data version: the registry remote kept changing under us")

    def mark(self, name: str, ok: bool) -> DataVersion:
        """Record the gate's verdict; a pass makes ``name`` current if it is newer than the current one."""
        verdict, other = (f"good/{name}", f"bad/{name}") if ok else (f"bad/{name}", f"good/{name}")
        for _attempt in range(10):
            with self._locked():
                if self.git_remote:
                    self._fetch()
                version = self._get(name)
                tags = self._git("tag", "--list").split()
                self._git("tag", "-d", other, check=False)
                self._git("tag", "-f", verdict, version.commit)
                current = self._current()
                moves = ok and (current is None or current.number < version.number)
                if moves:
                    self._git("tag", "-f", "current", version.commit)
                if not self.git_remote:
                    return self._get(name)
                refs = [f"+refs/tags/{verdict}"] + ([f":refs/tags/{other}"] if other in tags else [])
                lease = None
                if moves:  # compare-and-swap: only if nobody moved it since we looked
                    lease = f"refs/tags/current:{current.commit if current is not None else ''}"
                    refs.append("refs/tags/current")
                if self._push(*refs, lease=lease):
                    return self._get(name)
        raise RuntimeError(f"could not record the verdict of {name}: the registry remote kept changing")

    def objects(self, name: str) -> set[str]:
        """The DVC objects of version ``name`` (``files/md5/ab/cdef...``, the folder's listing included)."""
        out = yaml.safe_load(self._git("show", f"{name}:raw.dvc"))["outs"][0]["md5"]
        listing = json.loads(self._read_object(_object_path(out)))
        return {_object_path(out), *(_object_path(entry["md5"]) for entry in listing)}

    def _read_object(self, path: str) -> bytes:
        local = self.root / ".dvc" / "cache" / path
        if local.exists():
            return local.read_bytes()
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.remote_url)
        data: bytes = fs.cat_file(f"{root.rstrip('/')}/{path}")
        return data

    def created_at(self, name: str) -> dt.datetime:
        """When version ``name`` was committed (its commit time, UTC)."""
        self._clone_if_missing()
        return dt.datetime.fromisoformat(self._git("log", "-1", "--format=%cI", name)).astimezone(dt.UTC)

    def retire(self, name: str, why: str) -> list[str]:
        """Retire version ``name`` for good: tag ``retired/NAME`` (the message says why) and delete its bytes from
        the DVC cache and remote, but for objects a kept version shares. Returns the deleted objects."""
        import fsspec

        with self._locked():
            if self.git_remote:
                self._fetch()
            tags = self._git("tag", "--list").split()
            version = self._get(name)
            kept = [v for v in self._versions() if v.name != name and f"retired/{v.name}" not in tags]
            shared = set().union(*(self.objects(v.name) for v in kept)) if kept else set()
            doomed = sorted(self.objects(name) - shared)
            self._git("tag", "-a", "-f", "-m", why, f"retired/{name}", version.commit)
            if self.git_remote and not self._push(f"refs/tags/retired/{name}"):
                raise RuntimeError(f"could not record the retirement of {name} on the registry remote")
        fs, root = fsspec.core.url_to_fs(self.remote_url)
        for path in doomed:
            (self.root / ".dvc" / "cache" / path).unlink(missing_ok=True)
            target = f"{root.rstrip('/')}/{path}"
            if fs.exists(target):
                fs.rm(target)
        return doomed

    # -- reading ----------------------------------------------------------------------------------------
    def versions(self) -> list[DataVersion]:
        self._clone_if_missing()
        self._refresh()
        return self._versions()

    def _clone_if_missing(self) -> None:
        if self.git_remote and not (self.root / ".dvc" / "config").exists():
            self.ensure()

    def _versions(self) -> list[DataVersion]:
        if not (self.root / ".git").exists():
            return []
        tags = self._git("tag", "--list").split()
        names = sorted((t for t in tags if t.startswith("v") and t[1:].isdigit()), key=lambda t: int(t[1:]))
        return [self._version(n, tags) for n in names]

    def get(self, name: str) -> DataVersion:
        self._clone_if_missing()
        self._refresh()
        return self._get(name)

    def _get(self, name: str) -> DataVersion:
        tags = self._git("tag", "--list").split() if (self.root / ".git").exists() else []
        if name not in tags:
            known = ", ".join(t for t in tags if t.startswith("v")) or "none yet"
            raise VersionNotFound(f"data version {name!r} not found (known: {known})")
        return self._version(name, tags)

    def _version(self, name: str, tags: list[str]) -> DataVersion:
        commit = self._git("rev-list", "-n", "1", name)
        meta = json.loads(self._git("show", f"{name}:version.json"))
        status: Status = "retired" if f"retired/{name}" in tags else "good" if f"good/{name}" in tags \
            else "bad" if f"bad/{name}" in tags else "pending"
        return DataVersion(name, commit, status, meta)

    def current(self) -> DataVersion | None:
        """The newest version that passed the gate, or None."""
        self._clone_if_missing()
        self._refresh()
        return self._current()

    def _current(self) -> DataVersion | None:
        if not (self.root / ".git").exists() or "current" not in self._git("tag", "--list", "current").split():
            return None
        commit = self._git("rev-list", "-n", "1", "current")
        names = [t for t in self._git("tag", "--points-at", commit).split() if t.startswith("v")]
        return self._get(names[0]) if names else None

    def resolve(self, ref: str) -> DataVersion:
        """``latest`` or ``current`` -> the current good version; ``vN`` -> that version."""
        if ref in ("latest", "current"):
            current = self.current()
            if current is None:
                raise VersionNotFound("no data version has passed validation yet")
            return current
        return self.get(ref)

    def fetch(self, version: DataVersion, dest: Path, only: list[str] | None = None) -> Path:
        """Exactly the bytes of ``version`` (or of its files ``only``) in ``dest``, checked against the
        recorded sha256."""
        import dvc.api

        self._clone_if_missing()
        if version.status == "retired":
            why = self._git("tag", "-l", "--format=%(contents:subject)", f"retired/{version.name}")
            raise VersionRetired(f"data version {version.name} was retired: its bytes are deleted ({why})")
        dest.mkdir(parents=True, exist_ok=True)
        for file_name, digest in version.files.items():
            if only is not None and file_name not in only:
                continue
            target = dest / file_name
            if target.exists() and sha256_of(target) == digest:
                continue
            tmp = target.with_suffix(target.suffix + ".part")
            with dvc.api.open(f"raw/{file_name}", repo=str(self.root), rev=version.name, mode="rb") as src, \
                    tmp.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            if sha256_of(tmp) != digest:
                tmp.unlink()
                raise RuntimeError(f"{file_name} of {version.name}: checksum mismatch")
            tmp.replace(target)
        return dest


def _object_path(md5: str) -> str:
    """Where DVC 3 keeps an object in a cache or remote."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"

