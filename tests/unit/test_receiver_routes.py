"""The alert receiver's route inventory: every route of its FastAPI app (its route table, not a hand list) but
/healthz answers 401 without a key or with a wrong one, 403 with a key lacking the scope alerts, and is served
with the right one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from monitoring.alert_receiver import create_app
from tests.route_inventory import inventory_problems
from zmlops import auth
from zmlops.settings import AuthSettings, Settings

pytestmark = pytest.mark.unit


def test_every_receiver_route_but_healthz_needs_a_key_with_the_scope_alerts(tmp_path: Path) -> None:
    tokens, entries = {}, []
    for scope in ("alerts", "predict"):
        tokens[scope], entry = auth.new_key(f"{scope}-client", (scope,))
        entries.append(entry)
    settings = Settings(home=tmp_path, auth=AuthSettings(api_keys=json.dumps(entries)))
    app = create_app(settings)
    routes = [(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods]
    assert ("POST", "/alertmanager") in routes and ("GET", "/healthz") in routes
    routes.append(("GET", "/not-a-route"))  # an unknown path is refused before it is looked up
    with TestClient(app) as client:
        def call(method: str, path: str, token: str | None) -> int:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            body = {"version": "4", "status": "firing", "alerts": []} if method == "POST" else None
            return client.request(method, path, json=body, headers=headers).status_code

        problems = inventory_problems(routes, call, lambda path: None if path == "/healthz" else "alerts", tokens)
        assert not problems, problems
        assert call("GET", "/healthz", None) == 200
        refused = client.post("/alertmanager", json={"alerts": []})
        assert refused.headers["www-authenticate"].startswith("Bearer")
