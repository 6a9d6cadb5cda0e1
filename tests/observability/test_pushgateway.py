"""The monitoring job's numbers and thresholds reach Prometheus through a real Pushgateway (Debian package)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.loop import write_metrics
from tests import needs
from zmlops.settings import MonitoringSettings, Settings

pytestmark = needs.binary("prometheus-pushgateway")


PASSWORDS = {"monitoring": "push-secret", "prometheus": "scrape-secret"}


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """The Pushgateway as the chart runs it: every route behind basic auth (users from zm auth's web config)."""
    from zmlops.auth import web_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "web-config.yml"
    config.write_text(web_config(PASSWORDS, rounds=4))
    # Debian's default persists to /var/lib/prometheus (another run's numbers); the image keeps them in memory
    proc = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}",
                             f"--web.config.file={config}", "--persistence.file="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1, auth=("prometheus", PASSWORDS["prometheus"])).status_code \
                        == 200:
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
    text = httpx.get(f"{url}/metrics", timeout=5, auth=("prometheus", PASSWORDS["prometheus"])).text
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k not in ("instance",))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name.startswith("zm_")}


def _settings(tmp_path: Path, url: str, password: str | None = PASSWORDS["monitoring"]) -> Settings:
    return Settings(home=tmp_path / "zm", monitoring=MonitoringSettings(
        pushgateway_url=url, drift_share=0.4, pushgateway_password=password))


def test_latest_numbers_and_thresholds_are_pushed_and_replaced(tmp_path: Path, pushgateway: str) -> None:
    settings = _settings(tmp_path, pushgateway)
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


def test_only_the_monitoring_credentials_push_and_a_restarted_gateway_is_refilled(tmp_path: Path,
                                                                                pushgateway: str) -> None:
    """Without the password (or with a wrong one) nothing is pushed or read, probes included; the receiver's
    reconcile refills an empty gateway from the object store with the monitoring job's credentials."""
    from urllib.error import HTTPError

    from monitoring.loop import reconcile_pushgateway

    result = [{"family": "demand-forecast", "drift_share": 0.6, "reasons": ["drift"], "columns": {}, "signals": {}}]
    for password in (None, "wrong"):
        with pytest.raises(HTTPError) as refused:
            write_metrics(_settings(tmp_path, pushgateway, password), result)
        assert refused.value.code == 401
    for path in ("/metrics", "/-/ready", "/api/v1/metrics"):
        assert httpx.get(f"{pushgateway}{path}", timeout=5).status_code == 401
    assert not _samples(pushgateway)

    settings = _settings(tmp_path, pushgateway)
    write_metrics(settings, result)
    assert not reconcile_pushgateway(settings)  # it holds the numbers: nothing to do
    deleted = httpx.delete(f"{pushgateway}/metrics/job/zm-monitoring", auth=("monitoring", PASSWORDS["monitoring"]),
                           timeout=5)
    assert deleted.status_code == 202 and not _samples(pushgateway)  # as after a restart with an empty disk
    assert reconcile_pushgateway(settings)
    job = ("job", "zm-monitoring")
    assert _samples(pushgateway)[("zm_data_drift_share", frozenset({job, ("model", "demand-forecast")}))] == 0.6
