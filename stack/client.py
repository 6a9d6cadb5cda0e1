"""Talking to a running topology: its control API and the process specs it runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from stack.topology import Layout

__all__ = ["Control", "DEFAULT_ROOT"]

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".zm" / "stack"


class Control:
    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.layout = Layout(root)

    def _url(self) -> str:
        if not self.layout.state.exists():
            raise RuntimeError(f"no topology is running under {self.layout.root} (make stack)")
        return str(json.loads(self.layout.state.read_text())["control"])

    def running(self) -> bool:
        try:
            self.status()
        except (RuntimeError, httpx.HTTPError):
            return False
        return True

    def status(self) -> dict[str, Any]:
        r = httpx.get(f"{self._url()}/status", timeout=10)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def restart(self, names: list[str] | None = None, wipe: bool = False) -> dict[str, Any]:
        r = httpx.post(f"{self._url()}/restart", json={"names": names or [], "wipe": wipe}, timeout=300)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def shutdown(self) -> None:
        httpx.post(f"{self._url()}/shutdown", json={}, timeout=10)

    def wait_ready(self, timeout: float, names: list[str] | None = None, progress: Any = None,
                   skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Wait until every process (or those named, less those ending in ``skip``) is ready; raises with the
        laggards' names."""
        deadline, last = time.monotonic() + timeout, ""
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = self.status()
            except (RuntimeError, httpx.HTTPError):
                time.sleep(0.5)
                continue
            if status.get("error"):
                raise RuntimeError(f"the topology failed: {status['error']}")
            procs = [p for p in status["processes"] if (names is None or p["name"] in names)
                     and not p["name"].endswith(skip)]
            waiting = [p["name"] for p in procs if not p["ready"]]
            done = (status["phase"] == "running" or names is not None) and procs and not waiting
            line = f"{status['phase']}: {len(procs) - len(waiting)}/{len(procs)} ready"
            if progress is not None and line != last:
                progress(line + (f" (waiting for {', '.join(waiting[:6])})" if waiting else ""))
                last = line
            if done:
                return status
            time.sleep(1)
        raise TimeoutError(f"not ready in {timeout:.0f} s: {status.get('phase')}, "
                           f"waiting for {[p['name'] for p in status.get('processes', []) if not p['ready']]}")

    def specs(self) -> dict[str, dict[str, Any]]:
        """The process specs of the running topology (command, environment, address)."""
        path = self.layout.config / "specs.json"
        return {s["name"]: s for s in json.loads(path.read_text())}

    def worker_env(self) -> dict[str, str]:
        """The environment of Airflow's task pods (what `stack run` gives a one-off pod)."""
        env: dict[str, str] = json.loads((self.layout.config / "airflow-worker-env.json").read_text())
        return env

    def secret(self, name: str, key: str) -> str:
        return str(json.loads(self.layout.secrets.read_text())[name][key])
