"""Request-log records as the predictors write them, for tests of the privacy tooling: one record per customer,
their pseudonym in its row (inference_services.request_log, the object store of ``settings``), and the click each
answer got in the event log (inference_services.events)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zmlops.settings import Settings


def log_answers(settings: Settings, family: str, customers: Iterable[int], **row: Any) -> None:
    """Write one request-log record of ``family`` per customer (``row`` adds the answer's fields), and one click
    event on it, and flush."""
    from inference_services.events import Event, records
    from inference_services.request_log import EVENTS, RequestLog
    from zmlops.stores import object_store

    key = settings.pseudonymisation_key.get_secret_value()
    log = RequestLog(object_store(settings), family, key, settings.request_log)
    events = RequestLog(object_store(settings), family, key, settings.request_log, prefix=EVENTS)
    for customer in customers:
        log.append({"request_id": log.request_id("r"), "model": family, "version": "1", "protocol": "v1",
                    "latency_ms": 1.0, "cache_hits": 0, "rows": [{"customer": log.pseudonymise(customer), **row}]})
        events.append(records([Event(type="click", request_id="r", customer_id=customer)], events, family))
    log.close()
    events.close()
