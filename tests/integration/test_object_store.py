"""The object store on a real S3-compatible server (moto's server mode): what the k8s profile's pods share.

A pod writes into its cache and uploads; another pod with an empty cache reads the same bytes; the
request log's batches land there and the monitoring side reads them back.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from zmlops.stores import ObjectStore

pytestmark = pytest.mark.integration


def test_what_one_pod_stores_another_pod_reads_with_an_empty_cache(s3: str, tmp_path: Path) -> None:
    writer, reader = ObjectStore(s3, tmp_path / "pod-a"), ObjectStore(s3, tmp_path / "pod-b")
    writer.put("reports/monitoring/a.json", b'{"a": 1}')
    (tmp_path / "pod-a" / "work" / "v1").mkdir(parents=True)
    (tmp_path / "pod-a" / "work" / "v1" / "clean.parquet").write_bytes(b"PAR1...")
    writer.upload("work/v1/clean.parquet")
    assert not (tmp_path / "pod-b").exists()
    assert reader.get("reports/monitoring/a.json") == b'{"a": 1}'
    local = reader.download("work/v1/clean.parquet")
    assert local is not None and local.read_bytes() == b"PAR1..." and local.is_relative_to(tmp_path / "pod-b")
    assert reader.download("work/v9/clean.parquet") is None
    assert reader.keys("work") == ["work/v1/clean.parquet"]
    writer.delete("work/v1")
    assert reader.keys("work") == [] and not reader.exists("work/v1/clean.parquet")


def test_request_log_batches_reach_the_store_and_read_back(s3: str, tmp_path: Path) -> None:
    from inference_services.request_log import RequestLog
    from monitoring.requests import read_log
    from zmlops.settings import RequestLogSettings

    store = ObjectStore(s3, tmp_path / "predictor")
    log = RequestLog(store, "product-recommendation", "k", RequestLogSettings(flush_seconds=0.2))
    for n in range(30):
        log.append({"version": "3", "rows": [{"customer": log.pseudonymise(n), "items": ["A"], "cold_start": False}]})
    log.close()
    assert not (tmp_path / "predictor" / "requests").exists()  # nothing of the log stays on the pod's disk
    rows = read_log(ObjectStore(s3, tmp_path / "monitoring-task"), "product-recommendation", version="3")
    assert len(rows) == 30 and set(rows["customer"]) == {log.pseudonymise(n) for n in range(30)}


def test_a_pushgateway_that_restarted_empty_gets_the_last_stored_numbers_back(tmp_path: Path) -> None:
    import shutil

    import httpx

    from monitoring.loop import reconcile_pushgateway, write_metrics
    from zmlops.settings import MonitoringSettings, Settings

    binary = shutil.which("prometheus-pushgateway")
    assert binary, "prometheus-pushgateway is missing: make test installs the Debian package"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings = Settings(home=tmp_path / "zm", monitoring=MonitoringSettings(pushgateway_url=url))

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("pushgateway did not start")

    result = {"family": "demand-forecast", "drift_share": 0.25, "signals": {"units_wape_increase": 0.07},
              "columns": {}, "reasons": []}
    proc = start()
    try:
        write_metrics(settings, [result])  # the monitoring DAG: stored, and pushed
        assert reconcile_pushgateway(settings) is False  # nothing lost: nothing pushed again
        proc.kill()
        proc.wait()
        proc = start()  # a new pod, an empty disk: the numbers are gone
        assert 'job="zm-monitoring"' not in httpx.get(f"{url}/metrics").text
        assert reconcile_pushgateway(settings) is True
        text = httpx.get(f"{url}/metrics").text
        assert 'zm_data_drift_share{instance="",job="zm-monitoring",model="demand-forecast"} 0.25' in text
    finally:
        proc.kill()
        proc.wait()
