"""The forecaster against the three simple forecasts on a transactions file: the figure behind docs/models.md.

    python -m benchmarks.probe_forecast [--file PATH] [--folds 6] [--step 4] [--min-train 26] [--choice pooled]
                                        [--candidates sarimax,ets,...]

Not part of ``make bench``. The file (default: the real UCI file, ``ZM_REAL_DATA_PATH``) is cleaned and turned into
the weekly category table as the pipeline does, then backtested with
:func:`training.models.forecasting.backtest` on more origins than the trainer's (which needs a season of history
before its first origin: one hold-out on a year): ``--min-train`` weeks before the first. Prints JSON: the origins,
the model's units and revenue WAPE and interval coverage, each simple forecast's WAPE, and the best of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from zmlops.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_forecast", description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, default=Settings().real_data_path, help="a transactions file")
    parser.add_argument("--folds", type=int, default=6, help="origins at most")
    parser.add_argument("--step", type=int, default=4, help="weeks between origins")
    parser.add_argument("--min-train", type=int, default=26, help="weeks of history before the first origin")
    parser.add_argument("--choice", choices=["pooled", "per_series"], default="pooled",
                        help="the forecaster's choice among its candidates: one for all categories, or per series")
    parser.add_argument("--candidates", default=None,
                        help="comma-separated subset of the candidates (default all), e.g. sarimax")
    args = parser.parse_args(argv)

    from training.data.cleaning import clean_transactions, read_transactions
    from training.features.build import category_week_features
    from training.models.forecasting import CategoryForecaster, backtest

    clean, _ = clean_transactions(read_transactions(args.file))
    weekly = category_week_features(clean)
    options: dict[str, object] = {"choice": args.choice}
    if args.candidates:
        options["candidates"] = tuple(args.candidates.split(","))
    models: list[CategoryForecaster] = []

    def make() -> CategoryForecaster:
        models.append(CategoryForecaster(n_jobs=2, **options))  # type: ignore[arg-type]
        return models[-1]

    result = backtest(weekly, make, folds=args.folds, horizon=8, step=args.step, min_train=args.min_train)
    keep = ("units_wape", "revenue_wape", "units_coverage", "revenue_coverage")
    print(json.dumps({"weeks": int(weekly["week_start"].nunique()), "origins": result["folds"],
                      "model": {k: round(v, 3) for k, v in result["model"].items() if k in keep},
                      "simple": {n: {k: round(m[k], 3) for k in keep[:2]} for n, m in result["baselines"].items()},
                      "best simple": result["baseline_name"],
                      "chosen (units) per origin": [sorted({c["units"] for c in m.choice_.values()}) for m in models]},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
