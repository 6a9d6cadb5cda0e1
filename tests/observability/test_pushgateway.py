"""The monitoring job's numbers and thresholds reach Prometheus through a real Pushgateway (Debian package)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.loop import write_metrics
from zmlops.settings import MonitoringSettings, Settings

pytestmark = pytest.mark.skipif(shutil.which("prometheus-pushgateway") is None,
                                reason="prometheus-pushgateway missing: make test installs it")


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("pushgateway did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k not in ("instance",))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name.startswith("zm_")}


def test_latest_numbers_and_thresholds_are_pushed_and_replaced(tmp_path: Path, pushgateway: str) -> None:
    settings = Settings(home=tmp_path / "zm", monitoring=MonitoringSettings(pushgateway_url=pushgateway,
                                                                            drift_share=0.4))
    first = [{"family": "demand-forecast", "drift_share": 0.6, "reasons": ["drift"],
              "columns": {"units": {"method": "wasserstein", "score": 0.3}},
              "signals": {"units_wape_increase": 0.08}},
             {"family": "customer-segmentation", "drift_share": 0.1, "reasons": [], "columns": {},
              "signals": {"segment_share_shift": 0.01}}]
    path = write_metrics(settings, first)
    assert "zm_data_drift_share" in path.read_text()
    got = _samples(pushgateway)
    job = ("job", "zm-monitoring")
    assert got[("zm_data_drift_share", frozenset({job, ("model", "demand-forecast")}))] == 0.6
    assert got[("zm_retrain_recommended", frozenset({job, ("model", "demand-forecast")}))] == 1.0
    assert got[("zm_monitoring_threshold", frozenset({job, ("model", "demand-forecast"),
                                                      ("signal", "drift_share")}))] == 0.4
    assert got[("zm_model_quality_signal", frozenset({job, ("model", "customer-segmentation"),
                                                      ("signal", "segment_share_shift")}))] == 0.01

    # The next check replaces the job's numbers: a model no longer reported disappears.
    write_metrics(settings, [{"family": "demand-forecast", "drift_share": 0.0, "reasons": [], "columns": {},
                              "signals": {}}])
    got = _samples(pushgateway)
    assert got[("zm_data_drift_share", frozenset({job, ("model", "demand-forecast")}))] == 0.0
    assert not any(dict(labels).get("model") == "customer-segmentation" for _, labels in got)
