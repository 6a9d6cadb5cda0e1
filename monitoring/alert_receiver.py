"""Alertmanager webhook -> Airflow: an alert on a model re-enters the training DAG.

Alertmanager posts its webhook (version 4) here. Every *firing* alert that carries a
``model`` label naming one of our families and ``action: retrain`` (monitoring/rules.py labels
the alerts that retraining can fix) becomes one event on that family's retrain
asset through Airflow's authenticated REST API (``POST /api/v2/assets/events``), with the
alert name and summary as the reason. The incident key is the alert's fingerprint and start
time, claimed in the state database's incident table beside the monitoring DAG's, so a repeated
notification (Alertmanager re-sends every ``repeat_interval``) re-enters training once.
Resolved alerts and alerts for other things are acknowledged and ignored.

It also keeps the Pushgateway whole: every ``RECONCILE_SECONDS`` it pushes the last numbers the
monitoring DAG stored in the object store to a Pushgateway that lost them by restarting
(:func:`monitoring.loop.reconcile_pushgateway`), so no alert goes quiet until the next daily check.

Run: ``zm-alert-receiver --port 9095`` (settings ``ZM_AIRFLOW__*`` name the API and account).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request  # at module level: FastAPI resolves annotations here
from sqlalchemy.exc import SQLAlchemyError

from monitoring.loop import claim_incident
from zmlops import auth
from zmlops.airflow_client import UNAVAILABLE, AirflowAPI
from zmlops.catalog import FAMILIES, retrain_asset_uri
from zmlops.settings import Settings

__all__ = ["AirflowAPI", "handle", "create_app", "main"]

log = logging.getLogger("zmlops.alerts")


def handle(settings: Settings, payload: dict[str, Any], api: AirflowAPI) -> list[dict[str, Any]]:
    """Turn one Alertmanager webhook into retrain events; returns what was done per alert."""
    done = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        family, name = labels.get("model"), labels.get("alertname", "alert")
        # Only alerts labelled action=retrain (monitoring/rules.py); the others are for people.
        if alert.get("status") != "firing" or family not in FAMILIES or labels.get("action") != "retrain":
            done.append({"alert": name, "model": family, "action": "ignored"})
            continue
        key = f"alert:{alert.get('fingerprint', name)}:{alert.get('startsAt', '')}"
        summary = alert.get("annotations", {}).get("summary", "")
        reason = f"alert {name}" + (f": {summary}" if summary else "")
        if not claim_incident(settings, key, "alertmanager", reason):
            done.append({"alert": name, "model": family, "action": "duplicate", "incident": key})
            continue
        event = api.emit(retrain_asset_uri(family), {"reason": reason, "incident": key})
        log.info("%s: retraining requested by %s (event %s)", family, name, event.get("id"))
        done.append({"alert": name, "model": family, "action": "retrain", "incident": key, "event": event.get("id")})
    return done


RECONCILE_SECONDS = 60.0


async def _reconcile_forever(settings: Settings) -> None:
    from monitoring.loop import reconcile_pushgateway

    while True:
        try:
            if await asyncio.to_thread(reconcile_pushgateway, settings):
                log.info("pushed the last stored monitoring numbers to the Pushgateway (it had none)")
        except Exception as error:  # noqa: BLE001 - the next round tries again; alerts are served meanwhile
            log.warning("Pushgateway not reconciled: %s: %s", type(error).__name__, error)
        await asyncio.sleep(RECONCILE_SECONDS)


def create_app(settings: Settings, api: AirflowAPI | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_reconcile_forever(settings)) if settings.monitoring.pushgateway_url else None
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(title="zmlops alert receiver", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    airflow = api or AirflowAPI(settings)
    keys = auth.keys(settings) if settings.auth.required else None

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        """Every route but /healthz needs a key with the scope alerts (Alertmanager's webhook credentials)."""
        refused = None if keys is None or request.url.path == "/healthz" else auth.allowed(
            keys, request.headers.get("authorization"), "alerts")
        if refused is not None:
            from fastapi.responses import JSONResponse

            return JSONResponse({"detail": refused[1]}, status_code=refused[0],
                                headers={"www-authenticate": 'Bearer realm="zero-margin"'} if refused[0] == 401
                                else None)
        return await call_next(request)

    @app.post("/alertmanager")
    async def alertmanager(request: Request) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError:
            raise HTTPException(400, "body: not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise HTTPException(400, "alerts: expected Alertmanager's webhook body with an 'alerts' list")
        try:
            return {"results": handle(settings, payload, airflow)}
        except (*UNAVAILABLE, LookupError, RuntimeError) as error:  # Alertmanager retries on 5xx
            raise HTTPException(503, f"Airflow: {error}") from None
        except SQLAlchemyError as error:  # the state database (incidents) is down: retry later
            log.warning("state database: %s", error)
            raise HTTPException(503, "state database unavailable") from None

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zm-alert-receiver",
        description="Receive Alertmanager webhooks and re-enter the training DAG for the alerted model "
        "(one Airflow asset event per alert incident).",
        epilog="Settings: ZM_AIRFLOW__API_URL, ZM_AIRFLOW__USERNAME, ZM_AIRFLOW__PASSWORD or "
        "ZM_AIRFLOW__PASSWORD_FILE; incidents are claimed in the state database (ZM_STATE_DB_URL; SQLite under "
        "ZM_HOME by default).",
    )
    parser.add_argument("--host", default=None, help="bind address (default: serving host from settings)")
    parser.add_argument("--port", type=int, default=9095, help="port (default 9095)")
    args = parser.parse_args(argv)
    import uvicorn

    from zmlops.settings import apply_telemetry_off, get_settings

    apply_telemetry_off()
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from governance import audit

    audit.record_start(settings, "zm-alert-receiver", port=args.port)
    uvicorn.run(create_app(settings), host=args.host or settings.serving.host, port=args.port,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
