"""zmlops.libraries: Feast without typeguard's instrumentation, MLflow without Feast's header provider; each in a
fresh process (both switches act before a library's first import), against the libraries as they ship."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

PROBE = """
import json, sys
switched = sys.argv[1] == "switched"
if switched:
    from zmlops.settings import get_settings
    from training import tracking
    tracking.client(get_settings())  # what every step does first: the settings, then the registry's client
from mlflow.tracking.request_header.registry import _request_header_provider_registry as providers
feast_by_mlflow = "feast" in sys.modules
import feast
import typeguard

@typeguard.typechecked
def halve(x: int) -> int:
    return x // 2

try:
    halve("two")
    others_checked = False
except typeguard.TypeCheckError:
    others_checked = True
print(json.dumps({
    "feast_instrumented": "typeguard" in feast.FeatureView.__init__.__code__.co_names,
    "feast_provider": any(type(p).__module__.startswith("feast") for p in providers),
    "feast_imported_by_mlflow": feast_by_mlflow,
    "others_checked": others_checked,
}))
"""


def _probe(mode: str, tmp_path: Path) -> dict[str, bool]:
    script = tmp_path / "probe.py"  # a file: typeguard instruments from the source
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=False, cwd=REPO,
                          env={"ZM_MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, bool] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_as_shipped_feast_is_instrumented_and_its_provider_imports_it_with_mlflow(tmp_path: Path) -> None:
    assert _probe("shipped", tmp_path) == {"feast_instrumented": True, "feast_provider": True,
                                 "feast_imported_by_mlflow": True, "others_checked": True}


def test_after_get_settings_and_the_registry_client_neither_cost_remains_and_other_type_checks_stay(
        tmp_path: Path) -> None:
    assert _probe("switched", tmp_path) == {"feast_instrumented": False, "feast_provider": False,
                                  "feast_imported_by_mlflow": False, "others_checked": True}
