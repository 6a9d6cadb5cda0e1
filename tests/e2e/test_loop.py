"""The whole loop through a real Airflow standalone on the embedded stack (what `make demo` runs).

`make test-all` only: `make test` runs the loop once, in the Kubernetes topology (tests/stack/), through
the same DAGs, and `make demo` runs this path whole.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from zmlops.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.full]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_drift_re_enters_training_through_airflow_and_the_services_serve_the_new_version(tmp_path: Path) -> None:
    from demos.loop_demo import run_loop
    from training.data.world import SimulationConfig

    settings = Settings(home=tmp_path / "zm").model_copy(update={
        "airflow": Settings().airflow.model_copy(update={"api_url": f"http://127.0.0.1:{_port()}"}),
        "serving": Settings().serving.model_copy(update={"ports": {f: _port() for f in (
            "demand-forecast", "customer-segmentation", "product-recommendation")}}),
    })
    outcome = run_loop(settings, SimulationConfig(seed=11, n_customers=600, n_products=300, weeks=80),
                       requests=50)
    assert outcome["code"] == 0, outcome
    assert outcome["failed_requests"] == 0
    flagged = {f for f, d in outcome["decisions"].items() if d != "no action"}
    assert "product-recommendation" in flagged  # the planted change: a new design line
    assert "never saw" in outcome["after"]["product-recommendation"]["latest_reason"]
    assert outcome["retrain"]["state"] == "success"
    for family, before in outcome["before"].items():
        after = outcome["after"][family]
        if family in flagged:  # retrained once for the drift, gated (promoted or refused)
            assert after["latest"] == str(int(before["latest"]) + 1), (family, after)
            assert after["latest_reason"].startswith("drift") and after["latest_decision"] in ("staged", "rejected")
        else:
            assert after["latest"] == before["latest"], (family, outcome["decisions"])
        assert outcome["served"][family] == after["version"]  # the services follow production
