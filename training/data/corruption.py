"""Named ways to corrupt a raw table, for gate drills in tests and the demo."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CORRUPTIONS", "corrupt"]

CORRUPTIONS = ("missing_column", "wrong_type", "nulls", "negative_prices", "future_dates")


def corrupt(raw: pd.DataFrame, kind: str, seed: int = 0, share: float = 0.05) -> pd.DataFrame:
    """A corrupted copy of ``raw``; ``share`` of rows are touched where the kind is row-wise."""
    rng = np.random.default_rng(seed)
    out = raw.copy()
    rows = rng.random(len(out)) < share
    if kind == "missing_column":
        return out.drop(columns=["Country"])
    if kind == "wrong_type":
        out["Quantity"] = out["Quantity"].astype(str)
    elif kind == "nulls":
        out["StockCode"] = out["StockCode"].where(~rows, None)
    elif kind == "negative_prices":
        out.loc[rows, "Price"] = -out.loc[rows, "Price"].abs() - 0.01
    elif kind == "future_dates":
        shifted = pd.to_datetime(out.loc[rows, "InvoiceDate"]) + pd.Timedelta(days=60)
        out.loc[rows, "InvoiceDate"] = shifted.dt.strftime("%Y-%m-%d %H:%M:%S")
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    return out
