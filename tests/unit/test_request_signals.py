"""Request-log signals: served segment shares, recommendation hit rate on pseudonymised ids."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from inference_services.request_log import RequestLog
from monitoring.requests import read_log, request_signals
from zmlops.settings import Settings
from zmlops.stores import object_store

pytestmark = pytest.mark.unit


def test_hit_rate_joins_pseudonymised_log_rows_with_later_purchases(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    log = RequestLog(object_store(settings), "product-recommendation",
                     settings.pseudonymisation_key.get_secret_value(), settings.request_log)
    for customer, items, cold in ((1, ["A", "B"], False), (2, ["C"], False), (3, ["D"], True)):
        log.append({"version": "4", "rows": [{"customer": log.pseudonymise(customer), "items": items,
                                               "cold_start": cold}]})
    log.append({"version": "3", "rows": [{"customer": log.pseudonymise(9), "items": ["Z"], "cold_start": False}]})
    log.close()
    assert "1" not in {str(x) for x in read_log(object_store(settings), "product-recommendation")["customer"]}
    ts = pd.Timestamp("2025-01-06")
    ref = pd.DataFrame({"invoice_ts": [ts], "customer_id": [1], "stock_code": ["A"]})
    cur = pd.DataFrame({"invoice_ts": [ts, ts + pd.Timedelta(days=3), ts + pd.Timedelta(days=4)],
                        "customer_id": [2, 1, 2], "stock_code": ["C", "B", "X"]})
    model = SimpleNamespace(items_=pd.Index(list("ABCDEFGH")))
    out = request_signals(settings, "product-recommendation", "4", model, ref, cur)
    assert out["requests"] == 3  # version 3's row is not this model's
    assert out["recommendation_hit_rate"] == 0.5  # customer 1 bought B after training; 2 bought C before
    assert out["served_coverage"] == 4 / 8


def test_click_through_joins_clicks_to_served_lists_by_request_id(tmp_path: Path) -> None:
    from monitoring.requests import EVENTS

    settings = Settings(home=tmp_path)
    store, key = object_store(settings), settings.pseudonym_key.decode()
    log = RequestLog(store, "product-recommendation", key, settings.request_log)
    for n, customer in enumerate((1, 2, 3, 4)):
        log.append({"version": "4", "request_id": log.request_id(f"r{n}"),
                    "rows": [{"customer": log.pseudonymise(customer), "items": ["A"], "cold_start": False}]})
    log.close()
    ts = pd.Timestamp("2025-01-06")
    sold = pd.DataFrame({"invoice_ts": [ts], "customer_id": [1], "stock_code": ["A"]})
    model = SimpleNamespace(items_=pd.Index(list("AB")))
    assert "served_click_through" not in request_signals(settings, "product-recommendation", "4", model, sold, sold)
    events = RequestLog(store, "product-recommendation", key, settings.request_log, prefix=EVENTS)
    events.append({"model": "product-recommendation", "rows": [  # r0 clicked by its customer, r2 by someone else
        {"type": "impression", "request_id": events.request_id("r0")},
        {"type": "click", "request_id": events.request_id("r0"), "customer": events.pseudonymise(1)},
        {"type": "click", "request_id": events.request_id("r2"), "customer": events.pseudonymise(9)},
        {"type": "click", "request_id": events.request_id("r3")}]})  # a click naming no customer: its answer
    events.close()
    out = request_signals(settings, "product-recommendation", "4", model, sold, sold)
    assert out["served_click_through"] == 2 / 4


def test_served_segment_shift_against_training_shares(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    log = RequestLog(object_store(settings), "customer-segmentation", "k", settings.request_log)
    for seg in ["loyal"] * 3 + ["bargain"]:
        log.append({"version": "1", "rows": [{"customer": None, "segment": seg, "degraded": seg == "bargain"}]})
    log.close()
    model = SimpleNamespace(profiles_=pd.DataFrame({"share": [0.5, 0.5]}, index=["loyal", "bargain"]))
    out = request_signals(settings, "customer-segmentation", "1", model, pd.DataFrame(), pd.DataFrame())
    assert out["served_segment_shift"] == pytest.approx(0.25) and out["degraded_share"] == 0.25


def test_only_requests_since_the_last_check_are_read(tmp_path: Path) -> None:
    import datetime as dt

    settings = Settings(home=tmp_path)
    log = RequestLog(object_store(settings), "demand-forecast", "k", settings.request_log)
    log.append({"version": "1", "rows": [{"category": "kitchen", "units": [10.0, 30.0]}]})
    cut = dt.datetime.now(dt.UTC).isoformat()
    import time

    time.sleep(0.01)
    log.append({"version": "1", "rows": [{"category": "garden", "units": [100.0]}]})
    log.close()
    out = request_signals(settings, "demand-forecast", "1", None, pd.DataFrame(), pd.DataFrame(), since=cut)
    assert out["requests"] == 1 and out["served_forecast_units"] == 100.0
    everything = request_signals(settings, "demand-forecast", "1", None, pd.DataFrame(), pd.DataFrame())
    assert everything["requests"] == 2 and everything["served_forecast_units"] == 60.0
