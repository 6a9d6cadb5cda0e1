"""A webhook sink standing in for the paging and chat services outside the machine (PagerDuty, Slack).

Alertmanager posts to it exactly as it would to them; every request is appended to a JSON-lines file
(path, headers, body), which the tests read to see which receiver an alert reached.

    python -m stack.sink --host 127.42.1.7 --port 9099 --out received.jsonl
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
from pathlib import Path
from typing import Any

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.sink", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _ok(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._ok()

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                parsed: Any = json.loads(body)
            except ValueError:
                parsed = body.decode(errors="replace")
            with lock, args.out.open("a") as f:
                f.write(json.dumps({"path": self.path, "body": parsed}) + "\n")
            self._ok()

    http.server.ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
