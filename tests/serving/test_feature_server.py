"""The Feast feature server as the chart runs it: ``feast serve`` on feature_store.k8s.yaml (SQL registry, Redis),
over TLS with a certificate from a private CA (featureServer.tls: ``--key``/``--cert``), checking OIDC access tokens
from an issuer (stack/oidc.py, the platform's identity provider here) against the permissions of
feature_repo/permissions.py.

Its route inventory comes from the server's own OpenAPI document: every route but the public ones answers 401
without a token, with a token another issuer signed and with one minted for another audience, 403 with a valid
token that carries no role, and is served with the role it needs.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stack.oidc import Client, Issuer
from tests.certificates import private_ca
from tests.serving.conftest import REPO, free_port

pytestmark = pytest.mark.serving

AUDIENCE = "zero-margin-feast"
CLIENTS = [Client("analyst-tool", "reader-secret-0123456789", ("feast-reader",), AUDIENCE),
           Client("event-producer", "writer-secret-0123456789", ("feast-writer",), AUDIENCE),
           Client("no-role", "norole-secret-0123456789", (), AUDIENCE),
           Client("other-service", "other-secret-0123456789", ("feast-reader",), "another-audience")]
# Feast's routes that read or change nothing of ours: its health check, its OpenAPI document and pages, and /chat,
# which answers a fixed text and its page (feast/feature_server.py); everything else is checked.
PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/chat"}
WRITES = ("/push", "/write-to-online-store", "/materialize", "/materialize-incremental")


@dataclass
class Served:
    url: str  # https://127.0.0.1:PORT
    issuer: Issuer
    ca: ssl.SSLContext  # trusts the CA that signed the server's certificate (what a client holds)


@pytest.fixture(scope="module")
def feature_server(redis: tuple[subprocess.Popen[bytes], int], home: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from tests.serving.test_online_store import _k8s_settings
    from training.features import store

    tmp = tmp_path_factory.mktemp("feature-server")
    ca_file, cert, key = private_ca(tmp, "zm-feature-server")  # as the Secret zm-feature-server-tls holds them
    ca = ssl.create_default_context(cafile=str(ca_file))
    k8s = _k8s_settings(home, tmp, redis[1])
    store.apply_definitions(k8s)
    store.materialize(k8s, store.latest_window_end(k8s))
    with Issuer(CLIENTS) as issuer:
        port = free_port()
        env = {**os.environ, "FEAST_USAGE": "False", "ZM_FEAST_REGISTRY": k8s.feast_registry_url,
               "ZM_FEAST_REDIS": k8s.feast_redis, "ZM_FEAST_OIDC_DISCOVERY_URL": issuer.discovery_url,
               "ZM_FEAST_OIDC_CLIENT_ID": AUDIENCE, "ZM_FEAST_OIDC_AUDIENCE": AUDIENCE,
               "ZM_FEAST_OIDC_ISSUER": issuer.url}
        log = tmp / "feature-server.log"
        # the chart's command (charts/zero-margin/templates/feature-server.yaml), on this checkout's files
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("feast")), "--chdir", str(REPO / "feature_repo"),
             "--feature-store-yaml", str(REPO / "feature_repo" / "feature_store.k8s.yaml"),
             "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
             "--key", str(key), "--cert", str(cert)],
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        url = f"https://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300  # a hang guard: the server starts in seconds when the CPU is free
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/health", timeout=2, verify=ca).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
            yield Served(url, issuer, ca)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def _tokens(issuer: Issuer) -> dict[str, str]:
    return {c.client_id: issuer.token(c.client_id, c.client_secret) for c in CLIENTS}


def test_only_https_and_only_for_clients_trusting_the_ca(feature_server: Served) -> None:
    token = feature_server.issuer.token("analyst-tool", "reader-secret-0123456789")
    body = {"features": ["customer_profile:frequency"], "entities": {"customer_id": [1]}}
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.post(f"{feature_server.url}/get-online-features", json=body, headers=auth, timeout=30,
                      verify=feature_server.ca).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client not trusting the CA
        httpx.post(f"{feature_server.url}/get-online-features", json=body, headers=auth, timeout=10)
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
        httpx.post(f"{feature_server.url.replace('https://', 'http://')}/get-online-features", json=body,
                   headers=auth, timeout=10)


def test_every_route_but_the_public_ones_needs_a_valid_token(feature_server: Served) -> None:
    """Authentication, route by route from the server's OpenAPI document: no token, a token another issuer signed
    (same client, same claims) and a token minted for another audience are all 401; a valid token passes it
    (what it may then do is the next test's)."""
    url, issuer, ca = feature_server.url, feature_server.issuer, feature_server.ca
    tokens = _tokens(issuer)
    with Issuer(CLIENTS) as impostor:  # the same client names and claims, signed by a key the server never saw
        forged = impostor.token("event-producer", "writer-secret-0123456789")
    spec = httpx.get(f"{url}/openapi.json", timeout=10, verify=ca).json()
    routes = [(method.upper(), path) for path, item in spec["paths"].items() for method in item
              if method in ("get", "post", "put", "patch", "delete")]
    assert len(routes) > 10 and ("POST", "/get-online-features") in routes

    problems = []
    for method, path in routes:
        if path in PUBLIC:
            continue
        got = {name: _call(feature_server, method, path, token, {}) for name, token in
               (("none", None), ("forged", forged), ("other audience", tokens["other-service"]),
                ("valid", tokens["no-role"]))}
        if (got["none"], got["forged"], got["other audience"]) != (401, 401, 401) or got["valid"] == 401:
            problems.append((method, path, got))
    assert not problems, problems


def test_each_role_may_do_what_the_permissions_grant_and_no_more(feature_server: Served, home: Path) -> None:
    """Authorization on the routes that read or change our feature views, each with a request it would serve:
    reads need feast-reader (or feast-writer), writes feast-writer; a valid token without a role gets 403."""
    import pandas as pd

    tokens = _tokens(feature_server.issuer)
    row = pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet").head(1)
    row["customer_id"] = 10**9 + 7  # a customer no other test reads
    frame = {c: [v.isoformat() if isinstance(v, pd.Timestamp) else v.item() if hasattr(v, "item") else v]
             for c, v in row.iloc[0].items()}
    end = str(pd.Timestamp(row["event_timestamp"].iloc[0]) + pd.Timedelta(seconds=1))
    reads = {("POST", "/get-online-features"): {"features": ["customer_profile:frequency"],
                                                 "entities": {"customer_id": [1]}}}
    writes = {("POST", "/write-to-online-store"): {"feature_view_name": "customer_profile", "df": frame},
              ("POST", "/materialize-incremental"): {"end_ts": end, "feature_views": ["customer_profile"]}}
    got = {(method, path): {who: _call(feature_server, method, path, tokens[who], body)
                            for who in ("no-role", "analyst-tool", "event-producer")}
           for (method, path), body in {**reads, **writes}.items()}
    for route in reads:
        assert got[route]["no-role"] == 403 and got[route]["analyst-tool"] == got[route]["event-producer"] == 200, got
    for route in writes:
        assert got[route]["no-role"] == got[route]["analyst-tool"] == 403, got
    assert got[("POST", "/write-to-online-store")]["event-producer"] == 200, got
    # a writer passes the check; the feature server then has no offline sources to read (the pipelines materialize)
    assert got[("POST", "/materialize-incremental")]["event-producer"] not in (401, 403), got


def _call(served: Served, method: str, path: str, token: str | None, body: object) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, served.url + path, headers=headers, json=body, timeout=60,
                         verify=served.ca).status_code


def test_a_reader_gets_the_features_the_store_holds(feature_server: Served, home: Path) -> None:
    import pandas as pd

    url, issuer, ca = feature_server.url, feature_server.issuer, feature_server.ca
    ids = [int(c) for c in pd.read_parquet(home / "feast" / "sources" / "customer_features.parquet",
                                           columns=["customer_id"])["customer_id"].unique()[:3]]
    body = {"features": ["customer_profile:frequency", "customer_profile:tenure_days"],
            "entities": {"customer_id": ids}}
    token = issuer.token("analyst-tool", "reader-secret-0123456789")
    answer = httpx.post(f"{url}/get-online-features", json=body, headers={"authorization": f"Bearer {token}"},
                        timeout=30, verify=ca)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results[0]["values"] == ids
    assert all(status == "PRESENT" for r in results[1:] for status in r["statuses"])
    assert httpx.post(f"{url}/get-online-features", json=body, timeout=30, verify=ca).status_code == 401
