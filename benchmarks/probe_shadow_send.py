"""How long one send of shadow copies holds a predictor's event loop, by HTTP client: the figure behind the choice
of aiohttp for ``serving.shadow_url`` (docs/benchmarks.md, "Shadow traffic").

    python -m benchmarks.probe_shadow_send [--copies 180] [--posts 300]

Not part of ``make bench``. A receiver (aiohttp's server) runs in a thread of its own; the sending thread posts one
body of ``--copies`` recommendation copies (the shape ``ServedModel._shadow_sender`` sends) ``--posts`` times with
each client on a kept-alive connection, and the CPU time of the sending thread alone per post is what the event
loop of a predictor would spend. Prints JSON: microseconds per post for httpx and aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import threading
from typing import Any

COPY = (b'{"version":"1","instances":[{"customer_id":12345,"k":10}],'
        b'"answers":[{"items":[1,2,3,4,5,6,7,8,9,10]}],"latency_ms":0.5}')


def _thread_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_THREAD)
    return used.ru_utime + used.ru_stime


def _receiver(port: int, ready: threading.Event) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"compared": 1})

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/shadow", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def _measure(url: str, body: bytes, posts: int) -> dict[str, float]:
    import aiohttp
    import httpx

    out: dict[str, float] = {}
    async with httpx.AsyncClient() as client:
        for _ in range(20):  # warm-up: the connection, the first parse
            await client.post(url, content=body)
        start = _thread_cpu()
        for _ in range(posts):
            await client.post(url, content=body)
        out["httpx_us_per_post"] = (_thread_cpu() - start) / posts * 1e6
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.post(url, data=body) as sent:
                await sent.read()
        start = _thread_cpu()
        for _ in range(posts):
            async with session.post(url, data=body) as sent:
                await sent.read()
        out["aiohttp_us_per_post"] = (_thread_cpu() - start) / posts * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=180, help="copies per post (10 ms at 18,000 requests/s)")
    parser.add_argument("--posts", type=int, default=300, help="posts timed per client")
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ready = threading.Event()
    threading.Thread(target=_receiver, args=(port, ready), daemon=True).start()
    ready.wait(30)
    body = b'{"copies":[' + b",".join([COPY] * args.copies) + b"]}"
    result: dict[str, Any] = {"copies": args.copies, "body_bytes": len(body), "posts": args.posts,
                              **asyncio.run(_measure(f"http://127.0.0.1:{port}/shadow", body, args.posts))}
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
