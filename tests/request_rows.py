"""Request-log records as the predictors write them, for tests of the privacy tooling: one record per customer,
their pseudonym in its row (inference_services.request_log, the object store of ``settings``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zmlops.settings import Settings


def log_answers(settings: Settings, family: str, customers: Iterable[int], **row: Any) -> None:
    """Write one request-log record of ``family`` per customer (``row`` adds the answer's fields) and flush."""
    from inference_services.request_log import RequestLog
    from zmlops.stores import object_store

    log = RequestLog(object_store(settings), family, settings.pseudonymisation_key.get_secret_value(),
                     settings.request_log)
    for customer in customers:
        log.append({"request_id": "r", "model": family, "version": "1", "protocol": "v1", "latency_ms": 1.0,
                    "cache_hits": 0, "rows": [{"customer": log.pseudonymise(customer), **row}]})
    log.close()
