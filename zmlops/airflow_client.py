"""The calls tools outside Airflow make to its REST API, on Apache Airflow's own Python client
(``apache-airflow-client``, generated from the API's OpenAPI document and released with it).

Used by the Alertmanager receiver (asset events), ``make demo`` and the topology's loop (trigger runs,
wait, answer approvals). Airflow 3's API takes a bearer token from its ``/auth/token`` endpoint, which
the client does not cover: it is fetched here and renewed every five minutes. Answers are plain dicts
(JSON values: states as strings, times as ISO strings), as the callers print and compare them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import urllib3
from airflow_client import client as airflow

from zmlops.polling import until
from zmlops.settings import Settings

__all__ = ["AirflowAPI", "UNAVAILABLE", "refused_status"]

# What a call raises when Airflow refuses it or cannot be reached (the token's request is httpx's).
UNAVAILABLE = (httpx.HTTPError, airflow.ApiException, urllib3.exceptions.HTTPError)


def refused_status(error: Exception) -> int | None:
    """The HTTP status Airflow refused a call with; None when it gave none (unreachable)."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code
    return int(error.status) if isinstance(error, airflow.ApiException) and error.status else None


def _plain(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


class AirflowAPI:
    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.base = settings.airflow.api_url.rstrip("/")
        self.http = client or httpx.Client(timeout=15)  # the token's request only
        self.config = airflow.Configuration(host=self.base)
        self.api = airflow.ApiClient(self.config)
        self._expires = 0.0

    def _password(self) -> str:
        cfg = self.settings.airflow
        if cfg.password is not None:
            return cfg.password.get_secret_value()
        if cfg.password_file is not None and cfg.password_file.exists():
            return str(json.loads(cfg.password_file.read_text())[cfg.username])
        raise RuntimeError("no Airflow password: set ZM_AIRFLOW__PASSWORD or ZM_AIRFLOW__PASSWORD_FILE")

    def _authorised(self) -> airflow.ApiClient:
        if self._expires < time.monotonic():
            r = self.http.post(f"{self.base}/auth/token",
                               json={"username": self.settings.airflow.username, "password": self._password()})
            r.raise_for_status()
            self.config.access_token = r.json()["access_token"]
            self._expires = time.monotonic() + 300
        return self.api

    def dag_ids(self) -> set[str]:
        return {d.dag_id for d in airflow.DAGApi(self._authorised()).get_dags(limit=1000).dags}

    def asset_id(self, uri: str) -> int:
        found = [a for a in airflow.AssetApi(self._authorised()).get_assets(uri_pattern=uri).assets if a.uri == uri]
        if not found:
            raise LookupError(f"Airflow knows no asset {uri}: is the training DAG deployed?")
        return int(found[0].id)

    def emit(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        body = airflow.CreateAssetEventsBody(asset_id=self.asset_id(uri), extra=extra)
        event: dict[str, Any] = _plain(airflow.AssetApi(self._authorised()).create_asset_event(body))
        return event

    def asset_events(self, limit: int = 100) -> list[dict[str, Any]]:
        found = airflow.AssetApi(self._authorised()).get_asset_events(limit=limit).asset_events
        return [_plain(e) for e in found]

    def approvals(self, dag_id: str, run_id: str = "~") -> list[dict[str, Any]]:
        """Approval (human-in-the-loop) tasks of ``dag_id`` still waiting for an answer."""
        found = airflow.TaskInstanceApi(self._authorised()).get_hitl_details(dag_id, run_id, response_received=False)
        return [_plain(d) for d in found.hitl_details]

    def answer(self, waiting: dict[str, Any], option: str, reason: str = "") -> dict[str, Any]:
        """Answer one waiting approval task (``Approve`` or ``Reject``) as this client's user."""
        ti = waiting["task_instance"]
        payload = airflow.UpdateHITLDetailPayload(chosen_options=[option], params_input={"reason": reason})
        out: dict[str, Any] = _plain(airflow.TaskInstanceApi(self._authorised()).update_hitl_detail(
            ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti["map_index"], payload))
        return out

    def unpause(self, dag_id: str) -> None:
        airflow.DAGApi(self._authorised()).patch_dag(dag_id, airflow.DAGPatchBody(is_paused=False))

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = airflow.TriggerDAGRunPostBody(logical_date=None, conf=conf or {})
        return str(airflow.DagRunApi(self._authorised()).trigger_dag_run(dag_id, body).dag_run_id)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        found = airflow.DagRunApi(self._authorised()).get_dag_runs(dag_id, order_by=["-start_date"], limit=50)
        return [_plain(r) for r in found.dag_runs]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = _plain(airflow.DagRunApi(self._authorised()).get_dag_run(dag_id, run_id))
        return found

    def clear(self, dag_id: str, dry_run: bool = True) -> list[dict[str, Any]]:
        """Clear the DAG's task instances (every state); with ``dry_run`` (the default) only list them."""
        body = airflow.ClearTaskInstancesBody(dry_run=dry_run, only_failed=False)
        found = airflow.TaskInstanceApi(self._authorised()).post_clear_task_instances(dag_id, body)
        return [_plain(t) for t in found.task_instances]

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Wait for a run to end; returns it (state ``success`` or ``failed``)."""
        def ended() -> dict[str, Any] | None:
            run = self.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        found = until(ended, timeout, 2.0)
        if found is None:
            raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")
        return found
