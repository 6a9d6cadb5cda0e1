"""The serving benchmark's in-process probes (``benchmarks.bench_serving`` runs them in the serving
environment): a service's request path, our middleware (``Edge``) to the answer, request log
and metrics, driven without an HTTP server or a load generator, so that differences of a few
microseconds a request stand out of the machine's drift.

    python -m benchmarks.bench_inprocess metrics FAMILY BODY [--prometheus-classes]
    python -m benchmarks.bench_inprocess capacity FAMILY PATH BODIES_FILE ROUNDS VARIANT_ENV_JSON

Each prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any


async def _unused(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("not a direct JSON request")


def _edge(family: str, logs: str, name: str, changes: dict[str, str] | None = None, constant: bool = False) -> Any:
    """A loaded service of ``family`` behind our middleware; ``changes``: ZM_* settings of this one."""
    from inference_services.server import Edge, _make_constant, service_class
    from zmlops.settings import Settings

    saved = dict(os.environ)
    # each instance's request log in a store of its own (a folder as a "remote" object store)
    os.environ.update({**(changes or {}), "ZM_OBJECT_STORE_URL": "file://" + os.path.join(logs, name)})
    try:
        service = service_class(family)(Settings())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    service.load()
    if constant:
        _make_constant(service)
    return Edge(_unused, service, 1 << 20)


async def _drive(edge: Any, path: str, bodies: list[bytes], n: int, start: int = 0, clients: int = 1) -> None:
    """``n`` requests, rotating through ``bodies``, from ``clients`` concurrent clients (8, as wrk's
    connections, lets rows batch as in the server)."""

    async def one(body: bytes) -> None:
        scope = {"type": "http", "method": "POST", "path": path,
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            pass

        await edge(scope, receive, send)

    async def client(c: int) -> None:
        for i in range(c, n, clients):
            await one(bodies[(start + i) % len(bodies)])

    await asyncio.gather(*(client(c) for c in range(clients)))


def _prometheus_classes() -> None:
    """Swap the request path's metrics (``inference_services.metrics``' collector-backed counters and histograms)
    for prometheus_client's own Counter and Histogram, same names, labels and buckets, in a registry of their own:
    the comparison that module's docstring gives."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from inference_services import metrics as hot

    registry = CollectorRegistry()
    for attr, value in list(vars(hot).items()):
        if isinstance(value, hot._HotMetric):
            setattr(hot, attr, Counter(value.name, value.documentation, value.labelnames, registry=registry)
                    if value.buckets is None else
                    Histogram(value.name, value.documentation, value.labelnames, buckets=value.buckets,
                              registry=registry))


def metrics(family: str, body: bytes, prometheus_classes: bool = False) -> dict[str, float]:
    """Our instrumentation's CPU per request: the same server with it on and off, alternately (with
    ``prometheus_classes``, prometheus_client's own metric classes instead of ours)."""
    if prometheus_classes:
        _prometheus_classes()
    edge = _edge(family, tempfile.mkdtemp(prefix="zm-metrics-"), "with")
    path = f"/v1/models/{family}:predict"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_drive(edge, path, [body], 1000))
    cost: dict[bool, list[float]] = {True: [], False: []}
    # 60 short alternating rounds: the machine's drift moves a round of 2,000 requests more than
    # instrumentation does (15 such rounds gave -2 to +7 us in one hour; 60 of 500, 4.7 to 6.8 us)
    for _ in range(60):
        for flag in (True, False):
            edge.instrument = edge.model.instrument = flag
            t = time.process_time()
            loop.run_until_complete(_drive(edge, path, [body], 500))
            cost[flag].append((time.process_time() - t) / 500 * 1e6)
    return {"with_us": statistics.median(cost[True]), "without_us": statistics.median(cost[False]),
            "delta_us": statistics.median([a - b for a, b in zip(cost[True], cost[False], strict=True)])}


def capacity(family: str, path: str, bodies: list[bytes], rounds: int, variant: dict[str, str]) -> dict[str, float]:
    """CPU per request of (b), the model and (given settings changes) its variant, as instances in
    this process, 8 concurrent clients, rounds of 400 requests in a rotated order; the model's and
    the variant's extra over (b) as the median of the per-round differences."""
    logs = tempfile.mkdtemp(prefix="zm-capacity-")
    edges = {"constant": _edge(family, logs, "constant", constant=True), "model": _edge(family, logs, "model")}
    if variant:
        edges["variant"] = _edge(family, logs, "variant", variant)
    loop = asyncio.new_event_loop()
    for edge in edges.values():
        loop.run_until_complete(_drive(edge, path, bodies, 800, clients=8))
    cpu: dict[str, list[float]] = {name: [] for name in edges}
    names, n = list(edges), 400
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t = time.process_time()
            loop.run_until_complete(_drive(edges[name], path, bodies, n, r * n, clients=8))
            cpu[name].append((time.process_time() - t) / n * 1e6)
    out = {f"{name}_us": statistics.median(v) for name, v in cpu.items()}
    for name in names[1:]:
        out[f"{name}_extra_us"] = statistics.median([m - c for c, m in zip(cpu["constant"], cpu[name], strict=True)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_inprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    m = sub.add_parser("metrics", help="our metrics' CPU per request (V1 body)")
    m.add_argument("family")
    m.add_argument("body", help="one V1 request body (JSON)")
    m.add_argument("--prometheus-classes", action="store_true",
                   help="measure prometheus_client's Counter and Histogram in place of our request-path metrics")
    c = sub.add_parser("capacity", help="extra CPU per request of the model (and a variant) over (b)")
    c.add_argument("family")
    c.add_argument("path", help="request path (V1 or V2)")
    c.add_argument("bodies", help="file of request bodies, one JSON per line")
    c.add_argument("rounds", type=int)
    c.add_argument("variant", help='JSON object of the variant\'s ZM_* settings ("{}": none)')
    args = parser.parse_args(argv)
    if args.probe == "metrics":
        out = metrics(args.family, args.body.encode(), args.prometheus_classes)
    else:
        with open(args.bodies, "rb") as f:
            bodies = [line for line in f.read().splitlines() if line]
        out = capacity(args.family, args.path, bodies, args.rounds, json.loads(args.variant))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
