"""Batch scoring benchmark tasks, each run by :func:`benchmarks.bench.measure` in a fresh interpreter.

A recommender over ``customers`` customers and ``items`` products: purchases drawn at random (about 8 products a
customer), ALS factors drawn at random (the ranking's cost does not depend on how the factors were fitted). The
same model answers every customer's top 10 two ways, each timed around the answering alone:

- ``ours``: the batch task's path (:func:`training.batch.write_answers` asking the family's pyfunc wrapper part by
  part, the answers stamped and written to Parquet);
- ``bare``: implicit's own batch ``recommend`` on the same factors and purchases (ids only, nothing written).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["recommend_batch"]

PART = 10_000  # customers a part (the batch task's own part size)


def _emit(**values: float) -> None:
    for key, value in values.items():
        print(f"__{key}__ {float(value)}")


def _model(customers: int, items: int) -> object:
    from implicit.cpu.als import AlternatingLeastSquares

    from training.models.recommendation import ALSRecommender

    rng = np.random.default_rng(0)
    per = rng.integers(2, 15, customers)
    users = np.repeat(np.arange(customers), per)
    codes = np.array([f"{20000 + i:05d}" for i in range(items)], dtype=object)
    pairs = pd.DataFrame({"customer_id": users + 10_000, "stock_code": codes[rng.integers(0, items, len(users))],
                          "country": "United Kingdom", "orders": rng.integers(1, 4, len(users))})
    model = ALSRecommender(factors=32)
    model._fit_index(pairs.drop_duplicates(["customer_id", "stock_code"]))
    als = AlternatingLeastSquares(factors=32, random_state=0)
    als.user_factors = rng.standard_normal((len(model.customers_), 32), dtype=np.float32)
    als.item_factors = rng.standard_normal((len(model.items_), 32), dtype=np.float32)
    model.model_ = als
    return model


def recommend_batch(customers: str = "1000000", items: str = "4000", which: str = "ours") -> None:
    """Every customer's top 10, ``which`` = ours (the batch task's path) or bare (implicit's recommend)."""
    from training.batch import write_answers
    from training.pyfunc import RecommendModel

    model = _model(int(customers), int(items))
    ids = model.customers_.to_numpy()  # type: ignore[attr-defined]
    started = time.perf_counter()
    if which == "ours":
        wrapper = RecommendModel()
        wrapper.estimator = model
        parts = (pd.DataFrame({"customer_id": ids[i:i + PART], "k": 10}) for i in range(0, len(ids), PART))
        with tempfile.TemporaryDirectory() as tmp:
            rows = write_answers(lambda f: wrapper.predict(None, f), parts, Path(tmp) / "answers.parquet",
                                 {"model_version": "1", "data_version": "v1"})
    else:
        matrix = model.matrix_  # type: ignore[attr-defined]
        rows = 0
        for i in range(0, len(ids), PART):
            users = np.arange(i, min(i + PART, len(ids)))
            found, _ = model.model_.recommend(users, matrix[users], N=10,  # type: ignore[attr-defined]
                                              filter_already_liked_items=True)
            rows += int((found >= 0).sum())
    seconds = time.perf_counter() - started
    _emit(output=rows, answer_seconds=seconds, customers_per_second=len(ids) / seconds)


if __name__ == "__main__":
    recommend_batch(*sys.argv[1:])
