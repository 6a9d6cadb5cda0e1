"""A fourth model family, defined in tests/ only (tests/toy_family), goes through train, serve and monitor, and
every registry of the stack carries it: the proof that a family is one catalog entry and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVING_PYTHON = REPO / ".venvs" / "serving" / "bin" / "python"
TOY = "basket-value"

# Run with the toy registered after it served: its monitoring check, and every registry that derives from the
# catalog as the stack's processes see it.
PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    from pathlib import Path

    from zmlops import catalog
    from zmlops.settings import Settings, get_settings
    from training.data import ingest
    from training.families import get_family
    from monitoring.drift import check_family
    from feature_repo.definitions import DEFINITIONS
    from dashboards import generate
    from monitoring import rules
    from dags import training as training_dag

    spec = importlib.util.spec_from_file_location("values_schema", "charts/values_schema.py")
    values_schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(values_schema)
    chart = Path("charts/zero-margin")
    family = sys.argv[1]
    models = values_schema.build(chart)["properties"]["inference"]["properties"]["models"]["properties"]
    board = generate.build()["zm-models"]
    dag = training_dag.training_dag
    settings = get_settings()
    version = ingest.registry_for(settings).resolve("current").name
    print(json.dumps({
        "check": check_family(settings, family, version, Path(sys.argv[2])).to_dict(),
        "catalog": list(catalog.FAMILIES),
        "port": Settings().serving.ports.get(family),
        "primary_metric": get_family(family).primary_metric,
        "feature_services": [d.name for d in DEFINITIONS if type(d).__name__ == "FeatureService"],
        "chart_models": list(models),
        "dashboard_rows": [p["title"] for p in board["panels"] if p["type"] == "row"],
        "alert_models": sorted({r["labels"].get("model") for g in rules.groups()["groups"] for r in g["rules"]
                                if "labels" in r and r["labels"].get("model")}),
        "retrain_assets": [a.name for a in training_dag.RETRAIN_ASSETS],
        "dag_families": dag.params.dump()["families"],
    }))
""")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZM_")}
    return {**env, "ZM_HOME": str(home), "ZM_FAMILY_PLUGINS": "tests.toy_family", "PYTHONPATH": str(REPO),
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "FEAST_USAGE": "False",
            "ZM_REQUEST_LOG__FLUSH_SECONDS": "0.5", "OPENBLAS_NUM_THREADS": "1"}


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_family_defined_only_in_tests_is_trained_served_and_monitored(tmp_path: Path) -> None:
    if not SERVING_PYTHON.exists():
        pytest.fail(f"{SERVING_PYTHON} is missing: run `make envs`")
    home = tmp_path / "zm"
    env = _env(home)
    zm = [sys.executable, "-m", "zmlops.cli"]

    assert TOY in _run([*zm, "train", "--help"], env)
    _run([*zm, "data", "ingest", "--customers", "300", "--products", "80", "--weeks", "40", "--seed", "3"], env)
    _run([*zm, "train", TOY, "--reason", "toy-family-test"], env)

    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([str(SERVING_PYTHON), "-m", "inference_services.server", TOY, "--port", str(port)],
                              env={**env, "ZM_SERVING__POLL_SECONDS": "1"}, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a hang guard: imports under a loaded `make test` take long
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/v2/models/{TOY}/ready", timeout=2).json().get("ready"):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.3)
        from zmlops import auth
        from zmlops.settings import Settings

        headers = auth.headers(Settings(home=home))
        v1 = httpx.post(f"{url}/v1/models/{TOY}:predict", headers=headers, timeout=10,
                        json={"instances": [{"basket_lines": 10.0, "units_per_line": 5.0, "unit_price": 2.0},
                                            {"basket_lines": 2.0, "units_per_line": 3.0, "unit_price": 4.0}]})
        assert v1.status_code == 200, v1.text
        values = [p["basket_value"] for p in v1.json()["predictions"]]
        assert values == pytest.approx([100.0, 24.0], rel=0.02)  # the product of its inputs, learnt
        v2 = httpx.post(f"{url}/v2/models/{TOY}/infer", headers=headers, timeout=10, json={"inputs": [
            {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
            for n, v in (("basket_lines", 10.0), ("units_per_line", 5.0), ("unit_price", 2.0))]})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == pytest.approx([100.0], rel=0.02)
        bad = httpx.post(f"{url}/v1/models/{TOY}:predict", headers=headers, timeout=10,
                         json={"instances": [{"basket_lines": 10.0, "units_per_line": 5.0}]})
        assert bad.status_code == 400 and "unit_price" in bad.json()["error"]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()

    probe = json.loads(_run([sys.executable, "-c", PROBE, TOY, str(tmp_path / "reports")], env).splitlines()[-1])
    assert probe["catalog"][-1] == TOY and len(probe["catalog"]) == 4
    assert probe["port"] == 8089 and probe["primary_metric"] == "mae"
    assert "basket_value" in probe["feature_services"]
    assert TOY in probe["chart_models"] and TOY in probe["dashboard_rows"] and TOY in probe["alert_models"]
    assert f"retrain-{TOY}" in probe["retrain_assets"] and TOY in probe["dag_families"]

    result = probe["check"]
    assert result["family"] == TOY and result["model_version"] == "1"
    assert set(result["columns"]) == {"log_basket_value"}
    assert not result["columns"]["log_basket_value"]["drifted"]  # the same data version on both sides
    assert result["signals"]["requests"] == 3  # the answered rows, read back from the request log
    assert result["signals"]["served_basket_value"] == pytest.approx(sum(values + [values[0]]) / 3, rel=0.01)
    assert (tmp_path / "reports" / result["report"]).exists()
