"""Each workload's start in the audit trail: the settings it runs with, secrets masked; a state database that
does not answer never stops a workload from starting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from governance import audit
from zmlops.settings import Settings
from zmlops.version import code_version

pytestmark = pytest.mark.unit


def test_the_start_is_recorded_with_the_settings_and_no_secret(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, feast_registry="postgresql+psycopg://feast:hunter2@db/feast",
                        feast_redis_url=SecretStr("redis://:hunter3@redis:6379"))
    entry = audit.record_start(settings, "demand-forecast-predictor", port=8080)
    assert entry is not None and entry.subject == "workload:demand-forecast-predictor"
    stored = audit.entries(settings, "workload.started")[-1]
    assert stored.details["settings"]["feast_registry"] == "postgresql+psycopg://feast:***@db/feast"
    assert stored.details["settings"]["serving"]["ports"] == settings.serving.ports
    assert stored.details["port"] == 8080 and stored.details["code_version"] == code_version()  # the commit
    assert stored.details["package_version"]
    assert "hunter" not in json.dumps(stored.details)
    assert audit.verify(settings) == []


def test_a_state_database_that_does_not_answer_does_not_stop_the_start(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, state_db_url=SecretStr("postgresql://zm:pw@127.0.0.1:9/zm"))
    t0 = time.monotonic()
    assert audit.record_start(settings, "zm-alert-receiver") is None
    assert time.monotonic() - t0 < 10
