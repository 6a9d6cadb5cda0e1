"""What the services answered (the request log) against what happened next (the new data).

Signals per model, exported with the drift numbers:

- all: ``requests`` (predictions logged for the production version);
- customer-segmentation: ``served_segment_shift``, the largest change of a segment's share among
  served answers against the shares at training (prediction drift), and ``degraded_share``;
- product-recommendation: ``recommendation_hit_rate``, the share of served lists of which the
  customer bought at least one item in the weeks after the model's training data, and
  ``served_coverage``, the share of the catalogue recommended at least once;
- demand-forecast: ``served_forecast_units``, the mean weekly units of served forecasts.

Customer ids in the log are keyed hashes; the new transactions are hashed with the same key
(settings) to join them, so no raw id is ever read from the log.

The log is read from the object store (``requests/<model>/<day>/*.jsonl``, written in batches by
every predictor process); :func:`prune_log` deletes the days older than the retention setting.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from typing import Any

import pandas as pd

from zmlops.settings import Settings
from zmlops.stores import ObjectStore, object_store

__all__ = ["read_log", "request_signals", "log_days", "prune_log"]

PREFIX = "requests"  # inference_services.request_log.PREFIX (not imported: that is the serving package)


def log_days(store: ObjectStore, family: str) -> list[str]:
    """The UTC days (YYYY-MM-DD) that have request-log batches of ``family``."""
    return sorted({key.split("/")[2] for key in store.keys(f"{PREFIX}/{family}") if key.count("/") >= 3})


def read_log(store: ObjectStore, family: str, version: str | None = None, since: str | None = None) -> pd.DataFrame:
    """One row per answered row (``rows`` exploded), with the request's version and time.

    ``since`` (ISO time) keeps requests after it; days wholly before it are not read.
    """
    keys = [k for k in store.keys(f"{PREFIX}/{family}") if k.endswith(".jsonl")
            and (since is None or k.split("/")[2] >= since[:10])]
    blobs = store.get_many(keys)
    parts = [pd.read_json(io.BytesIO(blobs[k]), lines=True, dtype=False) for k in keys if blobs.get(k)]
    if not parts:
        return pd.DataFrame()
    log = pd.concat(parts, ignore_index=True)
    if version is not None:
        log = log[log["version"].astype(str) == str(version)]
    if since is not None and not log.empty:
        log = log[pd.to_datetime(log["ts"], utc=True) > pd.Timestamp(since)]
    if log.empty:
        return pd.DataFrame()
    rows = log[["ts", "version", "rows"]].explode("rows", ignore_index=True)
    detail = pd.json_normalize(rows["rows"].tolist())
    return pd.concat([rows.drop(columns="rows"), detail], axis=1)


def request_signals(settings: Settings, family: str, model_version: str, estimator: Any,
                    ref_clean: pd.DataFrame, cur_clean: pd.DataFrame, since: str | None = None) -> dict[str, float]:
    """Signals from the requests answered by ``model_version`` after ``since`` (the previous check)."""
    served = read_log(object_store(settings), family, model_version, since)
    out: dict[str, float] = {"requests": float(len(served))}
    if served.empty:
        return out
    if family == "customer-segmentation":
        trained = estimator.profiles_["share"]
        now = served["segment"].value_counts(normalize=True)
        out["served_segment_shift"] = float(trained.sub(now, fill_value=0.0).abs().max())
        out["degraded_share"] = float(served["degraded"].astype(bool).mean())
    elif family == "product-recommendation":
        from governance.pseudonyms import pseudonymise

        key = settings.pseudonymisation_key.get_secret_value().encode()
        after = cur_clean[cur_clean["invoice_ts"] > ref_clean["invoice_ts"].max()]
        bought = after.assign(customer=[pseudonymise(key, c) for c in after["customer_id"]]) \
            .groupby("customer")["stock_code"].agg(set)
        warm = served[~served["cold_start"].astype(bool)]
        hits = [bool(set(items) & bought.get(customer, set())) for customer, items in zip(
            warm["customer"], warm["items"], strict=True)]
        out["recommendation_hit_rate"] = float(sum(hits) / len(hits)) if hits else 0.0
        items = {i for row in served["items"] for i in row}
        out["served_coverage"] = float(len(items) / max(len(estimator.items_), 1))
    elif family == "demand-forecast":
        out["served_forecast_units"] = float(served["units"].map(lambda u: sum(u) / max(len(u), 1)).mean())
    return out


def prune_log(settings: Settings, family: str, today: dt.date | None = None) -> list[str]:
    """Delete the request-log days of ``family`` older than ``request_log.retention_days``; returns them."""
    store = object_store(settings)
    cutoff = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=settings.request_log.retention_days)
    gone = [day for day in log_days(store, family) if day < cutoff.isoformat()]
    for day in gone:
        store.delete(f"{PREFIX}/{family}/{day}")
    return gone


def rewrite_customers(store: ObjectStore, customers: Mapping[str, str | None]) -> int:
    """Rewrite every request-log batch naming one of ``customers`` (pseudonyms): a row's customer becomes its
    mapped pseudonym, or the row goes where it maps to None (an erasure); a record left without rows goes, a batch
    left without records is deleted. Returns the rows changed."""
    import json

    needles = [c.encode() for c in customers] if len(customers) <= 64 else None  # a cheap look first where few
    changed = 0
    for key in store.keys(PREFIX):
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
