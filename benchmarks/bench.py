"""``make bench``: benchmarks whose figures are ratios against a baseline run in the same session.

Each measurement runs in a fresh subprocess so its peak memory (``ru_maxrss``) is its own.
Absolute seconds swing with the machine's load; the ratio against the baseline, measured
back to back, is the figure to compare across runs.
"""

from __future__ import annotations

import functools
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zmlops.console import console, table
from zmlops.settings import get_settings

__all__ = ["run_bench", "measure"]

SIMULATE = """
import sys, time
from pathlib import Path
from training.data.simulator import simulate
from training.data.world import SimulationConfig
result = simulate(SimulationConfig.for_rows(int(sys.argv[1])), Path(sys.argv[2]))
print(result.rows)
"""

# Baseline: the same number of rows of the same schema, drawn with numpy in one go per
# million rows and written with the same Parquet writer: the floor for any generator.
BASELINE = """
import sys
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from training.data.schema import RAW_SCHEMA
rows, out = int(sys.argv[1]), sys.argv[2] + "/baseline.parquet"
rng = np.random.default_rng(0)
codes = pa.array([f"{20000 + i:05d}" for i in range(1000)])
with pq.ParquetWriter(out, RAW_SCHEMA, compression="zstd") as w:
    done = 0
    while done < rows:
        n = min(1_000_000, rows - done)
        inv = rng.integers(1_000_000, 9_000_000, n)
        prod = pa.array(rng.integers(0, 1000, n))
        ts = pa.array((np.datetime64("2023-01-02", "s") + rng.integers(0, 63_072_000, n)).astype("datetime64[s]"))
        w.write_table(pa.Table.from_arrays([
            pc.cast(pa.array(inv), pa.string()), codes.take(prod), codes.take(prod),
            pa.array(rng.integers(1, 24, n)), pc.strftime(ts, format="%Y-%m-%d %H:%M:%S"),
            pa.array(rng.random(n) * 10), pa.array(rng.integers(12000, 60000, n)),
            pa.array(np.full(n, "United Kingdom"))], schema=RAW_SCHEMA))
        done += n
print(rows)
"""


REAL_ROWS = 525_461  # raw rows of the UCI Online Retail II 2009-2010 file


def task(name: str, *args: str) -> dict[str, float]:
    """One :mod:`benchmarks.bench_training` task in a fresh interpreter."""
    return measure(f"from benchmarks.bench_training import {name}\n{name}(*sys.argv[1:])", *args)


def measure(code: str, *args: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; wall seconds, CPU seconds, peak RSS (MB) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrapper = (
        "import resource, sys, time\n"
        "import numpy, pandas, pyarrow.parquet, pyarrow.compute, training.data.simulator  # imports are not timed\n"
        f"sys.argv = ['bench', *{list(args)!r}]\n"
        "t = time.perf_counter()\n"
        f"exec(compile({code!r}, 'bench', 'exec'))\n"
        "print('__wall__', time.perf_counter() - t)\n"
        "print('__rss__', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.split()
    values = {lines[i]: float(lines[i + 1]) for i in range(len(lines) - 1) if lines[i].startswith("__")}
    extra = {k.strip("_"): v for k, v in values.items() if k not in ("__wall__", "__rss__", "__output__")}
    return {
        **extra,
        "seconds": values["__wall__"],
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_mb": values["__rss__"] / 1024,
        "output": values["__output__"] if "__output__" in values else float(lines[0]),  # tasks whose libraries print
    }


def bench_simulator(sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            console.print(f"simulator: {rows:,} rows ...")
            sim = measure(SIMULATE, str(rows), tmp)
            base = measure(BASELINE, str(int(sim["output"])), tmp)
        results.append(
            {
                "target_rows": rows,
                "rows": int(sim["output"]),
                "seconds": round(sim["seconds"], 2),
                "rows_per_second": round(sim["output"] / sim["seconds"]),
                "peak_mb": round(sim["peak_mb"]),
                "baseline_seconds": round(base["seconds"], 2),
                "baseline_peak_mb": round(base["peak_mb"]),
                "ratio_vs_baseline": round(sim["seconds"] / base["seconds"], 2),
            }
        )
    return results


def bench_training(sizes: list[int]) -> dict[str, Any]:
    """Fit time and peak memory per family per size; wrapper overhead and parallel efficiency."""
    per_size: list[dict[str, Any]] = []
    overhead: dict[str, Any] = {}
    for i, rows in enumerate(sizes):
        with tempfile.TemporaryDirectory() as tmp:
            console.print(f"training: simulate and prepare {rows:,} raw rows ...")
            data = task("prepare", str(rows), tmp)
            entry: dict[str, Any] = {
                "target_rows": rows,
                "rows": int(data["output"]),
                "clean_rows": int(data["clean_rows"]),
                "customers": int(data["customers"]),
                "products": int(data["products"]),
            }
            for family, name, args in (
                ("demand-forecast", "fit_forecast", ("2",)),
                ("customer-segmentation", "fit_segment", ()),
                ("product-recommendation", "fit_als", ()),
            ):
                console.print(f"training: {family} at {rows:,} rows ...")
                r = task(name, tmp, *args)
                entry[family] = {"fit_seconds": round(r["fit"], 2), "peak_mb": round(r["peak_mb"])}
            per_size.append(entry)
            if i == 0:  # overhead ratios, back to back on the real file's size
                console.print("training: wrapper overhead against the bare libraries ...")
                ours, bare = task("fit_als", tmp), task("bare_als", tmp)
                overhead["als_seconds_per_iteration"] = {
                    "ours": round(ours["per_iteration"], 4),
                    "bare_implicit": round(bare["per_iteration"], 4),
                    "ratio": round(ours["per_iteration"] / bare["per_iteration"], 3),
                    "target": 1.2,
                }
                ours, bare = task("fit_forecast", tmp, "1", "1"), task("bare_sarimax", tmp)
                overhead["forecast_seconds_per_series"] = {
                    "ours": round(ours["per_series"], 4),
                    "bare_statsmodels": round(bare["per_series"], 4),
                    "ratio": round(ours["per_series"] / bare["per_series"], 3),
                    "target": 1.1,
                }
                one, two = task("fit_forecast", tmp, "1"), task("fit_forecast", tmp, "2")
                overhead["forecast_parallel"] = {
                    "seconds_1_process": round(one["fit"], 2),
                    "seconds_2_processes": round(two["fit"], 2),
                    "efficiency": round(one["fit"] / (2 * two["fit"]), 3),
                    "target": 0.8,
                }
    return {"sizes": per_size, "overhead": overhead}


def bench_tuning(rows: int, budget: float) -> dict[str, Any]:
    """Each family's Optuna study within ``budget`` seconds on simulated data of ``rows`` raw rows: trials, wall
    time, and the held-out metric with the defaults against the tuned parameters (the ratio)."""
    from training.families import FAMILIES, get_family

    out: dict[str, Any] = {"rows": rows, "budget_seconds": budget, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        console.print(f"tuning: simulate and prepare {rows:,} raw rows ...")
        task("prepare", str(rows), tmp)
        for family in FAMILIES:
            fam = get_family(family)
            if fam.search_space is None:
                continue
            console.print(f"tuning: {family}, budget {budget:.0f} s ...")
            r = task("tune_family", tmp, family, str(budget))
            better = (r["held_out_tuned"] / r["held_out_default"]) if fam.greater_is_better \
                else (r["held_out_default"] / r["held_out_tuned"])
            out["families"][family] = {
                "metric": fam.primary_metric, "trials": int(r["output"]), "complete": int(r["complete"]),
                "pruned": int(r["pruned"]), "failed": int(r["failed"]), "tuning_seconds": round(r["seconds_tuning"], 1),
                "wall_seconds": round(r["seconds"], 1), "peak_mb": round(r["peak_mb"]),
                "tuning_folds_default": round(r["folds_default"], 4), "tuning_folds_best": round(r["folds_best"], 4),
                "held_out_default": round(r["held_out_default"], 4), "held_out_tuned": round(r["held_out_tuned"], 4),
                "held_out_improvement": round(better, 3),
            }
    return out


def _tuning(quick: bool) -> dict[str, Any]:
    result = bench_tuning(50_000 if quick else REAL_ROWS, 10.0 if quick else 600.0)
    table(f"tuning: one Optuna study per family, {result['budget_seconds']:.0f} s budget, {result['rows']:,} simulated "
          "raw rows; held-out metric with the defaults and with the tuned parameters",
          ["model", "metric", "trials (complete / pruned)", "study s", "task s", "tuning folds: defaults -> best",
           "held out: defaults -> tuned", "better by"],
          [[f, r["metric"], f"{r['trials']} ({r['complete']} / {r['pruned']})", r["tuning_seconds"],
            r["wall_seconds"], f"{r['tuning_folds_default']} -> {r['tuning_folds_best']}",
            f"{r['held_out_default']} -> {r['held_out_tuned']}", f"{r['held_out_improvement']}x"]
           for f, r in result["families"].items()])
    return result


SECTIONS = ("simulator", "data", "batch", "training", "tuning", "serving", "shadow", "monitoring", "topology")


def _topology(quick: bool) -> dict[str, Any] | None:
    """The Kubernetes topology on this machine (stack/): start-up, the whole loop, every workload wiped and
    restarted, with each step's wall time and the peak memory of every process together."""
    import subprocess

    if quick:
        console.print("topology: skipped with --quick (tests/stack runs the loop)")
        return None
    from stack.client import Control
    from stack.loop import LoopSize, run_loop

    root = get_settings().home.resolve() / "stack"
    started = time.perf_counter()
    up = subprocess.run([sys.executable, "-m", "stack", "up", "--root", str(root)], capture_output=True, text=True,
                        check=False)
    if up.returncode != 0:
        raise RuntimeError(f"the topology did not start: {up.stdout[-2000:]}{up.stderr[-2000:]}")
    up_seconds = time.perf_counter() - started
    try:
        control = Control(root)
        out = run_loop(control, LoopSize(), say=lambda line: console.print(f"topology: {line}"))
    finally:
        subprocess.run([sys.executable, "-m", "stack", "down", "--root", str(root)], capture_output=True, check=False)
    result = {"up_seconds": round(up_seconds, 1), "loop_seconds": out["seconds"], "steps": out["steps"],
              "peak_rss_mb": out["peak_rss_mb"], "processes": len(control.specs()), "cpu_seconds": out["cpu_seconds"]}
    table("topology: the chart's workloads, Airflow and the stores as processes on this machine (make stack)",
          ["measure", "value"],
          [["processes", result["processes"]], ["start to ready s", result["up_seconds"]],
           *[[f"loop: {name}", f"{seconds:.0f} s"] for name, seconds in out["steps"].items()],
           ["loop total s", result["loop_seconds"]], ["peak memory of every process, MB", result["peak_rss_mb"]],
           ["CPU s, every workload (start-up and loop)", round(sum(out["cpu_seconds"].values()))],
           *[[f"CPU s: {name}", f"{cpu:.0f}"] for name, cpu in
             sorted(out["cpu_seconds"].items(), key=lambda item: -item[1])[:8]]])
    return result


def bench_monitoring(sizes: list[int]) -> list[dict[str, Any]]:
    """The drift job (sampled Evidently) against scipy on every row, per request-log size."""
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            console.print(f"monitoring: drift job on {rows:,} + {rows:,} request-log rows ...")
            ours = measure("from benchmarks.bench_monitoring import drift_job\ndrift_job(*sys.argv[1:])", str(rows),
                           f"{tmp}/ours.json")
            full = measure("from benchmarks.bench_monitoring import full_scipy\nfull_scipy(*sys.argv[1:])",
                           str(rows), f"{tmp}/full.json")
            a, b = (json.loads(Path(f"{tmp}/{n}.json").read_text()) for n in ("ours", "full"))
        results.append({
            "rows": rows,
            "seconds": round(ours["compute"], 3),
            "peak_mb": round(ours["peak_mb"]),
            "baseline_seconds": round(full["compute"], 3),
            "baseline_peak_mb": round(full["peak_mb"]),
            "ratio_vs_baseline": round(ours["compute"] / full["compute"], 3),
            "max_score_difference": round(max(abs(a[c] - b[c]) for c in a), 4),
            "scores": {c: [round(a[c], 4), round(b[c], 4)] for c in a},
        })
    return results


DATA_STEPS = ("snapshot", "gate", "features")
DATA_STEP_LIMIT_MB = 4_096  # the target: no step above 4 GiB at 10M raw lines
PIPELINE_LIMIT_SECONDS = 600  # the target: a 10M-line delivery through every step in 10 minutes


def bench_data(sizes: list[int]) -> list[dict[str, Any]]:
    """The weekly pipeline's steps per delivery size (the data steps, then the three trainings on their output):
    seconds and peak memory of each, and the gate's and the features step's seconds as ratios against bare DuckDB
    doing the same work on the same file, back to back."""
    from zmlops.catalog import FAMILIES

    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="zm-bench-data-") as tmp:
            console.print(f"data: simulate {rows:,} raw rows ...")
            raw = measure("from benchmarks.bench_data import simulate_raw\nsimulate_raw(*sys.argv[1:])", str(rows), tmp)
            entry: dict[str, Any] = {"target_rows": rows, "rows": int(raw["output"])}
            runs: list[tuple[str, tuple[str, ...]]] = [(step, (step, tmp)) for step in (*DATA_STEPS, "duck_gate",
                                                                                          "duck_features")]
            runs += [(f"train {family}", ("train", tmp, family)) for family in FAMILIES]
            for name, (task, *args) in runs:
                console.print(f"data: {name} at {int(raw['output']):,} rows ...")
                r = measure(f"from benchmarks.bench_data import {task}\n{task}(*sys.argv[1:])", *args)
                entry[name] = {"seconds": round(r["seconds"], 2), "peak_mb": round(r["peak_mb"]),
                               "output": r["output"],
                               **{k: round(v, 2) for k, v in r.items()  # a training's phases
                                  if k.endswith("_seconds") and k != "cpu_seconds"}}
            steps = [*DATA_STEPS, *(f"train {family}" for family in FAMILIES)]
            entry["gate_ratio"] = round(entry["gate"]["seconds"] / entry["duck_gate"]["seconds"], 2)
            entry["features_ratio"] = round(entry["features"]["seconds"] / entry["duck_features"]["seconds"], 2)
            entry["steps_seconds"] = round(sum(entry[s]["seconds"] for s in DATA_STEPS), 1)
            entry["pipeline_seconds"] = round(sum(entry[s]["seconds"] for s in steps), 1)
            entry["peak_mb"] = max(entry[s]["peak_mb"] for s in steps)
        results.append(entry)
    return results


def _data(quick: bool, rows: list[int] | None = None) -> list[dict[str, Any]]:
    from zmlops.catalog import FAMILIES

    sizes = rows or ([100_000, 300_000] if quick else [500_000, 5_000_000, 10_000_000, 30_000_000])
    out = bench_data(sizes)
    data = get_settings().data
    table(
        f"data steps vs bare DuckDB on the same file (budget {data.memory_budget_mb:,} MB: the pods' limit "
        f"{data.pod_memory_mb:,} MB)",
        ["raw rows", "snapshot s / MB", "gate s / MB", "features s / MB", "gate vs DuckDB (<= 3)",
         "features vs DuckDB (<= 3)"],
        [[r["rows"], *(f"{r[s]['seconds']} / {r[s]['peak_mb']:,}" for s in DATA_STEPS), r["gate_ratio"],
          r["features_ratio"]] for r in out],
    )
    table(
        f"the three trainings on the same deliveries, and every step together (targets at 10M lines: "
        f"<= {PIPELINE_LIMIT_SECONDS} s, no step above {DATA_STEP_LIMIT_MB:,} MB)",
        ["raw rows", *(f"{f} s / MB" for f in FAMILIES), "all steps s", "peak MB"],
        [[r["rows"], *(f"{r['train ' + f]['seconds']} / {r['train ' + f]['peak_mb']:,}" for f in FAMILIES),
          r["pipeline_seconds"], f"{r['peak_mb']:,}"] for r in out],
    )
    phases = ("training_set", "choice", "fit", "evaluation")
    rec = "train product-recommendation"
    table(
        "the recommender's training step by phase, seconds (target: the fit at 10M lines <= 2 x at 5M)",
        ["raw rows", "step", *phases],
        [[r["rows"], r[rec]["seconds"], *(r[rec].get(f"{p}_seconds", "-") for p in phases)] for r in out],
    )
    return out


def bench_batch(customers: int, items: int = 4_000) -> dict[str, Any]:
    """Every customer's top 10 through the batch task's path against implicit's batch recommend on the same
    factors (benchmarks/bench_batch.py): customers per second of each, their ratio, the task's peak memory."""
    runs = {}
    for which in ("ours", "bare"):
        console.print(f"batch: {which} at {customers:,} customers ...")
        runs[which] = measure("from benchmarks.bench_batch import recommend_batch\nrecommend_batch(*sys.argv[1:])",
                              str(customers), str(items), which)
    return {"customers": customers, "items": items,
            "customers_per_second": round(runs["ours"]["customers_per_second"]),
            "implicit_customers_per_second": round(runs["bare"]["customers_per_second"]),
            "rate_vs_implicit": round(runs["ours"]["customers_per_second"] / runs["bare"]["customers_per_second"], 2),
            "target": 0.5, "peak_mb": round(runs["ours"]["peak_mb"]),
            "implicit_peak_mb": round(runs["bare"]["peak_mb"])}


def _batch(quick: bool) -> dict[str, Any]:
    out = bench_batch(50_000 if quick else 1_000_000)
    table(
        "batch scoring: every customer's top 10 (the score task's path) vs implicit's batch recommend, same factors",
        ["customers", "ours /s", "implicit /s", "rate vs implicit (>= 0.5)", "peak MB", "implicit MB"],
        [[out["customers"], out["customers_per_second"], out["implicit_customers_per_second"],
          out["rate_vs_implicit"], out["peak_mb"], out["implicit_peak_mb"]]],
    )
    return out


def _monitoring(quick: bool) -> list[dict[str, Any]]:
    sizes = [20_000, 50_000] if quick else [1_000_000, 5_000_000]
    out = bench_monitoring(sizes)
    table(
        "monitoring: drift job (Evidently on samples) vs scipy on every row, same per-column statistic",
        ["rows per side", "seconds", "peak MB", "scipy s", "scipy MB", "ratio (<= 3)", "max score diff (<= 0.01)"],
        [[r["rows"], r["seconds"], r["peak_mb"], r["baseline_seconds"], r["baseline_peak_mb"],
          r["ratio_vs_baseline"], r["max_score_difference"]] for r in out],
    )
    return out


def run_bench(quick: bool = False, out: Path | None = None, only: list[str] | None = None,
              models: list[str] | None = None, rows: list[int] | None = None) -> int:
    """Run the benchmark sections (all by default); ``only`` updates just those in ``out``; ``models``
    limits the serving section to those model families, ``rows`` the data section to those delivery sizes."""
    target = out or get_settings().reports / "bench.json"
    report: dict[str, Any] = json.loads(target.read_text()) if only and target.exists() else {}
    sections: dict[str, Callable[[bool], Any]] = {"simulator": _simulator,
                                                  "data": functools.partial(_data, rows=rows), "batch": _batch,
                                                  "training": _training,
                                                  "tuning": _tuning,
                                                  "serving": functools.partial(_serving, models=models),
                                                  "shadow": functools.partial(_shadow, models=models),
                                                  "monitoring": _monitoring, "topology": _topology}
    started = time.perf_counter()
    for section in only or SECTIONS:
        report[section] = sections[section](quick)
    report["machine"] = {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()}
    report["seconds"] = round(time.perf_counter() - started, 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"results -> {target}")
    return 0


def _simulator(quick: bool) -> list[dict[str, Any]]:
    sizes = [100_000, 300_000] if quick else [1_000_000, 10_000_000]
    sim = bench_simulator(sizes)
    table(
        "simulator (each row: simulator vs numpy+parquet baseline of the same rows, same session)",
        ["rows", "rows/s", "peak MB", "seconds", "baseline s", "ratio", "baseline MB"],
        [
            [
                r["rows"],
                r["rows_per_second"],
                r["peak_mb"],
                r["seconds"],
                r["baseline_seconds"],
                r["ratio_vs_baseline"],
                r["baseline_peak_mb"],
            ]
            for r in sim
        ],
    )
    return sim


def _training(quick: bool) -> dict[str, Any]:
    train_sizes = [50_000, 100_000] if quick else [REAL_ROWS, 10 * REAL_ROWS]
    training = bench_training(train_sizes)
    families = ["demand-forecast", "customer-segmentation", "product-recommendation"]
    table(
        "training: fit seconds and peak MB per family (simulated; the first size is the real file's)",
        ["raw rows", "clean rows", "customers", "products", *[f"{f} s / MB" for f in families]],
        [
            [e["rows"], e["clean_rows"], e["customers"], e["products"],
             *[f"{e[f]['fit_seconds']} / {e[f]['peak_mb']}" for f in families]]
            for e in training["sizes"]
        ],
    )
    o = training["overhead"]
    table(
        "training: our wrappers against the bare libraries (same input, same session)",
        ["measure", "ours", "bare", "ratio", "target"],
        [
            ["ALS s/iteration vs implicit", o["als_seconds_per_iteration"]["ours"],
             o["als_seconds_per_iteration"]["bare_implicit"], o["als_seconds_per_iteration"]["ratio"], "<= 1.2"],
            ["forecast s/series vs statsmodels", o["forecast_seconds_per_series"]["ours"],
             o["forecast_seconds_per_series"]["bare_statsmodels"], o["forecast_seconds_per_series"]["ratio"], "<= 1.1"],
            ["forecast parallel efficiency (2 vs 1 process)", o["forecast_parallel"]["seconds_2_processes"],
             o["forecast_parallel"]["seconds_1_process"], o["forecast_parallel"]["efficiency"], ">= 0.8"],
        ],
    )
    return training


def _serving(quick: bool, models: list[str] | None = None) -> dict[str, Any] | None:
    if quick:
        console.print("serving: skipped with --quick (tests/serving runs a short form)")
        return None
    from benchmarks.bench_serving import bench_serving, summary_rows, variant_rows

    serving = bench_serving(get_settings().home / "serving", families=models)
    table(
        "serving: single-row requests, real model vs (a) bare FastAPI constant and (b) the same predictor "
        "returning a constant",
        ["model", "protocol", "CPU us/request vs (a)", "ratio (<= 2)", "rps vs (b)",
         "ratio (>= 0.8; CPU capacity; in process)", "p99 ms 1 conn (<= 5)", "p99 ms open loop (<= 25)"],
        summary_rows(serving),
    )
    moved = variant_rows(serving)
    if moved:
        table(
            "serving: throughput vs (b) as served (default) and with the work it moves out of the request done "
            "per request",
            ["model", "protocol", "served / per request", "served: rps vs (b) (CPU capacity; in process)",
             "per request: rps vs (b) (CPU capacity; in process)", "extra CPU us / request CPU us"],
            moved,
        )
    table(
        "serving: metrics cost and cold start",
        ["model", "metrics: us in process / request CPU us", "ratio (<= 1.05)", "end to end",
         "start to ready s", "bare import+load s", "ratio (<= 1.5)"],
        [[f, f"{e['metrics_cpu_overhead']['in_process']['delta_us']:.1f} / {e['metrics_cpu_overhead']['with_us']:.0f}",
          f"{e['metrics_cpu_overhead']['ratio']:.3f}", f"{e['metrics_cpu_overhead']['end_to_end_ratio']:.2f}",
          f"{e['cold_start']['server_to_ready_s']:.2f}",
          f"{e['cold_start']['bare_import_and_load_s']:.2f}", f"{e['cold_start']['ratio']:.2f}"]
         for f, e in serving["models"].items()],
    )
    table(
        "serving: valid traffic at half the maximum while 200 clients hold half-sent bodies, side by side with the "
        "same traffic alone (V1, medians of the runs)",
        ["model", "rps", "p99 ms alone", "p99 ms with slow clients (<= 25)", "ratio", "valid errors",
         "slow answered", "slow closed after s (timeout)"],
        [[f, f"{d['rate']:.0f}", f"{d['p99_ms_alone']:.1f}", f"{d['p99_ms_with_slow_clients']:.1f}",
          f"{d['p99_ratio']:.2f}", f"{d['valid_errors']:.0f}",
          ", ".join(f"{n} x {code}" for code, n in d["answers_to_slow"].items()),
          f"{d['slow_closed_after_s_min']:.1f}-{d['slow_closed_after_s_max']:.1f} ({d['body_timeout_s']:g})"]
         for f, e in serving["models"].items() if (d := e["v1"]["model"].get("slow_clients"))],
    )
    return serving


def _shadow(quick: bool, models: list[str] | None = None) -> dict[str, Any] | None:
    if quick:
        console.print("shadow: skipped with --quick (tests/serving runs shadow traffic)")
        return None
    from benchmarks.bench_serving import bench_shadow

    shadow = bench_shadow(get_settings().home / "serving", families=models)
    table(
        "shadow traffic: production's latency at half its maximum rate, alone and mirroring its answered requests "
        "to a staged copy, in its own process (a share) or in a shadow predictor's (V1, open loop, medians)",
        ["model", "rate /s", "shadow", "p50 ms", "p99 ms", "p99 ratio (<= 1.10)", "CPU us / request",
         "copies answered / dropped"],
        [row for f, e in shadow["models"].items() for row in [
            [f, f"{e['rate']:.0f}", "none", f"{e['alone']['p50_ms']:.2f}", f"{e['alone']['p99_ms']:.2f}", "",
             f"{e['alone']['cpu_us_per_request']:.0f}", ""],
            *[["", "", share, f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{m['p99_ratio']:.2f}",
               f"{m['cpu_us_per_request']:.0f}",
               f"{m['copies_per_request']:.0%} / {m['copies'].get('dropped', 0)}"]
              for share, m in e["mirroring"].items()]]],
    )
    return shadow


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
