"""Serving benchmarks (``make bench``): each figure against baselines measured back to back.

Per model and protocol (V1, V2), single-row requests with rotating keys, prediction cache off:

- (a) a bare uvicorn/FastAPI endpoint returning a constant: the ceiling of the HTTP stack;
- (b) the same predictor class with ``--constant``: validation, batching, request log and
  metrics, answers of the real shape, but no model work (one fixed answer);
- the real model as served by default (segmentation reads its features through the
  online-feature cache, ``serving.feature_cache_size``; recommendation answers known customers
  from the ranking table computed when the version loads, ``serving.ranking_table_mb``);
- for a model whose default serving moves work out of the request, the real model again
  without it (``VARIANTS``): segmentation with the feature cache off, every request reading
  Feast's online store; recommendation without its ranking table, every request scoring the
  ALS factors. Each measures what the moved work would cost a request.

This machine's speed drifts by 20-40% within a minute (other tenants of the host), far more
than the differences measured, so the servers run side by side and are loaded in short
slices, one at a time, in a new order each round (a server's first slice after idling runs
slow, so each slice follows a warm-up second); every ratio is the median of the per-round
ratios. Figures: server CPU time per request (``/proc/<pid>/stat``) and throughput under a
closed loop of 8 connections (wrk), the CPU-bound capacity ratio ``CPU(b) / CPU(model)``, and
its steady form ``CPU(b) / (CPU(b) + extra)``, where ``extra`` is the model's CPU per request
above (b) measured in process (``_in_process_capacity``: no HTTP server, no wrk on the cores),
p50/p99 at one connection, p99 under an open loop at half the measured maximum rate (latency
counted from the scheduled send time, so a stall is not hidden; the median of three runs, each
kept), the CPU cost of our metrics,
and cold start to ready against a bare import and model load. The metrics cost is measured
twice: end to end (instrumented against uninstrumented servers, interleaved the same way) and
in process, where the request path through our middleware and predictor runs with
instrumentation on and off alternately (noise small enough to resolve 1%), divided by the
request's whole server CPU. Load runs on the same 2 cores as the servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from zmlops.console import console

__all__ = ["bench_serving", "bench_shadow"]

REPO = Path(__file__).resolve().parents[1]
SERVING_PY = REPO / ".venvs" / "serving" / "bin" / "python"
PIPELINES_ZM = REPO / ".venvs" / "pipelines" / "bin" / "zm"
TICK = os.sysconf("SC_CLK_TCK")
AUTHORIZATION = [""]  # the header wrk sends (set from ZM_HOME's local key by bench_serving)
WRK_LUA = """
local bodies = {}
local auth = os.getenv("ZM_AUTHORIZATION")
for line in io.lines(os.getenv("ZM_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = auth}, bodies[i])
end
"""

BARE_APP = """
import sys
import uvicorn
from fastapi import FastAPI, Request
app = FastAPI()
ONE = {"predictions": [{"value": 1}], "model_name": "m", "model_version": "1"}
@app.post("/v1/models/{name}:predict")
async def v1(name: str, request: Request):
    await request.body()
    return ONE
@app.post("/v2/models/{name}/infer")
async def v2(name: str, request: Request):
    await request.body()
    return {"model_name": name, "model_version": "1", "id": "1",
            "outputs": [{"name": "value", "shape": [1], "datatype": "INT64", "data": [1]}]}
@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

BARE_LOAD = """
import sys, time
t = time.perf_counter()
import kserve, fastapi, uvicorn  # the stack any KServe predictor imports
from zmlops.settings import get_settings
from training.tracking import load_estimator, alias_version
settings = get_settings()
family = sys.argv[1]
estimator = load_estimator(settings, family, alias_version(settings, family, "production"))
if family == "customer-segmentation":  # its first answer needs the online store open
    from inference_services.features import OnlineFeatures
    OnlineFeatures(settings, "customer_profile", ["frequency"], 1.0).lookup_now([0])
print(time.perf_counter() - t)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)

    def wait_ready(self, path: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"server exited: {err}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=1)
                if r.status_code == 200 and r.json().get("ready", True):
                    return time.perf_counter() - self.started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _wrk(url: str, bodies: Path, lua: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        env={**os.environ, "ZM_BODIES": str(bodies), "ZM_AUTHORIZATION": AUTHORIZATION[0]}, capture_output=True,
        text=True, check=True,
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or "Socket errors" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * scale[m.group(2)] if m else float("nan")

    return {
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
    }


def _loaded(pid: int, url: str, bodies: Path, lua: Path, connections: int, seconds: int) -> dict[str, float]:
    before = _cpu(pid)
    result = _wrk(url, bodies, lua, connections, seconds)
    result["cpu_us_per_request"] = (_cpu(pid) - before) / result["requests"] * 1e6
    return result


async def _open_loop(port: int, path: str, bodies: list[bytes], rate: float, seconds: float) -> dict[str, float]:
    """Requests sent on a fixed schedule over a pool of keep-alive connections; latency from schedule."""
    n = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = bodies[i % len(bodies)]
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Authorization: {AUTHORIZATION[0]}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append((time.perf_counter() - due) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(32)))
    lat = np.array(latencies)
    return {"rate": rate, "requests": float(n), "errors": float(errors),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def _open_loops(port: int, path: str, bodies: list[bytes], rate: float, seconds: float, runs: int) -> dict[str, Any]:
    """The open loop ``runs`` times: medians of p50 and p99 (one stall of this shared machine moved a single
    run's p99 from 2-6 ms to 38 ms), every run kept."""
    each = [asyncio.run(_open_loop(port, path, bodies, rate, seconds)) for _ in range(runs)]
    return {"rate": rate, "requests": sum(r["requests"] for r in each), "errors": sum(r["errors"] for r in each),
            "p50_ms": _median([r["p50_ms"] for r in each]), "p99_ms": _median([r["p99_ms"] for r in each]),
            "p99_ms_per_run": [round(r["p99_ms"], 2) for r in each]}


async def _slow_clients(port: int, path: str, bodies: list[bytes], rate: float, seconds: float, slow: int,
                        timeout: float) -> dict[str, Any]:
    """``slow`` clients send their headers and half a body, then nothing, while the open loop sends valid requests
    at ``rate``; each slow connection's answer and the time until the server closed it."""

    async def hold() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Authorization: {AUTHORIZATION[0]}\r\nContent-Length: 400\r\n\r\n".encode()
                     + b'{"instances": [')
        await writer.drain()
        opened = time.perf_counter()
        try:
            answer = await asyncio.wait_for(reader.read(), timeout + 30)  # until the server closes
        except TimeoutError:
            answer = b"still open"
        writer.close()
        return time.perf_counter() - opened, answer[:12]

    holders = [asyncio.create_task(hold()) for _ in range(slow)]
    await asyncio.sleep(0.5)  # every slow client has sent its headers
    valid = await _open_loop(port, path, bodies, rate, seconds)
    held = await asyncio.gather(*holders)
    closed = [s for s, _ in held]
    answers = Counter(answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1 ") else answer.decode("latin-1")
                      for _, answer in held)
    return {"slow_clients": slow, "body_timeout_s": timeout, "valid": valid, "answers_to_slow": answers,
            "closed_after_s": {"min": round(min(closed), 2), "max": round(max(closed), 2)}}


def slow_client_drill(port: int, path: str, bodies: list[bytes], rate: float, timeout: float,
                      slow: int = 200, runs: int = 3) -> dict[str, Any]:
    """Valid traffic at ``rate`` with and without ``slow`` half-sent bodies held open, side by side (alternating,
    ``runs`` times each); p99 of the valid requests in both, the median of the runs, and the ratio."""
    console.print(f"serving: {slow} slow clients holding half-sent bodies, {runs} runs ...")
    seconds = max(2.0, timeout - 2.0)  # the valid traffic runs while the slow connections are held
    alone, held = [], []
    for _ in range(runs):
        alone.append(asyncio.run(_open_loop(port, path, bodies, rate, seconds)))
        held.append(asyncio.run(_slow_clients(port, path, bodies, rate, seconds, slow, timeout)))
    p99_alone = _median([r["p99_ms"] for r in alone])
    p99_held = _median([r["valid"]["p99_ms"] for r in held])
    answers = dict(sum((r["answers_to_slow"] for r in held), Counter()))
    return {"rate": rate, "slow_clients": slow, "body_timeout_s": timeout, "runs": runs,
            "p99_ms_alone": round(p99_alone, 2), "p99_ms_with_slow_clients": round(p99_held, 2),
            "p99_ratio": round(p99_held / p99_alone, 3),
            "valid_errors": sum(r["valid"]["errors"] for r in held), "answers_to_slow": answers,
            "slow_closed_after_s_max": max(r["closed_after_s"]["max"] for r in held),
            "slow_closed_after_s_min": min(r["closed_after_s"]["min"] for r in held)}


def _bodies(family: str, protocol: str, customers: list[int], categories: list[str]) -> list[dict[str, Any]]:
    if family == "demand-forecast":
        rows = [{"category": c, "horizon": 8} for c in categories]
    else:
        rows = [{"customer_id": c, "k": 10} if family == "product-recommendation" else {"customer_id": c}
                for c in customers]
    if protocol == "v1":
        return [{"instances": [r]} for r in rows]
    types = {"category": "BYTES", "horizon": "INT64", "customer_id": "INT64", "k": "INT32"}
    return [{"inputs": [{"name": k, "datatype": types[k], "shape": [1], "data": [v]} for k, v in r.items()]}
            for r in rows]


def _prepare_home(home: Path) -> None:
    if (home / "mlflow.db").exists():
        return
    env = {**os.environ, "ZM_HOME": str(home)}
    for argv in (["data", "ingest", "--customers", "1000", "--products", "600", "--seed", "11"],
                 ["train", "--reason", "bench"]):
        subprocess.run([str(PIPELINES_ZM), *argv], env=env, check=True, capture_output=True)


def server_env(home: Path) -> dict[str, str]:
    """The benchmark servers' environment: one BLAS thread, no registry polling, the prediction cache off."""
    return {**os.environ, "ZM_HOME": str(home), "OPENBLAS_NUM_THREADS": "1", "ZM_SERVING__POLL_SECONDS": "0",
            "ZM_SERVING__CACHE_SIZE": "0"}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _interleaved(servers: dict[str, Proc], path: str, bodies: Path, lua: Path, rounds: int,
                 seconds: int) -> dict[str, list[dict[str, float]]]:
    """Closed-loop slices (8 connections), one server at a time, the order rotated each round."""
    names = list(servers)
    slices: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            server = servers[name]
            url = f"http://127.0.0.1:{server.port}{path}"
            _wrk(url, bodies, lua, 8, 1)  # warm-up: a server that sat idle answers its first second slowly
            slices[name].append(_loaded(server.proc.pid, url, bodies, lua, 8, seconds))
    return slices


def _summary(slices: list[dict[str, float]]) -> dict[str, Any]:
    return {"cpu_us_per_request": _median([s["cpu_us_per_request"] for s in slices]),
            "rps": _median([s["rps"] for s in slices]),
            "p50_ms": _median([s["p50_ms"] for s in slices]), "p99_ms": _median([s["p99_ms"] for s in slices]),
            "cpu_us_per_slice": [round(s["cpu_us_per_request"], 1) for s in slices]}


def _per_round(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> float:
    return _median(_ratios(a, b, key))


def _ratios(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(a, b, strict=True)]


# Families whose default serving keeps work out of the request get a fourth server without it:
# (suffix of its figures, what that server's settings change, what its rows are called in reports).
VARIANTS: dict[str, tuple[str, dict[str, str], str]] = {
    "customer-segmentation": ("store_reads", {"ZM_SERVING__FEATURE_CACHE_SIZE": "0"},
                              "feature cache / a store read per request"),
    "product-recommendation": ("scored_per_request", {"ZM_SERVING__RANKING_TABLE_MB": "0"},
                               "ranking table / the factors scored per request"),
}


def _start(family: str, env: dict[str, str], *args: str, cpus: str | None = None, idle: bool = False) -> Proc:
    """A predictor of ``family`` on a free port; ``cpus`` (taskset's list, e.g. "0") pins it, every thread, to those
    CPUs; ``idle`` runs it at idle priority (``SCHED_IDLE``: only when nothing else on its CPUs wants to run)."""
    port = _port()
    argv = [str(SERVING_PY), "-m", "inference_services.server", family, "--port", str(port), *args]
    if idle:
        argv = ["chrt", "--idle", "0", *argv]
    return Proc(["taskset", "-c", cpus, *argv] if cpus else argv, env, port)


def _setup(home: Path, section: str) -> tuple[Path, dict[str, str], list[int], list[str], Path, Path]:
    """What a serving benchmark needs: the trained registry under ``home``, the servers' environment, the
    request key (``AUTHORIZATION``), 500 known customers and the categories to ask about, a work folder with wrk's
    script. Returns (home, env, customers, categories, work, lua)."""
    import pandas as pd

    from zmlops import auth
    from zmlops.settings import Settings

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    home = home.resolve()
    console.print(f"{section}: preparing models under {home} ...")
    _prepare_home(home)
    AUTHORIZATION[0] = auth.headers(Settings(home=home))["authorization"]  # the bare server ignores it
    customers = [int(c) for c in pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet",
                                                 columns=["customer_id"])["customer_id"].unique()[:500]]
    categories = sorted(pd.read_parquet(home / "feast" / "sources" / "category_week_features.parquet",
                                        columns=["category"])["category"].unique())
    work = Path(tempfile.mkdtemp(prefix=f"zm-{section}-"))
    lua = work / "rotate.lua"
    lua.write_text(WRK_LUA)
    return home, server_env(home), customers, categories, work, lua


def bench_serving(home: Path, seconds: int = 2, families: list[str] | None = None, rounds: int = 7) -> dict[str, Any]:
    from zmlops.settings import Settings

    home, env, customers, categories, work, lua = _setup(home, "serving")
    bare_script = work / "bare.py"
    bare_script.write_text(BARE_APP)
    results: dict[str, Any] = {"seconds_per_slice": seconds, "rounds": rounds, "models": {}}
    try:
        for family in families or ["demand-forecast", "customer-segmentation", "product-recommendation"]:
            entry: dict[str, Any] = {}
            for protocol in ("v1", "v2"):
                path = f"/v1/models/{family}:predict" if protocol == "v1" else f"/v2/models/{family}/infer"
                bodies = work / f"{family}-{protocol}.jsonl"
                payloads = _bodies(family, protocol, customers, categories)
                bodies.write_text("\n".join(json.dumps(b) for b in payloads) + "\n")
                console.print(f"serving: {family} {protocol}: (a), (b) and the model, {rounds} interleaved rounds ...")
                port = _port()
                servers = {"bare_fastapi": Proc([str(SERVING_PY), str(bare_script), str(port)], env, port),
                           "constant_predictor": _start(family, env, "--constant"), "model": _start(family, env)}
                if family in VARIANTS:
                    suffix, changes, _ = VARIANTS[family]
                    servers[f"model_{suffix}"] = _start(family, {**env, **changes})
                try:
                    servers["bare_fastapi"].wait_ready("/v2/health/ready")
                    for name in servers:
                        if name != "bare_fastapi":
                            servers[name].wait_ready(f"/v2/models/{family}/ready")
                    slices = _interleaved(servers, path, bodies, lua, rounds, seconds)
                    runs: dict[str, Any] = {name: _summary(s) for name, s in slices.items()}
                    runs["ratios"] = {
                        "cpu_vs_bare": _per_round(slices["model"], slices["bare_fastapi"], "cpu_us_per_request"),
                        "rps_vs_constant": _per_round(slices["model"], slices["constant_predictor"], "rps"),
                        "capacity_vs_constant": _per_round(slices["constant_predictor"], slices["model"],
                                                           "cpu_us_per_request"),
                        "rps_vs_constant_per_round": [round(x, 3) for x in _ratios(
                            slices["model"], slices["constant_predictor"], "rps")],
                        "cpu_vs_bare_per_round": [round(x, 3) for x in _ratios(
                            slices["model"], slices["bare_fastapi"], "cpu_us_per_request")],
                    }
                    if family in VARIANTS:
                        suffix = VARIANTS[family][0]
                        other = slices[f"model_{suffix}"]
                        runs["ratios"][f"rps_vs_constant_{suffix}"] = _per_round(
                            other, slices["constant_predictor"], "rps")
                        runs["ratios"][f"capacity_vs_constant_{suffix}"] = _per_round(
                            slices["constant_predictor"], other, "cpu_us_per_request")
                        runs["ratios"][f"extra_cpu_us_{suffix}"] = _median(
                            [o["cpu_us_per_request"] - m["cpu_us_per_request"]
                             for o, m in zip(other, slices["model"], strict=True)])
                    # the steady form of the CPU capacity: (b)'s server CPU against it plus the model's extra
                    # CPU measured in process (as the metrics cost is: the server slices swing by +-30%)
                    runs["in_process"] = _in_process_capacity(family, path, bodies, env, max(rounds * 4, 8))
                    const_us = runs["constant_predictor"]["cpu_us_per_request"]
                    runs["ratios"]["capacity_in_process"] = const_us / (const_us + runs["in_process"]["model_extra_us"])
                    if family in VARIANTS:
                        runs["ratios"][f"capacity_in_process_{VARIANTS[family][0]}"] = \
                            const_us / (const_us + runs["in_process"]["variant_extra_us"])
                    model = servers["model"]
                    url = f"http://127.0.0.1:{model.port}{path}"
                    one = _wrk(url, bodies, lua, 1, max(3, seconds + 1))
                    runs["model"]["one_connection"] = {"p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"],
                                                       "rps": one["rps"]}
                    raw = [json.dumps(b).encode() for b in payloads]
                    runs["model"]["open_loop_half_max"] = _open_loops(model.port, path, raw, runs["model"]["rps"] / 2,
                                                                      max(4, 2 * seconds), min(3, rounds))
                    if protocol == "v1":  # the slow-client drill, on the served model at half its maximum
                        runs["model"]["slow_clients"] = slow_client_drill(
                            model.port, path, raw, runs["model"]["rps"] / 2,
                            Settings(home=home).serving.body_timeout_seconds, runs=min(3, rounds))
                finally:
                    for server in servers.values():
                        server.stop()
                entry[protocol] = runs
            entry["metrics_cpu_overhead"] = _metrics_cost(family, env, work, lua, rounds, seconds)
            entry["cold_start"] = _cold_start(family, env)
            results["models"][family] = entry
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _stage_a_copy(home: Path, family: str) -> str:
    """A second registered version of production's artifact behind ``staging`` (the shadow's alias): the shadow
    then does production's work exactly, and its answers agree. Returns that version."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    production = client.get_model_version_by_alias(family, "production")
    try:
        staged = client.get_model_version_by_alias(family, "staging")
        if str(staged.version) != str(production.version):
            return str(staged.version)
    except mlflow.exceptions.MlflowException:
        pass
    copy = client.create_model_version(family, source=client.get_model_version_download_uri(
        family, production.version), run_id=production.run_id)
    client.set_registered_model_alias(family, "staging", copy.version)
    return str(copy.version)


def _shadow_counts(server: Proc, family: str) -> dict[str, float]:
    """``zm_shadow_requests_total`` of ``family`` on ``server`` by result (agree, differ, error, dropped)."""
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", headers={"authorization": AUTHORIZATION[0]},
                     timeout=5).text
    out: dict[str, float] = {}
    for m in re.finditer(r'^zm_shadow_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("model") == family:
            out[labels["result"]] = out.get(labels["result"], 0.0) + float(m.group(2))
    return out


PINNED = ("0", "1")  # the shadow benchmark's cores: production's, and the load generator's and shadow predictor's


def bench_shadow(home: Path, families: list[str] | None = None, runs: int = 9, seconds: float = 3.0,
                 shares: tuple[float, ...] = (1.0, 0.25)) -> dict[str, Any]:
    """Does shadow traffic slow production? Per family, predictors side by side: production alone; production
    mirroring each of ``shares`` of its answered requests to a staged copy it loads itself
    (``serving.shadow_alias``, ``serving.shadow_share``); and production sending every copy to a shadow predictor,
    a separate process serving the staged copy (``serving.shadow_url``), which answers and compares them. Each
    has CPU of its own, as pods on a cluster: production on one core (``PINNED``), the load generator and the
    shadow predictor on the other, the shadow predictor at idle priority (``SCHED_IDLE``) so that it runs only in
    the load generator's idle time: on a cluster the clients do not share its CPU, and a load generator it
    slows reports its own delay as production's latency. The maximum rate is production's alone (wrk, 8
    connections, the median of three slices); at half of it the open loop runs against each server in turn,
    ``runs`` rounds, the order rotated. p99
    is counted from each request's scheduled send; each configuration's figure is the median over the rounds of its
    p99 divided by production alone's in the same round (this machine's speed drifts between rounds far more than
    the effect), with the server CPU per request and the copies the shadow answered and dropped."""
    home, env, customers, categories, work, lua = _setup(home, "shadow")
    out: dict[str, Any] = {"runs": runs, "seconds_per_run": seconds, "shares": list(shares), "models": {},
                           "cores": {"production": PINNED[0], "load and shadow predictor": PINNED[1]}}
    allowed = os.sched_getaffinity(0)
    if not {int(c) for c in PINNED} <= allowed:
        raise RuntimeError(f"the shadow benchmark pins production and the load to cores {', '.join(PINNED)}; this "
                           f"process may use {sorted(allowed)}")
    try:
        for family in families or ["product-recommendation", "demand-forecast", "customer-segmentation"]:
            out["models"][family] = _shadow_family(home, family, env, work, lua, customers, categories, runs,
                                                   seconds, shares)
    finally:
        os.sched_setaffinity(0, allowed)
        shutil.rmtree(work, ignore_errors=True)
    return out


def _shadow_family(home: Path, family: str, env: dict[str, str], work: Path, lua: Path, customers: list[int],
                   categories: list[str], runs: int, seconds: float, shares: tuple[float, ...]) -> dict[str, Any]:
    staged = _stage_a_copy(home, family)
    path = f"/v1/models/{family}:predict"
    payloads = _bodies(family, "v1", customers, categories)
    bodies = work / f"{family}.jsonl"
    bodies.write_text("\n".join(json.dumps(b) for b in payloads) + "\n")
    raw = [json.dumps(b).encode() for b in payloads]
    console.print(f"shadow: {family}: production alone and mirroring {', '.join(f'{x:g}' for x in shares)} of its "
                  f"requests to v{staged}, {runs} runs each ...")
    # Each pod its own CPU, as on a cluster: production (every configuration) on core 0; the load generator (this
    # process, wrk) and the shadow predictor, the candidate in a process of its own, on core 1, the shadow predictor
    # at idle priority: the load generator's clock must not wait for the shadow's work (the copies answered and
    # dropped, in the results, show whether the shadow kept up in the time left to it)
    production, rest = PINNED
    os.sched_setaffinity(0, {int(rest)})
    target = _start(family, env, "--alias", "staging", cpus=rest, idle=True)
    servers = {"alone": _start(family, env, cpus=production)} | {
        f"in process, {share:g}": _start(family, {**env, "ZM_SERVING__SHADOW_ALIAS": "staging",
                                                  "ZM_SERVING__SHADOW_SHARE": str(share)}, cpus=production)
        for share in shares} | {
        "shadow predictor, 1": _start(family, {**env, "ZM_SERVING__SHADOW_URL": f"http://127.0.0.1:{target.port}"},
                                      cpus=production)}
    names = list(servers)
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for server in [*servers.values(), target]:
            server.wait_ready(f"/v2/models/{family}/ready")
        deadline = time.monotonic() + 120
        for name in [n for n in names[1:] if n.startswith("in process")]:
            while staged not in httpx.get(f"http://127.0.0.1:{servers[name].port}/v2/models/{family}",
                                          headers={"authorization": AUTHORIZATION[0]}, timeout=5
                                          ).json().get("versions", []):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{family}: the shadow version v{staged} did not load")
                time.sleep(0.2)
        for server in servers.values():  # warm-up: a first answer of each version runs slow
            _wrk(f"http://127.0.0.1:{server.port}{path}", bodies, lua, 8, 1)
        url = f"http://127.0.0.1:{servers['alone'].port}{path}"
        rps = _median([_wrk(url, bodies, lua, 8, 2)["rps"] for _ in range(3)])
        rate = rps / 2
        counted = {name: target if name.startswith("shadow predictor") else servers[name] for name in names[1:]}
        before = {name: _shadow_counts(counted[name], family) for name in names[1:]}
        for r in range(runs):
            for name in names[r % len(names):] + names[: r % len(names)]:
                cpu = _cpu(servers[name].proc.pid)
                run = asyncio.run(_open_loop(servers[name].port, path, raw, rate, seconds))
                time.sleep(0.5)  # the shadow's queue drains: its work is in the CPU figure
                run["cpu_us"] = (_cpu(servers[name].proc.pid) - cpu) / run["requests"] * 1e6
                measured[name].append(run)
        after = {name: _shadow_counts(counted[name], family) for name in names[1:]}
    finally:
        for server in [*servers.values(), target]:
            server.stop()
    p99 = {name: _median([m["p99_ms"] for m in measured[name]]) for name in names}
    result: dict[str, Any] = {
        "max_rps_alone": round(rps, 1), "rate": round(rate, 1), "shadow_version": staged,
        "alone": {"p50_ms": round(_median([m["p50_ms"] for m in measured["alone"]]), 3),
                  "p99_ms": round(p99["alone"], 3),
                  "cpu_us_per_request": round(_median([m["cpu_us"] for m in measured["alone"]]), 1),
                  "p99_ms_per_run": [round(m["p99_ms"], 2) for m in measured["alone"]]},
        "mirroring": {}, "target": 1.10,
        "errors": sum(m["errors"] for runs_of in measured.values() for m in runs_of)}
    for name in names[1:]:
        copies = {k: after[name].get(k, 0.0) - before[name].get(k, 0.0) for k in set(after[name]) | set(before[name])}
        sent = sum(m["requests"] for m in measured[name])
        result["mirroring"][name] = {
            "p50_ms": round(_median([m["p50_ms"] for m in measured[name]]), 3), "p99_ms": round(p99[name], 3),
            "p99_ratio": round(_median([m["p99_ms"] / a["p99_ms"] for m, a in zip(measured[name], measured["alone"],
                                                                                   strict=True)]), 3),
            "p99_ratio_of_medians": round(p99[name] / p99["alone"], 3),
            "cpu_us_per_request": round(_median([m["cpu_us"] for m in measured[name]]), 1),
            "p99_ms_per_run": [round(m["p99_ms"], 2) for m in measured[name]],
            "requests": sent, "copies": {k: int(v) for k, v in sorted(copies.items())},
            "copies_per_request": round(sum(v for k, v in copies.items() if k != "dropped") / sent, 3)}
    return result


def _metrics_cost(family: str, env: dict[str, str], work: Path, lua: Path, rounds: int,
                  seconds: int) -> dict[str, Any]:
    """Our instrumentation's share of a V1 request's server CPU, end to end and in process."""
    console.print(f"serving: {family} metrics cost ...")
    path = f"/v1/models/{family}:predict"
    bodies = work / f"{family}-v1.jsonl"
    servers = {"with": _start(family, env), "without": _start(family, {**env, "ZM_SERVING__INSTRUMENT": "false"})}
    try:
        for server in servers.values():
            server.wait_ready(f"/v2/models/{family}/ready")
        slices = _interleaved(servers, path, bodies, lua, rounds, seconds)
    finally:
        for server in servers.values():
            server.stop()
    probe = json.loads(subprocess.run(
        [str(SERVING_PY), "-m", "benchmarks.bench_inprocess", "metrics", family, bodies.read_text().splitlines()[0]],
        env=env, capture_output=True, text=True, check=True, cwd=REPO).stdout.strip().splitlines()[-1])
    request_us = _median([s["cpu_us_per_request"] for s in slices["with"]])
    return {"with_us": request_us, "without_us": _median([s["cpu_us_per_request"] for s in slices["without"]]),
            "end_to_end_ratio": _per_round(slices["with"], slices["without"], "cpu_us_per_request"),
            "in_process": probe, "ratio": 1 + probe["delta_us"] / request_us}


def _in_process_capacity(family: str, path: str, bodies: Path, env: dict[str, str], rounds: int) -> dict[str, float]:
    """The model's (and its variant's) CPU per request above (b), with no HTTP server and no load
    generator: (b), the model and the variant as instances in one process, their request path (our
    middleware, validation, batching, answer, request log, metrics) driven by 8 concurrent clients
    in rounds of 400 requests, the order rotated each round; the median of the per-round
    differences. The HTTP server's share per request, which (b) and the model spend alike, is left
    out; so is wrk's competition for the cores, which makes the server slices swing."""
    console.print(f"serving: {family} capacity in process ...")
    changes = json.dumps(VARIANTS[family][1]) if family in VARIANTS else "{}"
    done = subprocess.run([str(SERVING_PY), "-m", "benchmarks.bench_inprocess", "capacity", family, path, str(bodies),
                           str(rounds), changes], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return {k: round(v, 3) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def _cold_start(family: str, env: dict[str, str]) -> dict[str, float]:
    """Start to ready of the server alone, against importing the stack and loading the model in a script."""
    console.print(f"serving: {family} cold start ...")
    ready = []
    for _ in range(2):
        server = _start(family, env)
        try:
            ready.append(server.wait_ready(f"/v2/models/{family}/ready"))
        finally:
            server.stop()
    bare_load = []
    for _ in range(2):
        done = subprocess.run([str(SERVING_PY), "-c", BARE_LOAD, family], env=env, capture_output=True,
                              text=True, check=True, cwd=REPO)
        bare_load.append(float(done.stdout.strip().splitlines()[-1]))
    out = {"server_to_ready_s": min(ready), "bare_import_and_load_s": min(bare_load)}
    out["ratio"] = out["server_to_ready_s"] / out["bare_import_and_load_s"]
    return out


def summary_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for family, entry in results["models"].items():
        for protocol in ("v1", "v2"):
            r = entry[protocol]
            bare, const, model, ratios = r["bare_fastapi"], r["constant_predictor"], r["model"], r["ratios"]
            rows.append([
                family, protocol,
                f"{model['cpu_us_per_request']:.0f} / {bare['cpu_us_per_request']:.0f}",
                f"{ratios['cpu_vs_bare']:.2f}",
                f"{model['rps']:.0f} / {const['rps']:.0f}",
                f"{ratios['rps_vs_constant']:.2f} ({ratios['capacity_vs_constant']:.2f}; "
                f"{ratios['capacity_in_process']:.2f})",
                f"{model['one_connection']['p99_ms']:.2f}",
                f"{model['open_loop_half_max']['p99_ms']:.2f} @ {model['open_loop_half_max']['rate']:.0f}/s",
            ])
    return rows


def variant_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Per model with a fourth server (``VARIANTS``): against (b) as served and without the moved work."""
    rows = []
    for family, entry in results["models"].items():
        if family not in VARIANTS:
            continue
        suffix, _, label = VARIANTS[family]
        for protocol in ("v1", "v2"):
            r = entry[protocol]
            ratios = r["ratios"]
            served = (f"{ratios['rps_vs_constant']:.2f} ({ratios['capacity_vs_constant']:.2f}; "
                      f"{ratios['capacity_in_process']:.2f})")
            other = (f"{ratios[f'rps_vs_constant_{suffix}']:.2f} ({ratios[f'capacity_vs_constant_{suffix}']:.2f}; "
                     f"{ratios[f'capacity_in_process_{suffix}']:.2f})")
            rows.append([family, protocol, label, served, other,
                         f"{ratios[f'extra_cpu_us_{suffix}']:.0f} / {r[f'model_{suffix}']['cpu_us_per_request']:.0f}"])
    return rows


if __name__ == "__main__":  # pragma: no cover
    out = bench_serving(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".zm/bench/serving"))
    print(json.dumps(out, indent=2))
