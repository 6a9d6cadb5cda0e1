"""How the recommender's fit grows with the delivery: the figures behind docs/benchmarks.md's recommender scaling.

    python -m benchmarks.probe_recommender_scaling [--rows 5000000 --rows 10000000] [--rounds 3]

Not part of ``make bench`` (its data section times each training step once per size, where this machine's drift
decides a ratio that linear work puts at 2.0). A simulated delivery per ``--rows`` is cleaned by the gate's DuckDB
cleaning and reduced to the recommender's purchase pairs (``purchases``, ``interactions``); then, interleaved
``--rounds`` times, each size's pairs are fitted by ALS (alpha 2, the choice at these sizes) and by EASE (the
defaults), wall and CPU seconds each, and apart the seconds of the index both start from (``_index``: the purchase
matrix and the lookups, before implicit's ALS or EASE's closed form). Prints JSON: per size the raw lines, pairs and
customers; per round and model the seconds; and the ratios of the last size to the first (seconds per round and
their median, and the pairs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("als", "ease")


def _pairs(rows: int, folder: Path) -> dict[str, Any]:
    from training.data import lake
    from training.data.cleaning import clean_file
    from training.data.simulator import simulate
    from training.data.world import SimulationConfig
    from training.models.recommendation import interactions, purchases

    raw = simulate(SimulationConfig.for_rows(rows), folder / "raw")
    with lake.connect(2_048, spill=folder / "spill") as con:
        normalised = lake.normalise(con, raw.transactions, folder / "raw.parquet")
        clean_file(con, normalised.path, folder / "clean.parquet")
    pairs = interactions(purchases(folder / "clean.parquet"))
    pairs.to_parquet(folder / "pairs.parquet")
    return {"raw_rows": raw.rows, "pairs": len(pairs), "customers": int(pairs["customer_id"].nunique()),
            "products": int(pairs["stock_code"].nunique())}


def _fit(pairs: Any, model: str) -> dict[str, float]:
    from training.trainers import make_recommender

    estimator = make_recommender(kind="als", alpha=2.0) if model == "als" else make_recommender(kind="ease")
    started = time.perf_counter()
    estimator._index(pairs)  # the index both models start from, alone: the purchase matrix and the lookups
    index = time.perf_counter() - started
    wall, cpu = time.perf_counter(), time.process_time()
    estimator.fit(pairs)
    return {"seconds": round(time.perf_counter() - wall, 3), "cpu_seconds": round(time.process_time() - cpu, 3),
            "index_seconds": round(index, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_recommender_scaling",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", default=None,
                        help="raw lines of a simulated delivery (repeatable; default 5,000,000 and 10,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="times each size and model is fitted, interleaved")
    args = parser.parse_args(argv)
    sizes = args.rows or [5_000_000, 10_000_000]

    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="zm-recommender-scaling-") as tmp:
        deliveries, frames = [], []
        for rows in sizes:
            folder = Path(tmp) / str(rows)
            deliveries.append(_pairs(rows, folder))
            frames.append(pd.read_parquet(folder / "pairs.parquet"))
        rounds = [{model: [_fit(frame, model) for frame in frames] for model in MODELS} for _ in range(args.rounds)]
    first, last = 0, len(sizes) - 1
    ratios = {model: [round(r[model][last]["seconds"] / r[model][first]["seconds"], 3) for r in rounds]
              for model in MODELS}
    medians = {model: statistics.median(values) for model, values in ratios.items()}
    print(json.dumps({"deliveries": deliveries, "rounds": rounds, "seconds_ratio_last_to_first": ratios,
                      "median_seconds_ratio": medians,
                      "pairs_ratio_last_to_first": round(deliveries[last]["pairs"] / deliveries[first]["pairs"], 3)},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
