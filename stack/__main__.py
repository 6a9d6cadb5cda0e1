"""``python -m stack``: the Kubernetes profile's topology on this machine (``make stack``, ``make stack-down``).

    python -m stack up                 start everything, print the URLs (state in .zm/stack)
    python -m stack status             every process: ready, restarts, address, log
    python -m stack exec POD -- CMD    run CMD with POD's environment in its working directory (kubectl exec)
    python -m stack run -- CMD         a one-off pod with the Airflow task pods' environment (kubectl run)
    python -m stack restart [--wipe]   restart workloads, deleting their working directories first
    python -m stack down               stop everything (--purge also deletes the services' data)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from stack.client import DEFAULT_ROOT, Control

ROOT_OPTION = click.option("--root", type=click.Path(path_type=Path), default=DEFAULT_ROOT, show_default=True,
                           help="the harness's state folder")


@click.group(help=__doc__)
def cli() -> None:
    pass


@cli.command(help="Start the topology in the background and wait until every process is ready.")
@ROOT_OPTION
@click.option("-f", "--values", "values", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="extra chart values (after stack/values.yaml)")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait for readiness")
@click.option("--fresh/--keep", default=True, show_default=True,
              help="--fresh deletes an earlier topology's state first; --keep reuses its data")
def up(root: Path, values: tuple[Path, ...], timeout: float, fresh: bool) -> None:
    control = Control(root)
    if control.running():
        raise click.ClickException(f"a topology is already running under {root}: python -m stack down")
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log = (root / "kubelet.log").open("ab")
    argv = [sys.executable, "-m", "stack.kubelet", str(root), *map(str, values)]
    subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                     env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:  # predictors turn ready once a model version is in production (after the first training)
        control.wait_ready(timeout, progress=lambda line: click.echo(f"  {line}"), skip=("-predictor",))
    except (TimeoutError, RuntimeError) as error:
        raise click.ClickException(f"{error} (logs: {root / 'logs'}; stop with: python -m stack down)") from None
    click.echo(f"topology ready in {time.monotonic() - started:.0f} s; next: `python -m stack first-run` (users, "
               "the first delivery, the DAGs: docs/install.md section 4); the predictors turn ready after the first "
               "training")
    _urls(control)


def _urls(control: Control) -> None:
    status = control.status()
    ips = {p["name"]: p["ip"] for p in status["processes"]}
    admin = control.secret("airflow-users", "admin-password")
    click.echo(f"  Airflow UI and API  http://airflow-api-server:8080  (admin / {admin})")
    click.echo("  MLflow              http://zm-mlflow.mlops.svc:5000")
    for name in sorted(n for n in ips if n.endswith("-predictor")):
        model = name.removesuffix("-predictor")
        click.echo(f"  {model:<19} http://{name}.mlops.svc:8080/v2/models/{model}")
    click.echo("  Prometheus          http://prometheus-operated.monitoring.svc:9090")
    click.echo("  Alertmanager        http://alertmanager-operated.monitoring.svc:9093")
    click.echo(f"  object store (S3)   http://zm-s3.mlops.svc:9000  (keys: {control.layout.secrets})")
    click.echo(f"  logs                {control.layout.logs}")


@cli.command(name="first-run", help="Run docs/install.md's first-run commands in the topology: Airflow's users, "
                                    "the first data delivery, the feature store, the DAGs unpaused.")
@ROOT_OPTION
def first_run(root: Path) -> None:
    from stack import install_doc

    done = install_doc.run(Control(root), "4.", say=click.echo)
    click.echo(f"{len(done)} commands of docs/install.md ran; the scheduler now trains (python -m stack status)")


@cli.command(help="Show every process: group, address, ready, restarts; and the peak memory so far.")
@ROOT_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the raw status")
def status(root: Path, as_json: bool) -> None:
    body = Control(root).status()
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(f"phase {body['phase']}, up {body['seconds']:.0f} s, peak memory {body['peak_rss_mb']} MB")
    for p in body["processes"]:
        mark = "ready" if p["ready"] else ("running" if p["alive"] else "DOWN")
        click.echo(f"  {p['name']:<34} {p['group']:<8} {p['ip']:<13} {mark:<8} restarts {p['restarts']}")


@cli.command(help="Restart workloads (all chart pods and Airflow components, or those named), optionally wiping "
                  "their working directories first, as a rescheduled pod starts with an empty disk.")
@ROOT_OPTION
@click.argument("names", nargs=-1)
@click.option("--wipe", is_flag=True, help="delete the working directories before starting again")
@click.option("--timeout", default=300.0, show_default=True)
def restart(root: Path, names: tuple[str, ...], wipe: bool, timeout: float) -> None:
    control = Control(root)
    done = control.restart(list(names), wipe)
    click.echo(f"restarted {len(done['restarted'])} processes{' with empty disks' if wipe else ''}")
    control.wait_ready(timeout, names=done["restarted"], progress=lambda line: click.echo(f"  {line}"))


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    path = env.get("PATH", "")
    program = shutil.which(argv[0], path=path) or argv[0]
    return subprocess.run([program, *argv[1:]], env=env, cwd=cwd, check=False).returncode


@cli.command(name="exec", context_settings={"ignore_unknown_options": True},
             help="Run a command with a process's environment in its working directory (like kubectl exec).")
@ROOT_OPTION
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(root: Path, pod: str, command: tuple[str, ...]) -> None:
    specs = Control(root).specs()
    if pod not in specs:
        raise click.ClickException(f"no process {pod}; one of {', '.join(sorted(specs))}")
    spec = specs[pod]
    cwd = Control(root).layout.pod_dir(pod)
    cwd.mkdir(parents=True, exist_ok=True)
    sys.exit(_run(list(command), spec["env"], cwd))


@cli.command(context_settings={"ignore_unknown_options": True},
             help="Run a command in a one-off pod: the Airflow task pods' environment, a new empty directory that "
                  "is deleted afterwards (like kubectl run --rm with the pipelines image).")
@ROOT_OPTION
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(root: Path, command: tuple[str, ...]) -> None:
    control = Control(root)
    with tempfile.TemporaryDirectory(prefix="job-", dir=control.layout.pods) as pod:
        env = {k: v.replace("/opt/airflow", pod) for k, v in control.worker_env().items()}
        env.update({"HOME": pod, "TMPDIR": pod, "AIRFLOW_HOME": pod})
        sys.exit(_run(list(command), env, Path(pod)))


@cli.command(help="Stop every process of the topology (and remove its /etc/hosts block).")
@ROOT_OPTION
@click.option("--purge", is_flag=True, help="also delete the state folder (databases, buckets, repositories)")
@click.option("--timeout", default=180.0, show_default=True)
def down(root: Path, purge: bool, timeout: float) -> None:
    control = Control(root)
    if control.running():
        pid = control.status()["pid"]
        control.shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.5)
        click.echo("topology stopped")
    else:
        click.echo("no topology running")
    if purge and root.exists():
        shutil.rmtree(root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    cli()
