"""What the services answered (the request log) against what happened next (the new data).

Signals per model, exported with the drift numbers: ``requests`` (predictions logged for the
production version) and the family's own (:class:`monitoring.checks.Checks` ``served``, named by
its catalog entry).

The log is read from the object store (``requests/<model>/<day>/*.jsonl``, written in batches by
every predictor process); :func:`prune_log` deletes the days older than the retention setting.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from typing import Any

import pandas as pd

from zmlops import catalog
from zmlops.settings import Settings
from zmlops.stores import ObjectStore, object_store

__all__ = ["read_log", "read_records", "request_signals", "log_days", "prune_log", "rewrite_customers", "PREFIX",
           "EVENTS", "SHADOW"]

PREFIX = "requests"  # inference_services.request_log.PREFIX (not imported: that is the serving package)
EVENTS = "events"  # inference_services.request_log.EVENTS: outcome events, the same shape, the same pseudonyms
SHADOW = "shadow"  # inference_services.request_log.SHADOW: the shadow version's comparisons (no customers)


def log_days(store: ObjectStore, family: str, prefix: str = PREFIX) -> list[str]:
    """The UTC days (YYYY-MM-DD) that have request-log (or event-log) batches of ``family``."""
    return sorted({key.split("/")[2] for key in store.keys(f"{prefix}/{family}") if key.count("/") >= 3})


def read_records(store: ObjectStore, family: str, prefix: str, since: str | None = None) -> pd.DataFrame:
    """One row per logged record of ``family`` under ``prefix`` (not exploded), written after ``since``."""
    keys = [k for k in store.keys(f"{prefix}/{family}") if k.endswith(".jsonl")
            and (since is None or k.split("/")[2] >= since[:10])]
    blobs = store.get_many(keys)
    parts = [pd.read_json(io.BytesIO(blobs[k]), lines=True, dtype=False) for k in keys if blobs.get(k)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if since is not None and not frame.empty:
        frame = frame[pd.to_datetime(frame["ts"], utc=True) > pd.Timestamp(since)]
    return frame


def read_log(store: ObjectStore, family: str, version: str | None = None, since: str | None = None,
             prefix: str = PREFIX) -> pd.DataFrame:
    """One row per answered row (``rows`` exploded), with the request's version and time (``prefix=EVENTS``: one
    row per outcome event).

    ``since`` (ISO time) keeps requests after it; days wholly before it are not read.
    """
    log = read_records(store, family, prefix, since)
    if version is not None and not log.empty:
        log = log[log["version"].astype(str) == str(version)]
    if log.empty:
        return pd.DataFrame()
    keep = [c for c in ("ts", "version", "request_id", "experiment", "variant", "rows") if c in log]
    rows = log[keep].explode("rows", ignore_index=True)
    detail = pd.json_normalize(rows["rows"].tolist())
    return pd.concat([rows.drop(columns="rows"), detail], axis=1)


def clicked(served: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """Which served rows were clicked (a boolean per row of ``served``, one row per answered row of
    :func:`read_log`): a click naming its customer joins that customer's row of the answer (one request may name
    several customers), one naming none joins every row of the answer, by the answer's request id."""
    clicks = events[events["type"] == "click"] if "type" in events else pd.DataFrame(columns=["request_id"])
    named = clicks["customer"].notna() if "customer" in clicks else pd.Series(False, index=clicks.index)
    pairs = set(zip(clicks.loc[named, "request_id"], clicks.loc[named, "customer"], strict=True))
    anonymous = set(clicks.loc[~named, "request_id"])
    customers = served["customer"] if "customer" in served else pd.Series(None, index=served.index)
    return served["request_id"].isin(anonymous) | pd.Series(
        [(r, c) in pairs for r, c in zip(served["request_id"], customers, strict=True)], index=served.index,
        dtype=bool)


def request_signals(settings: Settings, family: str, model_version: str, estimator: Any,
                    ref_clean: pd.DataFrame, cur_clean: pd.DataFrame, since: str | None = None) -> dict[str, float]:
    """Signals from the requests answered by ``model_version`` after ``since`` (the previous check): ``requests``,
    the family's own (its checks' ``served``) and, where clients send outcome events with clicks,
    ``served_click_through`` (the share of answered rows clicked, :func:`clicked`)."""
    store = object_store(settings)
    served = read_log(store, family, model_version, since)
    out: dict[str, float] = {"requests": float(len(served))}
    if served.empty:
        return out
    from monitoring.checks import Checks

    checks: Checks = catalog.load(catalog.entry(family).checks)
    out.update(checks.served(settings, served, estimator, ref_clean, cur_clean))
    events = read_log(store, family, since=str(served["ts"].min()), prefix=EVENTS)
    if "request_id" in served and "type" in events and events["type"].isin(["impression", "click"]).any():
        out["served_click_through"] = float(clicked(served, events).mean())
    return out


def prune_log(settings: Settings, family: str, today: dt.date | None = None) -> list[str]:
    """Delete the request-log and event-log days of ``family`` older than ``request_log.retention_days``; returns
    them."""
    store = object_store(settings)
    cutoff = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=settings.request_log.retention_days)
    gone = []
    for prefix in (PREFIX, EVENTS, SHADOW):
        for day in log_days(store, family, prefix):
            if day < cutoff.isoformat():
                store.delete(f"{prefix}/{family}/{day}")
                gone.append(day)
    return sorted(set(gone))


def rewrite_customers(store: ObjectStore, customers: Mapping[str, str | None]) -> int:
    """Rewrite every request-log and event-log batch naming one of ``customers`` (pseudonyms): a row's customer
    becomes its mapped pseudonym, or the row goes where it maps to None (an erasure); a record left without rows
    goes, a batch left without records is deleted. Returns the rows changed."""
    import json

    needles = [c.encode() for c in customers] if len(customers) <= 64 else None  # a cheap look first where few
    changed = 0
    for key in [k for prefix in (PREFIX, EVENTS) for k in store.keys(prefix)]:
        data = store.get(key) or b""
        if needles is not None and not any(n in data for n in needles):
            continue
        kept, touched = [], 0
        for line in data.splitlines():
            record = json.loads(line)
            rows = []
            for row in record.get("rows", []):
                if row.get("customer") not in customers:
                    rows.append(row)
                    continue
                touched += 1
                if customers[row["customer"]] is not None:
                    rows.append({**row, "customer": customers[row["customer"]]})
            if rows:
                kept.append(json.dumps({**record, "rows": rows}).encode())
        if not touched:
            continue
        changed += touched
        if kept:
            store.put(key, b"\n".join(kept) + b"\n")
        else:
            store.delete(key)
    return changed
