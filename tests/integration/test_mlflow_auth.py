"""MLflow as the chart runs it: ``python -m zmlops.mlflow_server`` (MLflow's basic-auth app with our service
accounts) over a real server process, its route table checked route by route, each account held to its rights.
The server answers HTTPS only, as with the chart's ``mlflow.tls.enabled`` (uvicorn's certificate options), with a
certificate of a private CA made here; MLflow's client trusts it through ``MLFLOW_TRACKING_SERVER_CERT_PATH``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.certificates import private_ca
from tests.conftest import FULL

pytestmark = pytest.mark.integration

ADMIN = ("admin", "admin-password-0123456789")
PASSWORDS = {"pipelines": "pipelines-password-0123456789", "serving": "serving-password-0123456789"}


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca, self.cert, self.key = private_ca(root, "zm-mlflow")

    def start(self, passwords: dict[str, str], previous: dict[str, str] | None = None) -> MlflowServer:
        """Start with these account passwords (and, while they rotate, the previous ones)."""
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{self.root / 'mlflow.db'}",
               "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key",
               "MLFLOW_ACCOUNT_PIPELINES_PASSWORD": passwords["pipelines"],
               "MLFLOW_ACCOUNT_SERVING_PASSWORD": passwords["serving"], "TMPDIR": str(self.root / "tmp"),
               "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as zm-config
        for user, password in (previous or {}).items():
            env[f"MLFLOW_ACCOUNT_{user.upper()}_PREVIOUS_PASSWORD"] = password
        (self.root / "tmp").mkdir(exist_ok=True)
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zmlops.mlflow_server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", env["MLFLOW_BACKEND_STORE_URI"],
             "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1",
             # as the chart with mlflow.tls
             f"--uvicorn-opts=--timeout-graceful-shutdown 10 --ssl-certfile={self.cert} --ssl-keyfile={self.key}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300  # a hang guard: under make test's load a start took over 90 s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1, verify=str(self.ca)).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()  # not left running (with its job consumers) when the test gives up on it
        raise AssertionError("MLflow did not start:\n" + (self.root / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        """SIGTERM to the server and its uvicorn workers (one process group), as the kubelet stops a pod."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path_factory.mktemp("mlflow-auth")).start(PASSWORDS)
    try:
        yield started
    finally:
        started.stop()


def _client(monkeypatch: pytest.MonkeyPatch, server: MlflowServer, user: str, password: str | None = None) -> Any:
    import mlflow

    for key, value in {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password or PASSWORDS[user],
                       "MLFLOW_TRACKING_SERVER_CERT_PATH": str(server.ca)}.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(server.url)
    return mlflow.MlflowClient(tracking_uri=server.url)


def _status(call: Any) -> int:
    from mlflow.exceptions import MlflowException, RestException

    try:
        call()
    except RestException as error:
        return int(error.get_http_status_code())
    except MlflowException as error:
        found = re.search(r"error code (\d{3})", str(error))
        return int(found.group(1)) if found else 500
    return 200


def test_every_route_of_the_route_table_asks_for_credentials(server: MlflowServer) -> None:
    """MLflow's own route table (its Flask app), not a hand list: every route but the health and static ones
    answers 401 without credentials (and, checked on every tenth, with a wrong password)."""
    from mlflow.server import app

    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static" and "static-files" not in r.rule]
    assert len(rules) > 100
    open_routes, problems = set(), []
    with httpx.Client(base_url=server.url, timeout=10, verify=str(server.ca)) as http:
        for i, rule in enumerate(rules):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "x", rule.rule)
            method = sorted((rule.methods or {"GET"}) - {"HEAD", "OPTIONS"})[0]
            anonymous = http.request(method, path).status_code
            # a wrong password costs the server a PBKDF2 check: every tenth route is enough to show it is refused
            wrong = http.request(method, path, auth=("pipelines", "not-the-password")).status_code \
                if i % 10 == 0 or anonymous != 401 else 401
            if anonymous != 401 or wrong != 401:
                if anonymous < 400 and wrong < 400:
                    open_routes.add(path)
                else:
                    problems.append((method, path, anonymous, wrong))
    assert not problems, problems
    # what MLflow serves to anyone: its health check, version and server-info (no secrets), static files
    assert all(p in ("/health", "/version", "/") or "static" in p or "server-info" in p or p.endswith(".js")
               for p in open_routes), sorted(open_routes)


def test_each_account_has_its_rights_and_no_more(server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    import mlflow

    client = _client(monkeypatch, server, "pipelines")
    mlflow.set_experiment("zm-auth-test")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 1)
        (tmp_path / "model.txt").write_text("weights")
        mlflow.log_artifact(str(tmp_path / "model.txt"), artifact_path="model")
    client.create_registered_model("auth-test-model")
    version = client.create_model_version("auth-test-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("auth-test-model", "production", version.version)

    serving = _client(monkeypatch, server, "serving")
    found = serving.get_model_version_by_alias("auth-test-model", "production")
    assert found.version == version.version
    local = mlflow.artifacts.download_artifacts("models:/auth-test-model@production", dst_path=str(tmp_path / "d"))
    assert (Path(local) / "model.txt").read_text() == "weights"
    assert _status(lambda: serving.set_registered_model_alias("auth-test-model", "production", "1")) == 403
    assert _status(lambda: serving.create_run(run.info.experiment_id)) == 403
    assert _status(lambda: serving.delete_registered_model("auth-test-model")) == 403
    assert _status(lambda: serving.log_param(run.info.run_id, "beta", 2)) == 403

    stranger = _client(monkeypatch, server, "pipelines", "a-wrong-password-123")
    assert _status(lambda: stranger.get_registered_model("auth-test-model")) == 401


def test_only_https_and_only_for_clients_trusting_the_ca(server: MlflowServer) -> None:
    health = f"{server.url}/health"
    assert httpx.get(health, verify=str(server.ca), timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(health, timeout=10)
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
        httpx.get(health.replace("https://", "http://"), timeout=10)


def test_a_password_rotates_with_both_valid_in_between(server: MlflowServer) -> None:
    """The rotation of docs/security.md, MLflow restarted at each step as the pods are (the last test of the
    module: it restarts the module's server). 1: the new password in the Secret, the old one as the previous:
    both work, so clients move without a gap. 2 (ZM_FULL=1): the previous one removed: only the new one works."""
    search = f"{server.url}/api/2.0/mlflow/registered-models/search"

    def status(user: str, password: str) -> int:
        return httpx.get(search, auth=(user, password), timeout=10, verify=str(server.ca)).status_code

    assert status("serving", PASSWORDS["serving"]) == 200
    rotated = {**PASSWORDS, "serving": "rotated-serving-password-987654"}
    server.stop()
    server.start(rotated, previous={"serving": PASSWORDS["serving"]})
    assert status("serving", PASSWORDS["serving"]) == 200
    assert status("serving", rotated["serving"]) == 200
    assert status("serving", "neither-password-000") == 401
    assert status("pipelines", PASSWORDS["serving"]) == 401  # a previous password is its own account's only
    assert status("pipelines", PASSWORDS["pipelines"]) == 200
    # the previous password carries the account's rights and no more: serving still may not write
    delete = f"{server.url}/api/2.0/mlflow/registered-models/delete"
    assert httpx.request("DELETE", delete, json={"name": "auth-test-model"}, auth=("serving", PASSWORDS["serving"]),
                         timeout=10, verify=str(server.ca)).status_code == 403
    if not FULL:  # make test stops here (each restart is 15 CPU-seconds); make test-all also takes step 2
        return
    server.stop()
    server.start(rotated)
    assert status("serving", PASSWORDS["serving"]) == 401
    assert status("serving", rotated["serving"]) == 200
    assert status("pipelines", PASSWORDS["pipelines"]) == 200


def test_the_pipelines_account_forgets_a_model_trained_on_retired_data_through_the_server(
        server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The erasure's last step on the k8s profile's MLflow (the server, its auth app, proxied artifacts):
    :func:`governance.erasure.forget_models` deletes a version trained on a retired data version (its run's and its
    logged model's artifacts, the version, the run) and keeps production; the serving account may delete nothing."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    from governance.erasure import forget_models
    from training.data import ingest
    from zmlops.settings import Settings

    settings = Settings(home=tmp_path / "zm", mlflow_tracking_uri=server.url)
    registry = ingest.registry_for(settings)
    for name, rows in (("a", "id,qty\n1,2\n"), ("b", "id,qty\n1,3\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "transactions.csv").write_text(rows)
        registry.mark(registry.add_snapshot(tmp_path / name, {"source": "test"}, "transactions.csv").name, ok=True)
    registry.retire("v1", "erasure customer:0123456789abcdef: ticket 9")

    client = _client(monkeypatch, server, "pipelines")
    mlflow.set_experiment("zm-forget-test")
    versions = {}
    client.create_registered_model("product-recommendation")
    for data in ("v1", "v2"):  # registered as training.tracking registers (the REST client drops model_id)
        with mlflow.start_run() as run:
            mlflow.log_text("holds a row per customer", "estimator/notes.txt")
            logged = mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="model")
        mv = client.create_model_version("product-recommendation", logged.model_uri, run.info.run_id,
                                         tags={"data_version": data}, model_id=logged.model_id)
        versions[data] = (mv.version, run.info.run_id, logged.model_id)
    client.set_registered_model_alias("product-recommendation", "previous", versions["v1"][0])
    client.set_registered_model_alias("product-recommendation", "production", versions["v2"][0])
    stored = {p for p in (server.root / "artifacts").rglob("*") if p.is_file()}
    assert any(versions["v1"][1] in str(p) for p in stored) and any(versions["v1"][2] in str(p) for p in stored)

    _client(monkeypatch, server, "serving")
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED|Permission denied"):
        forget_models(settings)
    _client(monkeypatch, server, "pipelines")
    assert forget_models(settings) == [f"product-recommendation v{versions['v1'][0]}"]
    left = {p for p in (server.root / "artifacts").rglob("*") if p.is_file()}
    assert not any(versions["v1"][1] in str(p) or versions["v1"][2] in str(p) for p in left), left
    assert any(versions["v2"][1] in str(p) for p in left)
    assert [m.version for m in client.search_model_versions("name = 'product-recommendation'")] \
        == [versions["v2"][0]]
    assert client.get_run(versions["v1"][1]).info.lifecycle_stage == "deleted"
