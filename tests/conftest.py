"""Shared fixtures: isolated settings per test, a tiny simulated data set built once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from training.data.world import SimulationConfig
from zmlops.libraries import feast_without_type_checks
from zmlops.settings import Settings, apply_telemetry_off

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO / "../shared/data/online_retail_ii/online_retail_II_2009_2010.parquet").resolve()
FULL = os.environ.get("ZM_FULL") == "1"

apply_telemetry_off()
feast_without_type_checks()  # as get_settings() does in every process of the stack (zmlops.libraries)


@pytest.fixture
def zm_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Point the `zm` commands this test runs in-process at a home (and more ``ZM_*`` settings): ZM_HOME set, the
    process-wide settings re-read (and again afterwards, so later tests do not inherit it)."""
    from zmlops.settings import get_settings

    def point(home: Path, env: dict[str, str] | None = None) -> None:
        monkeypatch.setenv("ZM_HOME", str(home))
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield point
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose whole state (registry, remote, reports, MLflow) lives in this test's tmp dir."""
    return Settings(home=tmp_path / "zm")


@pytest.fixture(scope="session")
def tiny_config() -> SimulationConfig:
    return SimulationConfig(seed=7, n_customers=400, n_products=120, weeks=60)


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory: pytest.TempPathFactory, tiny_config: SimulationConfig) -> Path:
    from training.data.simulator import simulate

    out = tmp_path_factory.mktemp("tiny-sim")
    simulate(tiny_config, out)
    return out


@pytest.fixture(scope="session")
def real_data() -> Iterator[Path]:
    if not REAL_DATA.exists():
        pytest.skip(
            f"real data absent: {REAL_DATA} (UCI Online Retail II, see ../shared/data/online_retail_ii/README.md)"
        )
    yield REAL_DATA


# ---------------------------------------------------------------- make test's two pipelines runs
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shard", choices=("integration", "rest"), default=None,
                     help="one of make test's two pipelines runs (side by side): 'integration' is tests/integration "
                     "but the rollout drills and the toy family, 'rest' everything else; every test is in exactly one")


def _shard(item: pytest.Item) -> str:
    path = Path(str(item.path))
    # the drills and the toy family run in 'rest': the two runs then end within a minute of each other
    return "integration" if "integration" in path.parts and path.name not in (
        "test_rollout_drills.py", "test_toy_family.py") else "rest"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("--shard")
    if shard is None:
        return
    other = [item for item in items if _shard(item) != shard]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if _shard(item) == shard]
