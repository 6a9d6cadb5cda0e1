"""product-recommendation: top-k products a customer has not bought yet.

Input: ``customer_id``, ``k`` (1-100, default 10) and optionally ``country``. A customer
the version has not seen gets the documented cold-start answer (popular products in the
given country, else overall) with ``cold_start: true``: never an error. Answers for a
(customer, k, country) key are cached per version.

When a version loads, every known customer's top ``MAX_K`` products are ranked into a table
(``serving.ranking_table_mb`` bounds it; 0.9 MB for the 4,312 customers of Online Retail II
2009-2010), and known customers are answered from it: the same ranking as scoring the factors
per request (tests/unit/test_estimators.py), with the scoring moved to the load, before
readiness. Above the bound every request scores the factors.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from inference_services import metrics
from inference_services.base import Loaded, Result, ServedModel, TensorSpec

__all__ = ["RecommendationService", "RecommendRow"]

MAX_K = 100


class RecommendRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    customer_id: int = Field(ge=0, le=2**53, description="customer id; unknown ids get the cold-start answer")
    k: int = Field(10, ge=1, le=MAX_K, description="number of products")
    country: str | None = Field(None, min_length=1, max_length=64, description="country for the cold start")


class RecommendationService(ServedModel):
    family = "product-recommendation"

    Row = RecommendRow
    cached = True
    batched = True  # one scoring of the factors for the rows of concurrent requests (per k)
    consent_purpose = "personalisation"
    inputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("customer_id", "INT64", accepts="INT", required=True),
        TensorSpec("k", "INT32", accepts="INT"),
        TensorSpec("country", "BYTES", accepts="BYTES"),
    )
    outputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("stock_codes", "BYTES", (-1, -1)),
        TensorSpec("cold_start", "BOOL"),
    )

    def broadcast_inputs(self) -> set[str]:
        return {"k", "country"}

    def build_index(self, estimator: Any) -> dict[str, Any]:
        items = estimator.items_.tolist()
        started, log = time.perf_counter(), logging.getLogger("zmlops.serving")
        ranked = estimator.rank_all(MAX_K, self.settings.serving.ranking_table_mb * 2**20)
        customers = len(estimator.customers_)
        if ranked:
            log.info("%s: ranked %d customers' top %d in %.2f s", self.family, customers, MAX_K,
                     time.perf_counter() - started)
        else:
            log.info(
                "%s: no ranking table (%d customers, serving.ranking_table_mb %d): scoring per request",
                self.family, customers, self.settings.serving.ranking_table_mb)
        return {"seen": set(), "catalogue": max(len(items), 1), "ranking_table": ranked}

    def smoke_rows(self, state: Loaded) -> list[RecommendRow]:
        known = int(state.estimator.customers_[0])
        return [RecommendRow(customer_id=known, k=3), RecommendRow(customer_id=2**53, k=3)]

    def cache_key(self, row: BaseModel) -> tuple[Any, ...]:
        assert isinstance(row, RecommendRow)
        return (row.customer_id, row.k, row.country)

    async def answer(self, state: Loaded, rows: list[RecommendRow]) -> list[Result]:  # type: ignore[override]
        # one ranking at the largest k: a smaller k's answer is its prefix (warm and cold start alike)
        most = max(r.k for r in rows)
        personal = [self.personal(r.customer_id) for r in rows]  # the others: the popularity list, like a stranger
        ranked = state.estimator.recommend([r.customer_id if p else None for r, p in zip(rows, personal, strict=True)],
                                           most, [r.country for r in rows])
        pseudonymise = self.log.pseudonymise
        results = []
        for row, (items, cold), mine in zip(rows, ranked, personal, strict=True):
            if row.k < most:
                items = items[: row.k]
            results.append(
                Result(
                    v1={"customer_id": row.customer_id, "items": items, "cold_start": cold},
                    v2={"stock_codes": items, "cold_start": cold},
                    log={"customer": pseudonymise(row.customer_id) if mine else None, "k": row.k,
                         "country": row.country,
                         "items": items, "cold_start": cold},
                )
            )
        return results

    def observe(self, state: Loaded, results: list[Result]) -> None:
        seen: set[str] = state.index["seen"]
        before = len(seen)
        for r in results:
            cold = "true" if r.v1["cold_start"] else "false"
            metrics.child(metrics.RECOMMENDED, self.family, state.version, cold).inc()
            seen.update(r.v1["items"])
        if len(seen) != before:  # the gauge moves only when a new item was recommended
            metrics.child(metrics.COVERAGE, self.family, state.version).set(len(seen) / state.index["catalogue"])
