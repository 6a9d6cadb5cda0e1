"""HAProxy in front of the local serving processes: weighted routing, health checks, one retry.

One frontend per model family on the family's public port (settings ``serving.ports``); behind it a
backend with three server slots (``a``, ``b``, ``c``) on fixed loopback ports, which the rollout fills
with the stable, candidate and previous versions. HAProxy sends traffic only to slots whose
``/v2/models/<family>/ready`` answers 200 (checked every ``check_interval_ms``), in proportion to their
weights, which the rollout changes at run time through the admin socket without dropping connections.
A request whose server dies under it (connection refused or reset, empty response) is retried once on
another slot.

HAProxy comes from the Debian package (`apt-get install haproxy`); the project writes its configuration
and drives it, nothing is installed system-wide.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from zmlops.settings import Settings

__all__ = ["SLOTS", "HAProxy", "slot_port"]

SLOTS = ("a", "b", "c")


def slot_port(settings: Settings, family: str, slot: str) -> int:
    """Loopback port of one server slot: the public port plus 10000, 20000 or 30000."""
    return settings.serving.ports[family] + 10_000 * (SLOTS.index(slot) + 1)


class HAProxy:
    """One haproxy process for the families of one ZM_HOME (its state lives in ``home/rollout``)."""

    def __init__(self, settings: Settings, families: tuple[str, ...]) -> None:
        self.settings = settings
        self.families = families
        self.dir = settings.home.resolve() / "rollout"
        self.socket = self.dir / "haproxy.sock"
        self.pidfile = self.dir / "haproxy.pid"
        self.config_file = self.dir / "haproxy.cfg"

    def config(self) -> str:
        r = self.settings.rollout
        host = self.settings.serving.host
        lines = [
            "# Written by delivery.haproxy; changes are lost at the next start.",
            "global",
            f"    stats socket {self.socket} mode 600 level admin",
            f"    pidfile {self.pidfile}",
            "    maxconn 4096",
            "",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 60s",
            f"    timeout server {r.proxy_server_timeout_seconds}s",
            "    timeout http-keep-alive 60s",
            "    timeout queue 5s",
            # one retry on another slot when a server dies under a request (SIGKILL, crash)
            f"    retries {r.proxy_retries}",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response response-timeout",
            "    option http-keep-alive",
            "    option http-buffer-request",
            "",
        ]
        for family in self.families:
            be = f"be_{family}"
            lines += [
                f"frontend fe_{family}",
                f"    bind {host}:{self.settings.serving.ports[family]}",
                f"    default_backend {be}",
                "",
                f"backend {be}",
                "    balance roundrobin",
                "    option httpchk",
                f"    http-check send meth GET uri /v2/models/{family}/ready",
                "    http-check expect status 200",
                # a connection error marks the server down at once (not at the next health check), so
                # the one retry goes elsewhere and the requests after it do not try the dead server
                f"    default-server inter {r.check_interval_ms} fastinter {r.check_interval_ms} "
                f"downinter {r.check_interval_ms} fall 1 rise 1 init-addr none "
                "observe layer4 error-limit 1 on-error mark-down",
            ]
            for slot in SLOTS:
                lines.append(f"    server {slot} 127.0.0.1:{slot_port(self.settings, family, slot)} check weight 0")
            lines.append("")
        return "\n".join(lines)

    # ------------------------------------------------------------------ process

    def running(self) -> bool:
        try:
            pid = int(self.pidfile.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return self.socket.exists()

    def start(self, timeout: float = 10.0) -> None:
        """Start haproxy in the background (a new session: it outlives the caller) unless it runs."""
        if self.running():
            return
        binary = shutil.which(self.settings.rollout.haproxy_binary)
        if binary is None:
            raise RuntimeError("haproxy not found: apt-get install haproxy (make drills installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config_file)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stdout}{check.stderr}")
        self.socket.unlink(missing_ok=True)
        subprocess.Popen([binary, "-f", str(self.config_file), "-D"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    def stop(self) -> None:
        try:
            os.kill(int(self.pidfile.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass
        self.socket.unlink(missing_ok=True)

    # ------------------------------------------------------------------ runtime API

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_weights(self, family: str, weights: dict[str, int]) -> None:
        """Weights (0-256) of the named slots, applied at once without touching open connections."""
        for slot, weight in weights.items():
            answer = self.command(f"set weight be_{family}/{slot} {int(weight)}").strip()
            if answer:
                raise RuntimeError(f"haproxy: set weight be_{family}/{slot}: {answer}")

    def servers(self, family: str) -> dict[str, dict[str, str]]:
        """Status (UP, DOWN, ...), weight and traffic counters of each slot, from ``show stat``."""
        text = self.command("show stat")
        header = text.splitlines()[0].lstrip("# ").split(",")
        out = {}
        for line in text.splitlines()[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == f"be_{family}" and row.get("svname") in SLOTS:
                out[row["svname"]] = row
        return out

    def wait_status(self, family: str, slot: str, status: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.servers(family).get(slot, {}).get("status", "").startswith(status):
                return True
            time.sleep(0.05)
        return False

