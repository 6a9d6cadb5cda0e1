"""The monitoring job's numbers and thresholds reach Prometheus through a real Pushgateway (Debian package)."""

from __future__ import annotations

import os
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

pytestmark = [needs.binary("prometheus-pushgateway"), needs.binary("haproxy")]

PASSWORDS = {"monitoring": "push-secret", "prometheus": "scrape-secret"}
PROXY_RULES = Path(__file__).resolve().parents[2] / "charts" / "zero-margin" / "files" / "pushgateway-proxy.cfg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """The Pushgateway's pod as the chart runs it: the Pushgateway on the pod's loopback, HAProxy in front with
    the chart's rules (files/pushgateway-proxy.cfg) and the users of `zm auth pushgateway-users`."""
    from zmlops.auth import pushgateway_users

    port, backend = _free_port(), _free_port()
    users = tmp_path / "users.cfg"
    users.write_text(pushgateway_users(PASSWORDS, ("monitoring",), rounds=4))
    # Debian's default persists to /var/lib/prometheus (another run's numbers); the image keeps them in memory
    procs = [subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{backend}",
                               "--persistence.file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(["haproxy", "-db", "-f", str(PROXY_RULES), "-f", str(users)],
                              env={**os.environ, "LISTEN": f"127.0.0.1:{port}", "PUSHGATEWAY": f"127.0.0.1:{backend}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("pushgateway or its proxy did not start")
        yield url
    finally:
        for proc in procs:
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
    """Without the password (or with a wrong one) nothing is pushed or read; Prometheus' user reads but may not
    push, replace or delete; the probes need no credentials. The receiver's reconcile refills an empty gateway
    from the object store with the monitoring job's credentials."""
    from urllib.error import HTTPError

    from monitoring.loop import reconcile_pushgateway

    result = [{"family": "demand-forecast", "drift_share": 0.6, "reasons": ["drift"], "columns": {}, "signals": {}}]
    for password in (None, "wrong"):
        with pytest.raises(HTTPError) as refused:
            write_metrics(_settings(tmp_path, pushgateway, password), result)
        assert refused.value.code == 401
    for path in ("/metrics", "/api/v1/metrics", "/api/v1/status", "/"):
        assert httpx.get(f"{pushgateway}{path}", timeout=5).status_code == 401, path
        assert httpx.get(f"{pushgateway}{path}", auth=("prometheus", "wrong"), timeout=5).status_code == 401, path
    for path in ("/-/ready", "/-/healthy"):  # the kubelet's probes
        assert httpx.get(f"{pushgateway}{path}", timeout=5).status_code == 200, path
    assert not _samples(pushgateway)

    settings = _settings(tmp_path, pushgateway)
    write_metrics(settings, result)
    scraper = ("prometheus", PASSWORDS["prometheus"])
    job = ("job", "zm-monitoring")
    for method in ("PUT", "POST", "DELETE"):  # the scraper's credentials cannot change what Prometheus reads
        answer = httpx.request(method, f"{pushgateway}/metrics/job/zm-monitoring", auth=scraper, timeout=5,
                               content=b"zm_data_drift_share{model=\"demand-forecast\"} 0\n")
        assert answer.status_code == 403, method
    assert httpx.request("PUT", f"{pushgateway}/api/v1/admin/wipe", auth=scraper, timeout=5).status_code == 403
    assert _samples(pushgateway)[("zm_data_drift_share", frozenset({job, ("model", "demand-forecast")}))] == 0.6
    assert not reconcile_pushgateway(settings)  # it holds the numbers: nothing to do
    deleted = httpx.delete(f"{pushgateway}/metrics/job/zm-monitoring", auth=("monitoring", PASSWORDS["monitoring"]),
                           timeout=5)
    assert deleted.status_code == 202 and not _samples(pushgateway)  # as after a restart with an empty disk
    assert reconcile_pushgateway(settings)
    assert _samples(pushgateway)[("zm_data_drift_share", frozenset({job, ("model", "demand-forecast")}))] == 0.6


def test_the_userlist_names_only_its_pushers_as_pushers() -> None:
    from zmlops.auth import pushgateway_users

    text = pushgateway_users({"monitoring": "a", "monitoring-next": "b", "prometheus": "c"},
                             ("monitoring", "monitoring-next"), rounds=4)
    lines = {line.split()[1]: line for line in text.splitlines() if line.strip().startswith("user ")}
    assert lines["monitoring"].endswith("groups pushers") and lines["monitoring-next"].endswith("groups pushers")
    assert "groups" not in lines["prometheus"] and "$2b$04$" in lines["prometheus"]
    assert "c" not in lines["prometheus"].split()  # hashes only
    with pytest.raises(ValueError, match="pushers without a password"):
        pushgateway_users({"prometheus": "c"}, ("monitoring",))
    with pytest.raises(ValueError, match="user name"):
        pushgateway_users({"bad name": "c"}, ())
