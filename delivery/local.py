"""Local backend of the rollout: KServe ModelServer processes in server slots behind HAProxy.

Each slot runs ``zm-serve <family> --version <v> --port <slot port>`` (pinned to one registered
version; the rollout, not the alias poll, decides what serves). Processes start in their own session
so they outlive the task that started them; their pids live in the rollout state, so any later
command (a manual rollback from a shell) can stop them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from delivery.analysis import Counters, parse
from delivery.haproxy import SLOTS, HAProxy, slot_port
from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["LocalBackend", "serve_command"]


def serve_command(settings: Settings) -> list[str]:
    """The zm-serve of the serving environment (this repository's .venvs/serving), or the one on PATH."""
    if settings.rollout.serve_command:
        return settings.rollout.serve_command.split()
    here = Path(sys.prefix).parent / "serving" / "bin" / "zm-serve"  # .venvs/pipelines -> .venvs/serving
    local = Path(__file__).resolve().parents[2] / ".venvs" / "serving" / "bin" / "zm-serve"
    for candidate in (here, local):
        if candidate.exists():
            return [str(candidate)]
    return ["zm-serve"]


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings, families: tuple[str, ...]) -> None:
        self.settings = settings
        self.proxy = HAProxy(settings, families)
        self.logs = settings.home.resolve() / "rollout" / "logs"

    # ------------------------------------------------------------------ processes

    def start_proxy(self) -> None:
        self.proxy.start()

    def start(self, family: str, slot: str, version: str, env: dict[str, str] | None = None) -> int:
        """Start a server for ``version`` in ``slot``; returns its pid (readiness comes later)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        port = slot_port(self.settings, family, slot)
        log = (self.logs / f"{family}-{slot}.log").open("ab")
        # the server must stay unready long enough for HAProxy's health check to notice before it exits
        drain = max(self.settings.serving.drain_seconds, 3 * self.settings.rollout.check_interval_ms / 1000)
        full_env = {**os.environ, "ZM_HOME": str(self.settings.home.resolve()),
                    "ZM_SERVING__DRAIN_SECONDS": str(drain), **(env or {})}
        proc = subprocess.Popen([*serve_command(self.settings), family, "--version", version, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        return proc.pid

    def alive(self, pid: int | None) -> bool:
        if not pid:
            return False
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children
            if waited == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def ready(self, family: str, slot: str) -> bool:
        url = f"http://127.0.0.1:{slot_port(self.settings, family, slot)}/v2/models/{family}/ready"
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, family: str, slot: str, pid: int, timeout: float) -> bool:
        """True once the slot answers ready and HAProxy's health check has seen it UP."""
        deadline = time.monotonic() + timeout
        answered = until(lambda: "exited" if not self.alive(pid) else self.ready(family, slot), timeout, 0.1)
        if answered is not True:  # never ready, or the process exited
            return False
        return self.proxy.wait_status(family, slot, "UP", timeout=max(1.0, deadline - time.monotonic()))

    def stop(self, pid: int | None, kill: bool = False, wait: float = 30.0) -> None:
        """SIGTERM (the server turns unready, drains, exits) or SIGKILL; waits for the process to go."""
        if not pid or not self.alive(pid):
            return
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not until(lambda: not self.alive(pid), wait, 0.05):
            os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ traffic and metrics

    def set_traffic(self, family: str, percent: dict[str, int]) -> None:
        """Route ``percent`` of requests to each named slot (the others get none)."""
        weights = {slot: 0 for slot in SLOTS}
        weights.update({slot: int(p) for slot, p in percent.items()})
        # raise the new weights before lowering the old ones: never a moment with nothing routable
        for slot in sorted(weights, key=lambda s: -weights[s]):
            self.proxy.set_weights(family, {slot: weights[slot]})

    def scrape(self, family: str, slot: str) -> dict[str, Counters]:
        from zmlops import auth

        url = f"http://127.0.0.1:{slot_port(self.settings, family, slot)}/metrics"
        try:
            answer = httpx.get(url, headers=auth.headers(self.settings), timeout=2)
        except httpx.HTTPError:
            return {}
        return parse(answer.text, family) if answer.status_code == 200 else {}
