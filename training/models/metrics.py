"""Metrics of the three families: forecast errors and top-k ranking quality."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["forecast_errors", "ranking_metrics"]


def forecast_errors(actual: np.ndarray, forecast: np.ndarray, scale: float) -> dict[str, float]:
    """MAE, RMSE, MAPE (over non-zero actuals), WAPE and MASE (``scale`` = in-sample seasonal-naive MAE)."""
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    err = forecast - actual
    nonzero = actual != 0
    mae = float(np.mean(np.abs(err)))
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err[nonzero] / actual[nonzero]))) if nonzero.any() else float("nan"),
        "wape": float(np.abs(err).sum() / np.abs(actual).sum()) if np.abs(actual).sum() else float("nan"),
        "mase": mae / scale if scale > 0 else float("nan"),
    }


def ranking_metrics(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[set[Hashable]], k: int, n_items: int
) -> dict[str, float]:
    """precision@k, recall@k, MAP@k, NDCG@k over users with relevant items, and catalogue coverage."""
    if len(recommended) != len(relevant):
        raise ValueError("one recommendation list per user")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision = recall = ap = ndcg = 0.0
    shown: set[Hashable] = set()
    users = 0
    for recs, rel in zip(recommended, relevant, strict=True):
        top = list(recs)[:k]
        shown.update(top)
        if not rel:
            continue
        users += 1
        hits = np.array([item in rel for item in top], dtype=float)
        n_hit = float(hits.sum())
        precision += n_hit / k
        recall += n_hit / len(rel)
        if n_hit:
            ap += float(np.sum(hits * np.cumsum(hits) / np.arange(1, len(top) + 1))) / min(len(rel), k)
        ideal = discounts[: min(len(rel), k)].sum()
        ndcg += float(np.sum(hits * discounts[: len(top)]) / ideal)
    n = max(users, 1)
    return {
        f"precision_at_{k}": precision / n,
        f"recall_at_{k}": recall / n,
        f"map_at_{k}": ap / n,
        f"ndcg_at_{k}": ndcg / n,
        "coverage": len(shown) / n_items if n_items else 0.0,
        "eval_users": float(users),
    }
