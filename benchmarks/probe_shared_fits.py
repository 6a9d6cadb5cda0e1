"""What sharing the forecaster's fits saves a training: the figures behind docs/models.md ("The forecaster's backtest
fits each prefix once").

    python -m benchmarks.probe_shared_fits [--rows 500000] [--rounds 2]

Not part of ``make bench``. A simulated delivery of about ``--rows`` raw lines is cleaned and turned into the weekly
category table; then, each in a fresh interpreter and interleaved ``--rounds`` times, the forecaster is fitted and
put through the gate's backtest (``evaluate_forecaster``) three ways: every fit computed where it is asked for
(``shared_fits`` switched off), the backtest sharing its fits (``backtest`` opens ``shared_fits``), and the whole
training sharing them (the family's ``session``, as ``training.run.train_family`` opens it). Prints JSON: wall
seconds of the fit and of fit + backtest, and the backtest's units WAPE, per way and round.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WAYS = ("unshared", "backtest", "session")


def _measure(table: Path, way: str) -> dict[str, float]:
    import contextlib
    import time

    import pandas as pd

    from training.models import forecasting
    from training.trainers import TrainingData, evaluate_forecaster, forecast_session, make_forecaster

    frame = pd.read_parquet(table)
    if way == "unshared":
        forecasting.shared_fits = contextlib.nullcontext  # type: ignore[assignment]
    scope = forecast_session() if way == "session" else contextlib.nullcontext()
    started = time.perf_counter()
    with scope:
        model = make_forecaster().fit(frame)
        fitted = time.perf_counter() - started
        newest = pd.Timestamp(frame["week_start"].max()).to_pydatetime()
        evaluation = evaluate_forecaster(model, TrainingData(frame, pd.DataFrame(), newest))
    return {"fit_seconds": round(fitted, 2), "fit_and_backtest_seconds": round(time.perf_counter() - started, 2),
            "units_wape": evaluation.metrics["units_wape"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_shared_fits", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="raw lines of the simulated delivery")
    parser.add_argument("--rounds", type=int, default=2, help="times each way runs, interleaved")
    parser.add_argument("--measure", nargs=2, metavar=("TABLE", "WAY"), help=argparse.SUPPRESS)  # one fresh run
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(Path(args.measure[0]), args.measure[1])))
        return 0

    from training.data.cleaning import clean_transactions, read_transactions
    from training.data.simulator import simulate
    from training.data.world import SimulationConfig
    from training.features.build import category_week_features

    with tempfile.TemporaryDirectory(prefix="zm-shared-fits-") as tmp:
        raw = simulate(SimulationConfig.for_rows(args.rows), Path(tmp) / "raw")
        clean, _ = clean_transactions(read_transactions(raw.transactions))
        weekly = category_week_features(clean)
        table = Path(tmp) / "weekly.parquet"
        weekly.to_parquet(table)
        runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for way in WAYS:
                done = subprocess.run([sys.executable, "-m", "benchmarks.probe_shared_fits", "--measure", str(table),
                                       way], capture_output=True, text=True, check=True, cwd=tmp)
                runs[way].append(json.loads(done.stdout.splitlines()[-1]))
    print(json.dumps({"raw_rows": raw.rows, "weeks": int(weekly["week_start"].nunique()),
                      "categories": int(weekly["category"].nunique()), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
