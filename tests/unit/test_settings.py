from pathlib import Path

import pytest

from zmlops.settings import Settings, telemetry_env

pytestmark = pytest.mark.unit


def test_local_defaults_live_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.registry_dir == (tmp_path / "data-registry").resolve()
    assert s.tracking_uri.startswith("sqlite:///") and str(tmp_path) in s.tracking_uri
    assert s.remote_url == str((tmp_path / "dvc-remote").resolve())


def test_environment_overrides_nested_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZM_VALIDATION__MAX_ROW_COUNT_CHANGE", "0.2")
    monkeypatch.setenv("ZM_SEED", "9")
    s = Settings()
    assert s.validation.max_row_count_change == 0.2 and s.seed == 9


def test_k8s_profile_refuses_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a key is used: a workload that never pseudonymises (the analysts' UI) starts without one."""
    monkeypatch.setenv("ZM_PROFILE", "k8s")
    with pytest.raises(RuntimeError, match="ZM_PSEUDONYMISATION_KEY must be set"):
        assert not Settings().pseudonym_key  # raises before the assertion
    monkeypatch.setenv("ZM_PSEUDONYMISATION_KEY", "s3cret")
    assert Settings().pseudonym_key == b"s3cret"


@pytest.mark.parametrize(("attribute", "variable"), [
    ("tracking_uri", "ZM_MLFLOW_TRACKING_URI"), ("remote_url", "ZM_DVC_REMOTE_URL"),
    ("state_db", "ZM_STATE_DB_URL"), ("registry_remote", "ZM_DATA_REGISTRY_REMOTE"),
    ("object_store", "ZM_OBJECT_STORE_URL"), ("feast_registry_url", "ZM_FEAST_REGISTRY"),
    ("feast_redis", "ZM_FEAST_REDIS_URL"),
])
def test_k8s_profile_never_falls_back_to_a_pods_disk(monkeypatch: pytest.MonkeyPatch, attribute: str,
                                                       variable: str) -> None:
    monkeypatch.setenv("ZM_PROFILE", "k8s")
    monkeypatch.setenv("ZM_PSEUDONYMISATION_KEY", "s3cret")
    with pytest.raises(RuntimeError, match=variable):
        getattr(Settings(), attribute)
    monkeypatch.setenv(variable, "postgresql://zm@db/zm")
    assert getattr(Settings(), attribute) == "postgresql://zm@db/zm"
    monkeypatch.delenv(variable)
    local = getattr(Settings(profile="local", home=Path("/srv/zm")), attribute)
    embedded = {"tracking_uri": "sqlite:////srv/zm/mlflow.db", "remote_url": "/srv/zm/dvc-remote",
                "state_db": "sqlite:////srv/zm/state.db", "registry_remote": None, "object_store": None,
                "feast_registry_url": "/srv/zm/feast/registry.db", "feast_redis": ""}
    assert local == embedded[attribute]  # the embedded defaults: under ZM_HOME, or none


def test_telemetry_is_off_for_every_library() -> None:
    env = telemetry_env()
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DVC_NO_ANALYTICS"] == "1"
    assert env["GX_ANALYTICS_ENABLED"] == "False"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["FEAST_USAGE"] == "False"
    assert env["AIRFLOW__USAGE_DATA_COLLECTION__ENABLED"] == "False"
