"""`python -m benchmarks --quick`: every benchmark area runs end to end at its small sizes and writes its ratios (the
figures themselves are `make bench`'s; docs/benchmarks.md). An integration test: it fits the three families at two
sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main

pytestmark = pytest.mark.integration


@pytest.mark.full  # make test-all; `make bench` runs every section whole
def test_bench_quick_writes_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out)]) == 0
    sim = json.loads(out.read_text())["simulator"]
    assert [r["target_rows"] for r in sim] == [100_000, 300_000]
    assert all(r["ratio_vs_baseline"] > 0 and r["peak_mb"] > 0 for r in sim)
    training = json.loads(out.read_text())["training"]
    assert [e["target_rows"] for e in training["sizes"]] == [50_000, 100_000]
    for entry in training["sizes"]:
        assert all(entry[f]["fit_seconds"] > 0 and entry[f]["peak_mb"] > 0 for f in
                   ("demand-forecast", "customer-segmentation", "product-recommendation"))
    overhead = training["overhead"]
    assert overhead["als_seconds_per_iteration"]["ratio"] > 0
    assert overhead["forecast_seconds_per_series"]["ratio"] > 0
    assert 0 < overhead["forecast_parallel"]["efficiency"] <= 1.5

    tuning = json.loads(out.read_text())["tuning"]
    assert tuning["budget_seconds"] == 10.0 and set(tuning["families"]) == {
        "demand-forecast", "customer-segmentation", "product-recommendation"}
    for r in tuning["families"].values():
        assert r["complete"] >= 1 and r["tuning_seconds"] <= 10.0 + r["wall_seconds"] and r["held_out_improvement"] > 0

    monitoring = json.loads(out.read_text())["monitoring"]
    assert [r["rows"] for r in monitoring] == [20_000, 50_000]
    assert all(r["max_score_difference"] <= 0.01 and r["ratio_vs_baseline"] > 0 for r in monitoring)

    data = json.loads(out.read_text())["data"]
    assert [r["target_rows"] for r in data] == [100_000, 300_000]
    for r in data:  # every step ran on the same delivery: the gate kept lines, the baseline kept the same ones
        assert r["gate"]["output"] == r["duck_gate"]["output"] > 0
        assert all(r[s]["peak_mb"] > 0 for s in ("snapshot", "gate", "features"))
        assert r["gate_ratio"] > 0 and r["features_ratio"] > 0
        trainings = [r[f"train {f}"] for f in ("demand-forecast", "customer-segmentation", "product-recommendation")]
        assert all(t["peak_mb"] > 0 and 0 < t["output"] for t in trainings)  # WAPE, silhouette, recall: each found
        for t in trainings:  # each training's phases, timed inside the step
            assert 0 < t["fit_seconds"] and t["training_set_seconds"] + t["fit_seconds"] < t["seconds"], t
        assert r["pipeline_seconds"] > r["steps_seconds"] and r["peak_mb"] >= max(t["peak_mb"] for t in trainings)

    batch = json.loads(out.read_text())["batch"]
    assert batch["customers"] == 50_000 and batch["rate_vs_implicit"] > 0 and batch["peak_mb"] > 0
