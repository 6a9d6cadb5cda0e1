"""The harness's kubelet: starts the topology's processes, restarts those that die, answers a control API.

It runs detached (``python -m stack up`` starts it; ``python -m stack down`` stops it) and does what the
installer and the cluster would: creates the Secrets, starts the backing services and prepares them
(databases, buckets, the data registry's bare repository), renders the chart, runs Airflow's migration
and user jobs, starts every workload with a restart policy of Always (doubling back-off up to 30 s),
configures Prometheus and Alertmanager from the chart's objects, and probes readiness.

Control API on 127.0.0.1 (its port is in ``state.json``): ``GET /status``; ``POST /restart``
``{"names": [...], "wipe": true}`` stops processes, deletes their working directories (their disks)
and starts them again; ``POST /shutdown``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

from stack import backing, hosts
from stack.backing import BUCKETS, Addresses
from stack.manifests import Manifests
from stack.topology import STACK_VALUES, Layout, Spec, backing_specs, monitoring_specs, plan, render_chart, worker_env
from zmlops.polling import until

__all__ = ["Kubelet", "main"]


class Process:
    """One supervised process (a pod's container, a backing service or an Airflow component)."""

    def __init__(self, spec: Spec, layout: Layout) -> None:
        self.spec = spec
        self.layout = layout
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.next_start = 0.0
        self.backoff = 1.0
        self.stopped = True
        self.ready = False
        self.log: IO[bytes] | None = None
        self.cpu_before = self.cpu_now = 0.0

    @property
    def workdir(self) -> Path:
        return self.layout.pod_dir(self.spec.pod or self.spec.name)

    def start(self) -> None:
        if self.spec.workdir:  # the pod's disk: its emptyDir volumes, created empty
            for volume in ("tmp", "home", *self.spec.volumes):
                (self.workdir / volume).mkdir(parents=True, exist_ok=True)
            for relative, content in self.spec.files.items():  # secret volumes: the owner reads them
                path = self.workdir / relative
                path.unlink(missing_ok=True)
                path.write_text(content)
                path.chmod(0o400)
        cwd = self.workdir if self.spec.workdir else self.layout.services
        cwd.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        self.log = (self.layout.logs / f"{self.spec.name}.log").open("ab")
        argv = list(self.spec.argv)
        if self.spec.user:
            argv = ["runuser", "-u", self.spec.user, "--", *argv]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=self.spec.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.stopped = False
        self.ready = False
        self.cpu_before += self.cpu_now
        self.cpu_now = 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self.terminate()
        self.reap()

    def terminate(self) -> None:
        """SIGTERM to the process group, as the kubelet does when a pod is deleted; `reap` waits."""
        self.stopped = True
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def reap(self) -> None:
        """Wait out the grace period (``stop_seconds``), then SIGKILL."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=self.spec.stop_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.log is not None:
            self.log.close()
        self.ready = False

    def wipe(self) -> None:
        """Delete the working directory: everything this process kept on its own disk."""
        if self.spec.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def probe(self) -> bool:
        target = self.spec.ready
        if target is None:
            self.ready = self.alive()
        elif target.startswith("tcp://"):
            host, port = target[6:].rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                self.ready = self.alive()
            except OSError:
                self.ready = False
        else:
            try:
                with urllib.request.urlopen(target, timeout=2) as r:  # noqa: S310 - the topology's own address
                    self.ready = 200 <= r.status < 400 and self.alive()
            except OSError:
                self.ready = False
        return self.ready

    def sample(self) -> int:
        """Sample the process tree: returns its memory, keeps its CPU time for ``cpu_seconds``."""
        if not self.alive():
            return 0
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            tree = [root, *root.children(recursive=True)]
            rss: int = sum(p.memory_info().rss for p in tree)
            times = [p.cpu_times() for p in tree]
        except psutil.Error:
            return 0
        # live processes, plus the children each has reaped (an Airflow task process, a gunicorn worker)
        self.cpu_now = sum(t.user + t.system + t.children_user + t.children_system for t in times)
        return rss

    @property
    def cpu_seconds(self) -> float:
        """CPU time of every incarnation of this process (sampled every few seconds while it runs)."""
        return self.cpu_before + self.cpu_now

    def status(self) -> dict[str, Any]:
        return {"name": self.spec.name, "group": self.spec.group, "ip": self.spec.ip, "ready": self.ready,
                "alive": self.alive(), "restarts": self.restarts, "pid": self.proc.pid if self.proc else None,
                "workdir": str(self.workdir) if self.spec.workdir else None,
                "log": str(self.layout.logs / f"{self.spec.name}.log"), "cpu_seconds": round(self.cpu_seconds, 1)}


class Kubelet:
    def __init__(self, layout: Layout, extra_values: list[Path]) -> None:
        self.layout = layout
        self.extra_values = extra_values
        self.procs: dict[str, Process] = {}
        self.lock = threading.RLock()
        self.phase = "starting"
        self.error: str | None = None
        self.peak_rss = 0
        self.started = time.monotonic()
        self.shutdown = threading.Event()

    # ---------------------------------------------------------------- bring-up
    def _add(self, specs: list[Spec]) -> None:
        for spec in specs:
            self.procs[spec.name] = Process(spec, self.layout)
            self.procs[spec.name].start()

    def _wait(self, names: list[str], seconds: float) -> None:
        def started() -> bool:
            if all(self.procs[n].probe() for n in names):
                return True
            dead = [n for n in names if not self.procs[n].alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while starting: see {self.layout.logs}")
            return False

        if not until(started, seconds, 0.3):
            raise TimeoutError(f"not ready after {seconds:.0f} s: {[n for n in names if not self.procs[n].ready]}")

    def _secrets(self) -> dict[str, dict[str, str]]:
        """The Secrets of this topology: kept across restarts; a Secret a newer harness adds is created."""
        loaded: dict[str, dict[str, str]] = {}
        if self.layout.secrets.exists():
            loaded = json.loads(self.layout.secrets.read_text())
        created = {name: value for name, value in backing.new_secrets().items() if name not in loaded}
        if created:
            self.layout.secrets.write_text(json.dumps({**loaded, **created}, indent=2))
            self.layout.secrets.chmod(0o600)
        return {**loaded, **created}

    def bring_up(self) -> None:
        layout = self.layout
        secrets = self._secrets()
        self.phase = "backing services"
        pg_data = layout.services / "postgresql" / "data"
        if not pg_data.exists():
            backing.init_postgres(pg_data, secrets["postgresql"])
        for name in ("redis", "git", "sink", "prometheus", "alertmanager"):
            (layout.services / name).mkdir(parents=True, exist_ok=True)
        bare = layout.services / "git" / "data-registry.git"
        if not bare.exists():
            subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        specs = backing_specs(layout, secrets)
        self._add(specs)
        self._wait([s.name for s in specs], 120)
        superuser = (layout.services / "postgresql" / "superuser.password").read_text()
        backing.create_databases(Addresses.backing("postgresql"), secrets["postgresql"], superuser)
        self._buckets(secrets["zero-margin-secrets"])

        self.phase = "rendering the chart"
        docs = render_chart([STACK_VALUES, *self.extra_values])
        (layout.config / "rendered.json").parent.mkdir(parents=True, exist_ok=True)
        (layout.config / "rendered.json").write_text(json.dumps(docs, indent=1))
        manifests = Manifests(docs, secrets)
        chart_specs, pods, names = plan(layout, manifests)
        hosts.write(names)
        (layout.config / "airflow-worker-env.json").write_text(json.dumps(worker_env(manifests)))

        self.phase = "airflow jobs"  # the chart's migration Job (users: docs/install.md, section 4)
        airflow = next(s for s in chart_specs if s.name == "airflow-scheduler")
        self._job("airflow-db-migrate", ["airflow", "db", "migrate"], airflow.env)

        self.phase = "workloads"
        backing.write_yaml(layout.config / "rules.yaml", backing.prometheus_rules(manifests))
        backing.write_yaml(layout.config / "prometheus.yml", backing.prometheus_config(
            manifests, pods, layout.config / "rules.yaml", f"{Addresses.backing('alertmanager')}:9093"))
        backing.write_yaml(layout.config / "alertmanager.yml", backing.alertmanager_config(manifests))
        self._add(chart_specs)
        self._add(monitoring_specs(layout))
        (layout.config / "specs.json").write_text(json.dumps([p.spec.to_dict() for p in self.procs.values()]))
        self.phase = "running"

    def _buckets(self, s3: dict[str, str]) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://{Addresses.backing('s3')}:9000", region_name="us-east-1",
                              aws_access_key_id=s3["s3-access-key-id"],
                              aws_secret_access_key=s3["s3-secret-access-key"])
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in BUCKETS:
            if bucket not in have:
                client.create_bucket(Bucket=bucket)

    def _job(self, name: str, argv: list[str], env: dict[str, str], check: bool = True) -> None:
        """A one-off pod (a Helm hook Job): a fresh directory, run to completion, deleted."""
        workdir = self.layout.pod_dir(name)
        workdir.mkdir(parents=True, exist_ok=True)
        with (self.layout.logs / f"{name}.log").open("ab") as log:
            done = subprocess.run(argv, cwd=workdir, env={**env, "AIRFLOW_HOME": str(workdir)}, stdout=log,
                                  stderr=subprocess.STDOUT, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"job {name} failed: see {self.layout.logs / f'{name}.log'}")

    # ---------------------------------------------------------------- the loop
    def supervise(self) -> None:
        tick = 0
        while not self.shutdown.is_set():
            tick += 1
            with self.lock:
                now = time.monotonic()
                total, measure = 0, tick % 3 == 0  # memory every 3 s: walking every process tree costs CPU
                for p in self.procs.values():
                    if not p.stopped and not p.alive():
                        if p.next_start == 0.0:
                            p.next_start = now + p.backoff
                            p.backoff = min(p.backoff * 2, 30.0)
                        elif now >= p.next_start:
                            p.restarts += 1
                            p.next_start = 0.0
                            p.start()
                    elif p.alive():
                        if p.ready and now - p.next_start > 60:
                            p.backoff = 1.0
                    if not p.ready or tick % 5 == 0:  # a ready pod re-probed every 5 s (periodSeconds)
                        p.probe()
                    if measure:
                        total += p.sample()
                self.peak_rss = max(self.peak_rss, total)
            self.shutdown.wait(1.0)

    def status(self) -> dict[str, Any]:
        with self.lock:
            procs = [p.status() for p in self.procs.values()]
        ready = self.phase == "running" and all(p["ready"] for p in procs)
        return {"phase": self.phase, "error": self.error, "ready": ready, "pid": os.getpid(),
                "seconds": round(time.monotonic() - self.started, 1), "peak_rss_mb": round(self.peak_rss / 2**20),
                "processes": procs}

    def restart(self, names: list[str], wipe: bool) -> dict[str, Any]:
        with self.lock:
            chosen = [self.procs[n] for n in names]
            _stop_together(chosen)
            for p in chosen:
                if wipe:
                    p.wipe()
                p.backoff, p.next_start = 1.0, 0.0
                p.start()
        return {"restarted": names, "wiped": wipe}

    def stop_all(self) -> None:
        order = ["pod", "airflow", "backing"]
        with self.lock:
            for group in order:
                _stop_together([p for p in self.procs.values() if p.spec.group == group])
        hosts.remove()


def _stop_together(procs: list[Process]) -> None:
    """Every process signalled at once, then each waited for: the grace periods overlap, as pods' do."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.reap()


def _serve(kubelet: Kubelet) -> int:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, body: dict[str, Any], code: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._reply(kubelet.status())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/restart":
                names = body.get("names") or [n for n, p in kubelet.procs.items() if p.spec.group != "backing"]
                unknown = sorted(set(names) - set(kubelet.procs))
                if unknown:
                    self._reply({"error": f"unknown processes {unknown}"}, 404)
                    return
                self._reply(kubelet.restart(names, bool(body.get("wipe"))))
            elif self.path == "/shutdown":
                self._reply({"stopping": True})
                kubelet.shutdown.set()
            else:
                self._reply({"error": f"no route {self.path}"}, 404)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def main(root: Path, extra_values: list[Path]) -> int:
    layout = Layout(root)
    layout.root.mkdir(parents=True, exist_ok=True)
    kubelet = Kubelet(layout, extra_values)
    port = _serve(kubelet)
    layout.state.write_text(json.dumps({"pid": os.getpid(), "control": f"http://127.0.0.1:{port}"}))
    signal.signal(signal.SIGTERM, lambda *_: kubelet.shutdown.set())
    signal.signal(signal.SIGINT, lambda *_: kubelet.shutdown.set())
    try:
        kubelet.bring_up()
        kubelet.supervise()
    except Exception as error:  # noqa: BLE001 - reported through /status, then everything is stopped
        kubelet.error = f"{type(error).__name__}: {error}"
        kubelet.phase = "failed"
        print(kubelet.error, flush=True)
        kubelet.shutdown.wait(30)  # let `stack up` read the error
    finally:
        kubelet.stop_all()
        layout.state.unlink(missing_ok=True)
    return 0 if kubelet.error is None else 1



if __name__ == "__main__":  # python -m stack.kubelet ROOT [VALUES ...] (python -m stack up starts it)
    import sys

    raise SystemExit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
