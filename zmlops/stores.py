"""Where the stack's files live: one object store, with ``ZM_HOME`` as its local cache.

Every file the stack keeps has a key relative to ``ZM_HOME`` (``reports/monitoring/index.html``,
``work/v3/clean.parquet``, ``requests/product-recommendation/2026-12-03/...``). In the local profile
the object store *is* ``ZM_HOME`` (a folder), so a key is a plain file and the calls that copy
between store and cache do nothing. In the k8s profile the store is a bucket
(``ZM_OBJECT_STORE_URL=s3://bucket/prefix``, any S3-compatible server through fsspec and s3fs) and
``ZM_HOME`` is a pod's scratch disk: a workload writes a file into the cache, then :meth:`upload`\\ s
it; a reader :meth:`download`\\ s what it needs. A wiped cache is refilled from the store, so no
workload keeps state only on its own disk.

The S3 endpoint and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), which s3fs, DVC and MLflow all read.
"""

from __future__ import annotations

import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zmlops.settings import Settings

__all__ = ["ObjectStore", "object_store"]


class ObjectStore:
    """Files by key in ``url`` (None: the cache folder itself), cached under ``cache``."""

    def __init__(self, url: str | None, cache: Path) -> None:
        self.cache = cache.resolve()
        self.url = url
        self._fs: Any = None
        self._root = ""

    @property
    def remote(self) -> bool:
        """Whether the store is somewhere else than the cache (the k8s profile)."""
        return self.url is not None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec

            assert self.url is not None
            self._fs, self._root = fsspec.core.url_to_fs(self.url)
            self._root = self._root.rstrip("/")
        return self._fs

    def _remote(self, key: str) -> str:
        _ = self.fs  # resolves the root
        return f"{self._root}/{key.lstrip('/')}"

    def path(self, key: str) -> Path:
        """The cache path of ``key`` (the file itself in the local profile)."""
        return self.cache / key

    # -------------------------------------------------------------- writing
    def put(self, key: str, data: bytes, keep: bool = True) -> Path:
        """Write ``data`` as ``key``: into the cache atomically, then the store. ``keep=False`` writes a remote
        store directly and leaves no copy in the cache (logs a workload ships and never reads back)."""
        path = self.path(key)
        if self.remote and not keep:
            self.fs.pipe_file(self._remote(key), data)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.upload(key)
        return path

    def upload(self, key: str) -> None:
        """Copy the cached file ``key`` to the store (nothing to do in the local profile)."""
        if self.remote:
            self.fs.put_file(str(self.path(key)), self._remote(key))

    def upload_from(self, path: Path, key: str) -> None:
        """Store the file at ``path`` (anywhere on disk) as ``key``."""
        target = self.path(key)
        if self.remote:
            self.fs.put_file(str(path), self._remote(key))
        elif path.resolve() != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

    def download_to(self, key: str, path: Path) -> bool:
        """Copy ``key`` to ``path`` (anywhere on disk); False when the store has no such key."""
        if not self.remote:
            source = self.path(key)
            if not source.is_file():
                return False
            if source != path.resolve():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, path)
            return True
        return self._fetch(key, path)

    def _fetch(self, key: str, path: Path) -> bool:
        """Copy ``key`` from the remote store to ``path`` atomically; False when there is no such key."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.fs.get_file(self._remote(key), str(tmp))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            return False
        tmp.replace(path)
        return True

    def upload_tree(self, prefix: str) -> int:
        """Copy every cached file under ``prefix`` to the store; returns how many."""
        root = self.path(prefix)
        files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        if self.remote:
            for p in files:
                self.fs.put_file(str(p), self._remote(str(p.relative_to(self.cache))))
        return len(files)

    def delete(self, key: str) -> None:
        """Remove ``key`` (a file or everything under a prefix) from the store and the cache."""
        local = self.path(key)
        if local.is_dir():
            shutil.rmtree(local, ignore_errors=True)
        else:
            local.unlink(missing_ok=True)
        if self.remote:
            target = self._remote(key)
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)

    # -------------------------------------------------------------- reading
    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._remote(key))) if self.remote else self.path(key).exists()

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key`` as the store has them now, or None."""
        if not self.remote:
            path = self.path(key)
            return path.read_bytes() if path.is_file() else None
        try:
            data: bytes = self.fs.cat_file(self._remote(key))
        except FileNotFoundError:
            return None
        return data

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """The bytes of several keys, fetched concurrently from a remote store (missing keys are left out)."""
        if not self.remote:
            return {k: data for k in keys if (data := self.get(k)) is not None}
        if not keys:
            return {}
        found = self.fs.cat([self._remote(k) for k in keys], on_error="omit")
        cut = len(self._root) + 1
        return {str(path)[cut:]: data for path, data in found.items()}

    def download(self, key: str, refresh: bool = False) -> Path | None:
        """A local path holding ``key``: the cached copy, fetched from the store when missing (or always,
        with ``refresh``, for keys that change). None when the store has no such key."""
        path = self.path(key)
        if not self.remote:
            return path if path.exists() else None
        if path.exists() and not refresh:
            return path
        return path if self._fetch(key, path) else None

    def download_tree(self, prefix: str) -> Path:
        """Fetch every file under ``prefix`` into the cache (files already there are kept)."""
        if self.remote:
            for key in self.keys(prefix):
                if not self.path(key).exists():
                    self.download(key)
        return self.path(prefix)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        if not self.remote:
            root = self.path(prefix)
            if root.is_file():
                return [prefix]
            return sorted(str(p.relative_to(self.cache)) for p in root.rglob("*") if p.is_file()) \
                if root.exists() else []
        base = self._remote(prefix)
        if not self.fs.exists(base):
            return []
        found = self.fs.find(base)
        cut = len(self._root) + 1
        return sorted(str(f)[cut:] for f in found)


@lru_cache(maxsize=8)
def _cached(url: str | None, cache: str) -> ObjectStore:
    return ObjectStore(url, Path(cache))


def object_store(settings: Settings) -> ObjectStore:
    """The object store of these settings (one instance per store and cache in a process)."""
    url = settings.object_store
    return _cached(url.rstrip("/") if url else None, os.fspath(settings.home.resolve()))
