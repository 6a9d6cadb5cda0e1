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
from pathlib import Path

from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["SLOTS", "HAProxy", "slot_port"]

SLOTS = ("a", "b", "c")
CONFIG = Path(__file__).with_name("haproxy.cfg.j2")  # the configuration, a Jinja2 template


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
        """haproxy.cfg from its Jinja2 template (``haproxy.cfg.j2`` beside this module)."""
        import jinja2

        env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,  # noqa: S701 - not HTML
                                 keep_trailing_newline=False)
        template = env.from_string(CONFIG.read_text())
        families = [{"name": f, "port": self.settings.serving.ports[f],
                     "slots": [(slot, slot_port(self.settings, f, slot)) for slot in SLOTS]} for f in self.families]
        return template.render(socket=self.socket, pidfile=self.pidfile, rollout=self.settings.rollout,
                               host=self.settings.serving.host, families=families)

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
        if not until(self.running, timeout, 0.05):
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
        return bool(until(lambda: self.servers(family).get(slot, {}).get("status", "").startswith(status),
                          timeout, 0.05))

