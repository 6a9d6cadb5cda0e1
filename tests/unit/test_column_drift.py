"""Evidently's drift per column as the checks run it (monitoring/checks.py, column_drift): each column by the method
asked for, and the sketches above ``sample_rows`` that stand in for the full columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from monitoring.checks import CATEGORY, CONTINUOUS, COUNT, column_drift

pytestmark = pytest.mark.unit


def _frame(rng: np.random.Generator, rows: int, mix: list[float], shift: float) -> pd.DataFrame:
    return pd.DataFrame({"category": rng.choice(["toys", "kitchen", "garden", "christmas"], rows, p=mix),
                         "log_quantity": np.log(rng.poisson(3, rows) + 1.0),
                         "log_price": rng.normal(1.0 + shift, 0.5, rows)})


def test_each_column_by_its_method_and_the_sketches_keep_the_full_data_score() -> None:
    rng = np.random.default_rng(3)
    reference = _frame(rng, 40_000, [0.5, 0.3, 0.19, 0.01], 0.0)
    current = _frame(rng, 30_000, [0.35, 0.35, 0.2, 0.1], 0.08)
    methods = {"category": CATEGORY, "log_quantity": COUNT, "log_price": CONTINUOUS}
    sketched = column_drift(reference, current, methods, None, sample_rows=1_000)
    assert {c: v["method"] for c, v in sketched.items()} == methods
    # Jensen-Shannon distance of the label shares on every row (scipy, natural log as Evidently)
    shares = pd.concat([reference["category"].value_counts(normalize=True),
                        current["category"].value_counts(normalize=True)], axis=1).fillna(0.0)
    full_js = float(jensenshannon(shares.iloc[:, 0], shares.iloc[:, 1]))
    assert sketched["category"]["score"] == pytest.approx(full_js, abs=0.005)
    assert sketched["category"]["drifted"]  # the planted mix change (christmas 1% -> 10%)
    full_w = wasserstein_distance(reference["log_price"], current["log_price"]) / reference["log_price"].std()
    assert sketched["log_price"]["score"] == pytest.approx(full_w, abs=0.01)
    assert not sketched["log_quantity"]["drifted"]  # drawn alike


def test_the_same_distribution_sketched_is_not_drift_whatever_the_sizes() -> None:
    rng = np.random.default_rng(4)
    mix = [0.4, 0.3, 0.2, 0.1]
    scores = column_drift(_frame(rng, 60_000, mix, 0.0), _frame(rng, 9_000, mix, 0.0),
                          {"category": CATEGORY, "log_price": CONTINUOUS}, None, sample_rows=2_000)
    assert scores["category"]["score"] < 0.02 and scores["log_price"]["score"] < 0.02, scores
    assert not any(v["drifted"] for v in scores.values())


def test_the_recommender_s_reference_window_is_the_same_weeks_a_year_earlier_where_the_reference_holds_them() -> None:
    from monitoring.checks import _same_weeks

    def history(first: str, last: str) -> pd.DataFrame:
        return pd.DataFrame({"invoice_ts": pd.date_range(first, last, freq="D")})

    end = pd.Timestamp("2025-03-23")
    assert _same_weeks(history("2023-01-01", "2025-01-31"), end) == end - pd.Timedelta(days=364)
    assert _same_weeks(history("2024-03-10", "2025-01-31"), end) == pd.Timestamp("2025-01-31")  # too short
    assert _same_weeks(history("2023-01-01", "2024-01-31"), end) == pd.Timestamp("2024-01-31")  # ends before
