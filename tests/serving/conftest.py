"""Fixtures for the serving tests: a trained registry, and real KServe server processes.

The serving environment cannot train (no DVC, no Great Expectations): the registry is
built once per session by the pipelines environment's ``zm`` (simulated data of test size,
ingest, train), exactly as an operator would; the servers then read it over MLflow and Feast.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINES_ZM = REPO / ".venvs" / "pipelines" / "bin" / "zm"
FAMILIES = ("demand-forecast", "customer-segmentation", "product-recommendation")
# One valid V1 row per family, every field given and in range (the malformed corpus and the fuzzers vary it).
VALID_ROWS: dict[str, dict[str, object]] = {
    "demand-forecast": {"category": "kitchen", "horizon": 4},
    "customer-segmentation": {"frequency": 4.0, "tenure_days": 90.0, "basket_lines": 10.0, "units_per_line": 5.0,
                              "unit_price": 2.0},
    "product-recommendation": {"customer_id": 12345, "k": 5},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZM_")}
    env.update({"ZM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                "FEAST_USAGE": "False", "OPENBLAS_NUM_THREADS": "1", "ZM_REQUEST_LOG__FLUSH_SECONDS": "0.5",
                "ZM_SERVING__BODY_TIMEOUT_SECONDS": "3", **extra})
    return env


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ZM_HOME with one simulated data version and the three families trained and in production."""
    if not PIPELINES_ZM.exists():
        pytest.fail(f"{PIPELINES_ZM} is missing: run `make envs`")
    root = tmp_path_factory.mktemp("serving-home")
    env = _env(root)
    for argv in (
        ["data", "ingest", "--customers", "400", "--products", "150", "--weeks", "70", "--seed", "11"],
        ["train", "--reason", "serving-tests"],
    ):
        done = subprocess.run([str(PIPELINES_ZM), *argv], env=env, capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


@dataclass
class Server:
    family: str
    home: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    scheme: str = "http"
    verify: str | bool = True  # for https: the CA bundle the test trusts

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self._log() as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inference_services.server", self.family, "--port", str(self.port), *self.args],
                env=_env(self.home, ZM_SERVING__POLL_SECONDS="1", **self.env),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait(lambda: httpx.get(f"{self.url}/v2/health/live", timeout=1, verify=self.verify).status_code == 200,
                  300, "live")  # a hang guard (see wait_ready)
        return self

    def _log(self) -> IO[bytes]:
        """The server's output in a file (readable while it runs; a pipe nobody reads can fill and block it)."""
        self.log_path = Path(tempfile.mkstemp(prefix=f"zm-{self.family}-", suffix=".log")[1])
        return self.log_path.open("wb")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path is not None else ""

    @property
    def auth(self) -> dict[str, str]:
        """The local profile's client key for these servers (ZM_HOME/secrets, zmlops.auth)."""
        from zmlops import auth
        from zmlops.settings import Settings

        return auth.headers(Settings(home=self.home))

    def ready(self) -> bool:
        r = httpx.get(f"{self.url}/v2/models/{self.family}/ready", timeout=2, verify=self.verify)
        return r.status_code == 200 and bool(r.json().get("ready"))

    def wait(self, check: object, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                out = self.output()
                raise AssertionError(f"{self.family} server exited ({self.proc.returncode}) before {what}:\n{out}")
            try:
                if check():  # type: ignore[operator]
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.family} server not {what} within {seconds} s:\n{self.output()[-3000:]}")

    # A guard against a hang, not a speed check: under `make test` four runs share two cores and the serving
    # run yields to the others (nice), so a server's imports can take minutes.
    def wait_ready(self, seconds: float = 300) -> Server:
        self.wait(self.ready, seconds, "ready")
        return self

    def stop(self) -> str:
        """SIGTERM, wait for the process (not the port); returns its output."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()


@pytest.fixture(scope="session")
def servers(home: Path) -> Iterator[dict[str, Server]]:
    """The three families serving ``production``, started together once for every module that uses them (their
    tests tell their own requests apart: ids, metric deltas), stopped at the end of the session. Shadow traffic goes
    to the ``staging`` version where a test stages one that is not production (the session's own staging is)."""
    started = {f: Server(f, home, env={"ZM_SERVING__SHADOW_ALIAS": "staging"}).start() for f in FAMILIES}
    try:
        for s in started.values():
            s.wait_ready()
        yield started
    finally:
        for s in started.values():
            s.stop()


def write_profile(home: Path, customer: int, values: dict[str, float]) -> None:
    """Write one customer's ``customer_profile`` features through Feast, outside materialization (a push)."""
    import datetime as dt

    import pandas as pd

    from training.features.store import open_store
    from zmlops.settings import Settings

    store = open_store(Settings(home=home))
    frame = pd.DataFrame([{"customer_id": customer, "event_timestamp": dt.datetime.now(dt.UTC), **values}])
    store.write_to_online_store("customer_profile", frame)


def record_materialization(home: Path) -> None:
    """A Feast materialization of a window with no rows: the registry records it, the store keeps its values."""
    import datetime as dt

    from training.features.store import materialize
    from zmlops.settings import Settings

    materialize(Settings(home=home), dt.datetime(2001, 1, 2, tzinfo=dt.UTC), days=1)


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: `make test` installs it (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[object]:
    """A real Prometheus (Debian's ``prometheus``) on 127.0.0.1; call the yielded function with servers to scrape
    them every second with their key, as the chart's PodMonitor does. Yields the start function; its result is the
    base URL."""
    import json

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs it (apt-get install prometheus)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*scraped: Server) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        token = scraped[0].auth["authorization"].split(" ", 1)[1]
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "predictors", "authorization": {"credentials": token},
                                "static_configs": [{"targets": [s.url.split("//", 1)[1] for s in scraped]}]}]}))
        procs.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
                if targets and all(t["health"] == "up" for t in targets):
                    return url
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise RuntimeError("Prometheus did not scrape the servers within 30 s")

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
