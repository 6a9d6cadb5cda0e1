"""Outcome events: what customers did after an answer, posted by client applications to the predictor.

``POST /v1/models/NAME/events`` (the ``predict`` scope, like the predictions it follows up) with
``{"events": [...]}``; each event is one of:

- ``impression``, ``click``, ``purchase``: a customer saw, clicked or bought from a served answer, attributed
  to it by the answer's ``request_id`` (the ``x-request-id`` or V2 ``id`` the client sent, or the one the
  server gave); a purchase names the ``stock_code`` and may carry ``quantity`` and ``revenue``;
- ``sale``: realised sales for a forecast: ``category``, ``week_start`` and ``units`` (``revenue`` optional).

They are validated (a 400 names the field: ``events[2].request_id: ...``), answered with 202 and written in
batches like the request log (:mod:`inference_services.request_log`), under ``events/<model>/<day>/``, with
the request log's pseudonyms: the request id as its keyed hash, the customer id never, its pseudonym instead.
So an event joins the answer it follows, and an erasure or a key rotation rewrites both logs alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inference_services.request_log import RequestLog

__all__ = ["Event", "EventBatch", "parse", "records"]

ATTRIBUTED = ("impression", "click", "purchase")


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["impression", "click", "purchase", "sale"]
    request_id: str | None = Field(None, min_length=1, max_length=256, description="the served answer's request id")
    customer_id: int | None = Field(None, ge=0, le=2**53, description="who (kept as the pseudonym only)")
    stock_code: str | None = Field(None, min_length=1, max_length=32, description="the product clicked or bought")
    quantity: int | None = Field(None, ge=0, le=1_000_000)
    revenue: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    category: str | None = Field(None, min_length=1, max_length=64, description="a sale's product category")
    week_start: dt.date | None = Field(None, description="a sale's week (its Monday)")
    units: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False, description="a sale's units")
    at: dt.datetime | None = Field(None, description="when it happened (default: when it arrived)")

    @model_validator(mode="after")
    def complete(self) -> Event:
        if self.type in ATTRIBUTED and self.request_id is None:
            raise ValueError(f"a {self.type} names the request_id of the answer it follows")
        if self.type == "purchase" and self.stock_code is None:
            raise ValueError("a purchase names the stock_code bought")
        if self.type == "sale" and (self.category is None or self.week_start is None or self.units is None):
            raise ValueError("a sale names its category, week_start and units")
        return self


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[Event] = Field(min_length=1)


def parse(body: bytes, most: int) -> list[Event]:
    """The events of a JSON body; ValueError naming the field (``events[i].name: ...``)."""
    try:
        events = EventBatch.model_validate_json(body).events
    except ValidationError as error:
        first = error.errors()[0]
        loc = list(first["loc"])
        where = "body" if not loc else (f"events[{loc[1]}]" + "".join(f".{p}" for p in loc[2:])
                                        if loc[0] == "events" and len(loc) > 1 else ".".join(map(str, loc)))
        raise ValueError(f"{where}: {first['msg']}") from None
    if len(events) > most:
        raise ValueError(f"events: at most {most} a request (serving.max_batch)")
    return events


def records(events: list[Event], log: RequestLog, model: str) -> dict[str, Any]:
    """One log record for one request's events: ids as the request log keeps them."""
    rows = []
    for event in events:
        row: dict[str, Any] = {"type": event.type}
        if event.request_id is not None:
            row["request_id"] = log.request_id(event.request_id)
        if event.customer_id is not None:
            row["customer"] = log.pseudonymise(event.customer_id)
        for name in ("stock_code", "quantity", "revenue", "category", "units"):
            if (value := getattr(event, name)) is not None:
                row[name] = value
        if event.week_start is not None:
            row["week_start"] = event.week_start.isoformat()
        if event.at is not None:
            row["at"] = event.at.isoformat()
        rows.append(row)
    return {"model": model, "rows": rows}
