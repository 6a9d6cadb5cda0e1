"""Alertmanager -> receiver -> Airflow REST API, with a real Alertmanager and a real Airflow API server."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dags.conftest import REPO
from zmlops import auth
from zmlops.catalog import retrain_asset_uri

pytestmark = pytest.mark.dags

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], seconds: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                out = p.stdout.read().decode()[-3000:] if p.stdout else ""
                raise AssertionError(f"{p.args} exited before {what}:\n{out}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    for p in procs:
        p.terminate()
    logs = "\n".join(f"--- {p.args[0]}:\n" + (p.stdout.read().decode()[-2500:] if p.stdout else "") for p in procs)
    raise AssertionError(f"not {what} within {seconds} s\n{logs}")


@pytest.fixture
def stack(airflow_db: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if ALERTMANAGER is None:
        pytest.fail("Alertmanager is missing: `make test` installs the Debian package prometheus-alertmanager")
    airflow = str(Path(sys.executable).parent / "airflow")
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": "test-only-password"}))
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__API__EXPOSE_CONFIG": "False"}
    done = subprocess.run([airflow, "dags", "reserialize"], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    api_port, receiver_port, am_port = _port(), _port(), _port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = subprocess.Popen([airflow, "api-server", "--port", str(api_port), "--host", "127.0.0.1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
        procs.append(api)
        token, entry = auth.new_key("alertmanager", ("alerts",))  # as docs/install.md makes it
        zm_env = {**env, "ZM_HOME": str(tmp_path / "zm"), "ZM_AIRFLOW__API_URL": f"http://127.0.0.1:{api_port}",
                  "ZM_AIRFLOW__PASSWORD_FILE": str(passwords), "ZM_AUTH__API_KEYS": json.dumps([entry])}
        receiver = subprocess.Popen([sys.executable, "-m", "monitoring.alert_receiver", "--port", str(receiver_port)],
                                    env=zm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
        procs.append(receiver)
        config = tmp_path / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: zmlops\n  group_by: [alertname, model]\n  group_wait: 1s\n"
            "  group_interval: 1s\n  repeat_interval: 1h\n"
            f"receivers:\n  - name: zmlops\n    webhook_configs:\n"
            f"      - url: http://127.0.0.1:{receiver_port}/alertmanager\n        send_resolved: true\n"
            f"        http_config:\n          authorization:\n            credentials: {token}\n"
        )
        am = subprocess.Popen([ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
                               f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(am)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{api_port}/api/v2/version", timeout=2).status_code in (200, 401),
              120, "Airflow API up", procs)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{receiver_port}/healthz", timeout=2).status_code == 200,
              60, "receiver up", procs)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{am_port}/-/ready", timeout=2).status_code == 200,
              60, "Alertmanager ready", procs)
        yield {"api": f"http://127.0.0.1:{api_port}", "receiver": f"http://127.0.0.1:{receiver_port}",
               "auth": {"authorization": f"Bearer {token}"},
               "alertmanager": f"http://127.0.0.1:{am_port}", "procs": procs, "zm_home": tmp_path / "zm"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _events(api: str, uri: str) -> list[dict[str, Any]]:
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": "test-only-password"},
                       timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assets = httpx.get(f"{api}/api/v2/assets", params={"uri_pattern": uri}, headers=headers, timeout=10).json()
    asset = next(a for a in assets["assets"] if a["uri"] == uri)
    events = httpx.get(f"{api}/api/v2/assets/events", params={"asset_id": asset["id"]}, headers=headers,
                       timeout=10).json()
    return list(events["asset_events"])


@pytest.mark.full  # make test runs this DAG end to end in tests/stack (the chart's Airflow, real scheduler)
def test_an_alert_re_enters_training_for_its_model_once(stack: dict[str, Any]) -> None:
    uri = retrain_asset_uri("customer-segmentation")
    assert _events(stack["api"], uri) == []
    alert = {"labels": {"alertname": "ZmServedSegmentShift", "model": "customer-segmentation", "severity": "ticket",
                        "action": "retrain"},
             "annotations": {"summary": "segment shares moved by 0.12"},
             "startsAt": dt.datetime.now(dt.UTC).isoformat()}
    r = httpx.post(f"{stack['alertmanager']}/api/v2/alerts", json=[alert], timeout=10)
    assert r.status_code == 200, r.text
    _wait(lambda: len(_events(stack["api"], uri)) == 1, 60, "an asset event", stack["procs"])
    event = _events(stack["api"], uri)[0]
    assert "ZmServedSegmentShift" in event["extra"]["reason"] and event["extra"]["incident"].startswith("alert:")

    # Alertmanager re-sends the same alert (same fingerprint and start): one incident, one event
    r = httpx.post(f"{stack['alertmanager']}/api/v2/alerts", json=[alert], timeout=10)
    assert r.status_code == 200
    webhook = {"version": "4", "status": "firing", "alerts": [
        {**alert, "status": "firing", "fingerprint": event["extra"]["incident"].split(":")[1],
         "startsAt": event["extra"]["incident"].split(":", 2)[2]}]}
    assert httpx.post(f"{stack['receiver']}/alertmanager", json=webhook, timeout=10).status_code == 401
    assert httpx.post(f"{stack['receiver']}/alertmanager", json=webhook, timeout=10,
                      headers={"authorization": "Bearer zm_wrong"}).status_code == 401
    again = httpx.post(f"{stack['receiver']}/alertmanager", json=webhook, headers=stack["auth"], timeout=10).json()
    assert again["results"][0]["action"] == "duplicate"
    time.sleep(3)
    assert len(_events(stack["api"], uri)) == 1

    # not ours: no event, still a 2xx so Alertmanager does not retry
    other = {"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull"}}]}
    assert httpx.post(f"{stack['receiver']}/alertmanager", json=other, headers=stack["auth"], timeout=10).json()[
        "results"][0]["action"] == "ignored"
    # ours but for people (retraining does not fix 5xx answers): no event
    page = {"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {
        "alertname": "ZmAvailabilityBudgetBurn1H", "model": "customer-segmentation", "action": "notify"}}]}
    assert httpx.post(f"{stack['receiver']}/alertmanager", json=page, headers=stack["auth"], timeout=10).json()[
        "results"][0]["action"] == "ignored"
    assert len(_events(stack["api"], uri)) == 1
    assert httpx.post(f"{stack['receiver']}/alertmanager", content=b"nope", headers=stack["auth"],
                      timeout=10).status_code == 400
