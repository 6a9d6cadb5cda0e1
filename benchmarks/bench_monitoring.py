"""Drift-job benchmark tasks (run by :func:`benchmarks.bench.measure` in fresh interpreters).

Input: ``rows`` request-log rows of the segmentation service's five behaviour features for a
reference window and as many for a current window (the current one shifted in one column),
generated before the clock starts. Measured:

- ``drift_job``: what the monitoring job runs, :func:`monitoring.drift.column_drift` (Evidently's
  preset on quantile sketches of ``monitoring.sample_rows`` points per column and side);
- ``full_scipy``: the same per-column statistic (Wasserstein distance normed by the reference's
  standard deviation, the method the checks give continuous columns) with scipy on every row.

Both write their per-column scores to ``out`` so the parent can check that sampling moves them by < 0.01.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

__all__ = ["drift_job", "full_scipy"]

COLUMNS = ["frequency", "tenure_days", "basket_lines", "units_per_line", "unit_price"]
METHODS = dict.fromkeys(COLUMNS, "wasserstein")  # monitoring.checks.CONTINUOUS


def _frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)

    def draw(shift: float) -> pd.DataFrame:
        return pd.DataFrame({
            "frequency": rng.poisson(6, rows).astype(float),
            "tenure_days": rng.gamma(2.0, 150.0, rows),
            "basket_lines": rng.lognormal(2.0, 0.5, rows),
            "units_per_line": rng.lognormal(1.5, 0.6, rows),
            "unit_price": rng.lognormal(1.0 + shift, 0.4, rows),
        })

    return draw(0.0), draw(0.1)


def drift_job(rows: str, out: str) -> None:
    import evidently.presets  # noqa: F401 - imports are not the job's cost

    from monitoring.drift import column_drift
    from zmlops.settings import get_settings

    ref, cur = _frames(int(rows))
    settings = get_settings()
    column_drift(ref.head(200), cur.head(200), METHODS, None, 100)  # warm-up: lazy imports are not the job's cost
    t = time.perf_counter()
    result = column_drift(ref, cur, METHODS, None, settings.monitoring.sample_rows)
    seconds = time.perf_counter() - t
    print(int(rows))
    print(f"__compute__ {seconds}")
    with open(out, "w") as f:
        json.dump({c: v["score"] for c, v in result.items()}, f)


def full_scipy(rows: str, out: str) -> None:
    from scipy.stats import wasserstein_distance

    ref, cur = _frames(int(rows))
    t = time.perf_counter()
    scores = {}
    for c in COLUMNS:
        r, k = ref[c].to_numpy(), cur[c].to_numpy()
        scores[c] = float(wasserstein_distance(r, k) / np.std(r))
    seconds = time.perf_counter() - t
    print(int(rows))
    print(f"__compute__ {seconds}")
    with open(out, "w") as f:
        json.dump(scores, f)
