"""The request log's batches: written by age and by size, kept while the store is down, bounded in memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inference_services.request_log import DROPPED, RequestLog
from zmlops.settings import RequestLogSettings
from zmlops.stores import ObjectStore

pytestmark = pytest.mark.unit


class FlakyStore(ObjectStore):
    """A local object store whose writes fail while ``down`` (the object store's outage)."""

    def __init__(self, root: Path) -> None:
        super().__init__(None, root)
        self.down = False
        self.writes = 0

    def put(self, key: str, data: bytes, keep: bool = True) -> Path:
        if self.down:
            raise ConnectionError("store unreachable")
        self.writes += 1
        return super().put(key, data, keep)


def _lines(store: ObjectStore) -> list[bytes]:
    return [line for key in store.keys("requests") for line in (store.get(key) or b"").splitlines()]


def test_a_batch_is_written_when_it_is_old_enough(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path)
    log = RequestLog(store, "demand-forecast", "k", RequestLogSettings(flush_seconds=0.3, batch_records=1000))
    log.append({"n": 1})
    log.append({"n": 2})
    assert _lines(store) == []  # nothing is written on the request path
    deadline = time.monotonic() + 5
    while not _lines(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_lines(store)) == 2 and store.writes == 1  # one object for both records
    (key,) = store.keys("requests/demand-forecast")
    assert key.count("/") == 3 and key.endswith(".jsonl")  # requests/<model>/<day>/<batch>.jsonl
    log.close()


def test_a_full_batch_is_written_without_waiting_for_its_age(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path)
    log = RequestLog(store, "demand-forecast", "k", RequestLogSettings(flush_seconds=3600, batch_records=5))
    for n in range(12):
        log.append({"n": n})
    deadline = time.monotonic() + 5
    while len(_lines(store)) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_lines(store)) == 10  # two full batches; the last 2 records wait for their age
    log.close()
    assert sorted(int(line.split(b":")[1].split(b",")[0]) for line in _lines(store)) == list(range(12))


def test_records_wait_while_the_store_is_down_and_are_written_when_it_is_back(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path)
    log = RequestLog(store, "product-recommendation", "k", RequestLogSettings(flush_seconds=0.1))
    store.down = True
    for n in range(50):
        log.append({"n": n})
    time.sleep(0.5)
    assert _lines(store) == []
    store.down = False
    assert log.flush(timeout=5)
    assert len(_lines(store)) == 50
    log.close()


def test_an_outage_drops_the_oldest_records_beyond_the_bound_and_counts_them(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path)
    cfg = RequestLogSettings(flush_seconds=0.1, max_buffer_mb=0.01)  # about 10 KB
    log = RequestLog(store, "customer-segmentation", "k", cfg)
    before = DROPPED.labels("customer-segmentation")._value.get()
    store.down = True
    started = time.perf_counter()
    for n in range(2_000):
        log.append({"n": n, "pad": "x" * 40})
    assert time.perf_counter() - started < 1.0  # appends never wait for the store
    dropped = DROPPED.labels("customer-segmentation")._value.get() - before
    assert dropped > 1_500
    store.down = False
    assert log.flush(timeout=5)
    kept = [int(line.split(b":")[1].split(b",")[0]) for line in _lines(store)]
    assert len(kept) == 2_000 - dropped and max(kept) == 1_999 and min(kept) == dropped  # the newest survive
    log.close()


def test_retention_deletes_only_the_days_older_than_the_setting(tmp_path: Path) -> None:
    import datetime as dt

    from monitoring.requests import log_days, prune_log
    from zmlops.settings import RequestLogSettings, Settings
    from zmlops.stores import object_store

    settings = Settings(home=tmp_path, request_log=RequestLogSettings(retention_days=30))
    store = object_store(settings)
    for day in ("2026-10-01", "2026-11-02", "2026-11-03", "2026-12-01"):
        store.put(f"requests/demand-forecast/{day}/000000-w-000001.jsonl", b'{"n": 1}\n')
    store.put("requests/customer-segmentation/2026-10-01/000000-w-000001.jsonl", b'{"n": 1}\n')
    gone = prune_log(settings, "demand-forecast", today=dt.date(2026, 12, 3))
    assert gone == ["2026-10-01", "2026-11-02"]  # 2026-11-03 is exactly 30 days old: kept
    assert log_days(store, "demand-forecast") == ["2026-11-03", "2026-12-01"]
    assert log_days(store, "customer-segmentation") == ["2026-10-01"]  # another model's log is its own


def test_report_retention_deletes_old_checks_but_each_model_s_newest(tmp_path: Path) -> None:
    import datetime as dt

    from monitoring.loop import PREFIX, prune_reports
    from zmlops.settings import MonitoringSettings, Settings
    from zmlops.stores import object_store

    settings = Settings(home=tmp_path, monitoring=MonitoringSettings(report_retention_days=90))
    store = object_store(settings)
    kept_anyway = ["index.html", "metrics.prom"]
    names = ["demand-forecast-v1-20260801T030000", "demand-forecast-v2-20260903T030000",  # > 90 days before 12-03
             "demand-forecast-v3-20261201T030000",
             "customer-segmentation-v1-20260801T030000"]  # old, but the newest check of its model
    for name in names:
        store.put(f"{PREFIX}/{name}.json", b"{}")
        store.put(f"{PREFIX}/{name}.html", b"<html></html>")
    for name in kept_anyway:
        store.put(f"{PREFIX}/{name}", b"x")
    gone = prune_reports(settings, today=dt.date(2026, 12, 3))
    assert gone == [f"{PREFIX}/demand-forecast-v1-20260801T030000.{s}" for s in ("html", "json")] + \
        [f"{PREFIX}/demand-forecast-v2-20260903T030000.{s}" for s in ("html", "json")]
    left = {k.rsplit("/", 1)[1] for k in store.keys(PREFIX)}
    assert left == {*kept_anyway, *(f"{n}.{s}" for n in names[2:] for s in ("html", "json"))}


def test_request_ids_are_kept_as_keyed_hashes_unless_a_setting_allows_them(tmp_path: Path) -> None:
    """A client may put a customer's id in its request id: by default only a keyed hash of it is logged, distinct
    from that customer's own pseudonym; keep_request_ids logs it as sent."""
    from governance.pseudonyms import pseudonymise, pseudonymise_text

    hashed = RequestLog(ObjectStore(None, tmp_path), "m", "k", RequestLogSettings())
    kept = RequestLog(ObjectStore(None, tmp_path), "m", "k", RequestLogSettings(keep_request_ids=True))
    assert hashed.request_id("cust-12347") == pseudonymise_text(b"k", "cust-12347") != "cust-12347"
    assert len(hashed.request_id("cust-12347")) == 16 and hashed.request_id("a") != hashed.request_id("b")
    assert hashed.request_id("12347") != pseudonymise(b"k", 12347)  # never a customer's pseudonym
    assert pseudonymise_text(b"other key", "cust-12347") != hashed.request_id("cust-12347")
    assert kept.request_id("cust-12347") == "cust-12347"

