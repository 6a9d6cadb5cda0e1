"""What each monitoring check decides under each of the simulator's drift scenarios: the figures behind
docs/monitoring.md's table ("The inputs each check compares"), and the world the false-alarm test samples.

    python -m benchmarks.probe_drift_scenarios [--tries 1]

Not part of ``make bench``. One simulated world (seed 11, 600 customers, 300 products, 80 weeks) is the reference;
the three models are fitted on it as production would be; then, per scenario (``none`` and every drift of
``training/data/world.py``), eight more weeks are drawn ``--tries`` times with their own sampling seeds and each
family's check (:func:`monitoring.drift.assess`) runs on them. Prints JSON: per scenario and try, each family's
drift score per column and its reasons to retrain.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["ReferenceWorld", "reference_world"]

WEEKS = 8


@dataclasses.dataclass
class ReferenceWorld:
    """The reference history, its clean table, the three models fitted on it and their logged backtest scores."""

    config: Any  # training.data.world.SimulationConfig
    raw: pd.DataFrame
    clean: pd.DataFrame
    models: dict[str, Any]
    logged: dict[str, dict[str, float]]  # family -> the production run's metrics its check reads
    folder: Path

    def period(self, scenario: str, seed: int) -> pd.DataFrame:
        """The clean table of the reference history and ``WEEKS`` more weeks under ``scenario``, drawn with
        ``seed`` (the world's products, customers and seasons are kept; only the weekly draws differ)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from training.data.cleaning import clean_transactions, read_transactions
        from training.data.simulator import generate_week
        from training.data.world import build_world

        nxt = self.config.next_period(WEEKS, scenario)
        world = build_world(nxt)
        sample = dataclasses.replace(world, config=dataclasses.replace(nxt, seed=seed))
        weeks = pa.concat_tables([generate_week(sample, nxt.start_week + i) for i in range(nxt.weeks)])
        path = self.folder / f"{scenario}-{seed}.parquet"
        pq.write_table(pa.concat_tables([pa.Table.from_pandas(self.raw, schema=weeks.schema, preserve_index=False),
                                         weeks]), path)
        return clean_transactions(read_transactions(path))[0]


def reference_world(folder: Path) -> ReferenceWorld:
    """Simulate the reference history under ``folder`` and fit the three families' production models on it."""
    from training.data.cleaning import clean_transactions, read_transactions
    from training.data.simulator import simulate
    from training.data.world import SimulationConfig
    from training.features.build import category_week_features, customer_features
    from training.models.forecasting import CategoryForecaster, backtest
    from training.models.recommendation import ALSRecommender, interactions
    from training.models.segmentation import CustomerSegmenter

    config = SimulationConfig(seed=11, n_customers=600, n_products=300, weeks=80)
    simulate(config, folder / "ref")
    raw = pd.read_parquet(folder / "ref" / "transactions.parquet")
    clean = clean_transactions(read_transactions(folder / "ref" / "transactions.parquet"))[0]
    customers = customer_features(clean)
    weekly = category_week_features(clean)
    models = {
        "customer-segmentation": CustomerSegmenter().fit(
            customers[customers["event_timestamp"] == customers["event_timestamp"].max()]),
        "product-recommendation": ALSRecommender(alpha=2.0).fit(interactions(clean)),
        "demand-forecast": CategoryForecaster(n_jobs=1).fit(weekly),
    }
    scores = backtest(weekly, lambda: CategoryForecaster(n_jobs=1), folds=1, horizon=WEEKS)["model"]
    logged = {"demand-forecast": {"units_wape": scores["units_wape"], "revenue_wape": scores["revenue_wape"]}}
    return ReferenceWorld(config, raw, clean, models, logged, folder)


def main() -> None:
    from monitoring.drift import assess
    from training.data.world import SCENARIOS
    from zmlops.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=1, help="draws of the eight weeks per scenario")
    args = parser.parse_args()
    settings = get_settings()
    out: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference_world(Path(tmp))
        for scenario in SCENARIOS:
            for k in range(1, args.tries + 1):
                current = ref.period(scenario, 10_000 + k)
                row: dict[str, Any] = {"try": k}
                for family, model in ref.models.items():
                    result = assess(settings, family, ref.clean, current, model, ref.logged.get(family, {}), None)
                    row[family] = {"drift": {c: round(v["score"], 3) for c, v in result.columns.items()},
                                   "reasons": result.reasons}
                out.setdefault(scenario, []).append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
