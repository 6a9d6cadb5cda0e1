"""The monitoring decisions do not cry wolf: new samples of an unchanged world rarely ask to retrain.

Each try continues the same simulated world for eight weeks with its own sampling seed (the
world's products, customers and seasons are kept; only the weekly draws differ), and runs the
three checks against models fitted on the reference history. The claim: at most 1 in 20 tries asks to
retrain. Tested as a claim about a rate: the tries may raise at most the number of alarms that a true rate
of 1 in 20 exceeds in only 5% of runs (scipy's binomial quantile): 1 of the 5 fixed seeds `make test` runs,
3 of the 20 of ZM_FULL=1. More alarms than that are evidence, at the 5% level, of a rate above 1 in 20.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import FULL
from zmlops.settings import Settings

pytestmark = pytest.mark.integration

TRIES = 20 if FULL else 5


def test_unchanged_world_asks_for_no_retraining(tmp_path: Path, settings: Settings) -> None:
    from monitoring.drift import assess
    from training.data.cleaning import clean_transactions, read_transactions
    from training.data.simulator import generate_week, simulate
    from training.data.world import SimulationConfig, build_world
    from training.features.build import category_week_features, customer_features
    from training.models.forecasting import CategoryForecaster, backtest
    from training.models.recommendation import ALSRecommender, interactions
    from training.models.segmentation import CustomerSegmenter

    config = SimulationConfig(seed=11, n_customers=600, n_products=300, weeks=80)
    simulate(config, tmp_path / "ref")
    raw_ref = pd.read_parquet(tmp_path / "ref" / "transactions.parquet")
    ref_clean = clean_transactions(read_transactions(tmp_path / "ref" / "transactions.parquet"))[0]

    customers = customer_features(ref_clean)
    models = {
        "customer-segmentation": CustomerSegmenter().fit(
            customers[customers["event_timestamp"] == customers["event_timestamp"].max()]),
        "product-recommendation": ALSRecommender(alpha=2.0).fit(interactions(ref_clean)),
        "demand-forecast": CategoryForecaster(n_jobs=1).fit(category_week_features(ref_clean)),
    }
    weekly = category_week_features(ref_clean)
    bt = backtest(weekly, lambda: CategoryForecaster(n_jobs=1), folds=1, horizon=8)["model"]
    scores = {"units_wape": bt["units_wape"], "revenue_wape": bt["revenue_wape"]}

    nxt = config.next_period(8, "none")
    world = build_world(nxt)
    alarms: list[tuple[int, str, list[str]]] = []
    for k in range(1, TRIES + 1):
        sample = dataclasses.replace(world, config=dataclasses.replace(nxt, seed=10_000 + k))
        weeks = pa.concat_tables([generate_week(sample, nxt.start_week + i) for i in range(nxt.weeks)])
        path = tmp_path / f"try-{k}.parquet"
        pq.write_table(pa.concat_tables([pa.Table.from_pandas(raw_ref, schema=weeks.schema, preserve_index=False),
                                         weeks]), path)
        cur_clean = clean_transactions(read_transactions(path))[0]
        for family, model in models.items():
            result = assess(settings, family, ref_clean, cur_clean, model,
                            scores if family == "demand-forecast" else {}, None)
            if result.reasons:
                alarms.append((k, family, result.reasons))
    print(f"false alarms: {len({k for k, _, _ in alarms})} of {TRIES} tries: {alarms}")
    from scipy.stats import binom

    allowed = int(binom.isf(0.05, TRIES, 1 / 20))  # P(more than `allowed` alarms | rate 1/20) <= 5%
    assert allowed == (3 if FULL else 1)
    assert len({k for k, _, _ in alarms}) <= allowed, alarms
