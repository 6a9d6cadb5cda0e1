"""The few calls tools outside Airflow need from its v2 REST API, with a cached bearer token.

Used by the Alertmanager receiver (asset events) and by ``make demo`` (trigger runs, wait).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["AirflowAPI"]


class AirflowAPI:
    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.base = settings.airflow.api_url.rstrip("/")
        self.http = client or httpx.Client(timeout=15)
        self._token: tuple[str, float] | None = None

    def _password(self) -> str:
        cfg = self.settings.airflow
        if cfg.password is not None:
            return cfg.password.get_secret_value()
        if cfg.password_file is not None and cfg.password_file.exists():
            return str(json.loads(cfg.password_file.read_text())[cfg.username])
        raise RuntimeError("no Airflow password: set ZM_AIRFLOW__PASSWORD or ZM_AIRFLOW__PASSWORD_FILE")

    def headers(self) -> dict[str, str]:
        if self._token is None or self._token[1] < time.monotonic():
            r = self.http.post(f"{self.base}/auth/token",
                               json={"username": self.settings.airflow.username, "password": self._password()})
            r.raise_for_status()
            self._token = (r.json()["access_token"], time.monotonic() + 300)
        return {"Authorization": f"Bearer {self._token[0]}"}

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(f"{self.base}/api/v2{path}", params=params, headers=self.headers())
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.post(f"{self.base}/api/v2{path}", json=body, headers=self.headers())
        r.raise_for_status()
        return r.json()

    def asset_id(self, uri: str) -> int:
        found = [a for a in self.get("/assets", uri_pattern=uri)["assets"] if a["uri"] == uri]
        if not found:
            raise LookupError(f"Airflow knows no asset {uri}: is the training DAG deployed?")
        return int(found[0]["id"])

    def emit(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = self.post("/assets/events", {"asset_id": self.asset_id(uri), "extra": extra})
        return event

    def approvals(self, dag_id: str, run_id: str = "~") -> list[dict[str, Any]]:
        """Approval (human-in-the-loop) tasks of ``dag_id`` still waiting for an answer."""
        found = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/hitlDetails", response_received=False)
        return list(found.get("hitl_details", []))

    def answer(self, waiting: dict[str, Any], option: str, reason: str = "") -> dict[str, Any]:
        """Answer one waiting approval task (``Approve`` or ``Reject``) as this client's user."""
        ti = waiting["task_instance"]
        path = (f"{self.base}/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
                f"{ti['map_index']}/hitlDetails")
        r = self.http.patch(path, json={"chosen_options": [option], "params_input": {"reason": reason}},
                            headers=self.headers())
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def unpause(self, dag_id: str) -> None:
        r = self.http.patch(f"{self.base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=self.headers())
        r.raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", order_by="-start_date", limit=50)["dag_runs"])

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Wait for a run to end; returns it (state ``success`` or ``failed``)."""
        def ended() -> dict[str, Any] | None:
            run: dict[str, Any] = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        found = until(ended, timeout, 2.0)
        if found is None:
            raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")
        return found
