"""Metrics of the three families: forecast errors and top-k ranking quality."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["forecast_errors", "ranking_metrics"]


def forecast_errors(actual: np.ndarray, forecast: np.ndarray, scale: float) -> dict[str, float]:
    """MAE, RMSE, MAPE (over non-zero actuals) from scikit-learn; WAPE and MASE (``scale`` = in-sample
    seasonal-naive MAE), which it does not define."""
    from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, root_mean_squared_error

    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    nonzero = actual != 0
    mae = float(mean_absolute_error(actual, forecast))
    total = float(np.abs(actual).sum())
    return {
        "mae": mae,
        "rmse": float(root_mean_squared_error(actual, forecast)),
        "mape": float(mean_absolute_percentage_error(actual[nonzero], forecast[nonzero])) if nonzero.any()
        else float("nan"),
        "wape": mae * len(actual) / total if total else float("nan"),
        "mase": mae / scale if scale > 0 else float("nan"),
    }


def ranking_metrics(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[set[Hashable]], k: int, n_items: int
) -> dict[str, float]:
    """precision@k, recall@k, MAP@k, NDCG@k over users with relevant items, and catalogue coverage. Our own: the
    libraries' versions take a score for every item of every user (scikit-learn's ``ndcg_score``) or define
    precision over min(k, relevant) (implicit's ``ranking_metrics_at_k``), where these take the top-k lists."""
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
