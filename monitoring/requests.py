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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from zmlops.settings import Settings

__all__ = ["read_log", "request_signals"]


def read_log(folder: Path, version: str | None = None, since: str | None = None) -> pd.DataFrame:
    """One row per answered row (``rows`` exploded), with the request's version and time.

    ``since`` (ISO time) keeps requests after it; day files wholly before it are not read.
    """
    files = sorted(f for f in folder.glob("*.jsonl") if since is None or f.stem >= since[:10])
    if not files:
        return pd.DataFrame()
    log = pd.concat((pd.read_json(f, lines=True, dtype=False) for f in files), ignore_index=True)
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
    served = read_log(settings.request_log_dir / family, model_version, since)
    out: dict[str, float] = {"requests": float(len(served))}
    if served.empty:
        return out
    if family == "customer-segmentation":
        trained = estimator.profiles_["share"]
        now = served["segment"].value_counts(normalize=True)
        out["served_segment_shift"] = float(trained.sub(now, fill_value=0.0).abs().max())
        out["degraded_share"] = float(served["degraded"].astype(bool).mean())
    elif family == "product-recommendation":
        from inference_services.request_log import pseudonymise

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
