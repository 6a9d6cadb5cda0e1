"""customer-segmentation: a named segment per customer.

Input per row: either ``customer_id`` (behaviour features are read from the Feast online
store) or the five raw behaviour features. Answers:

- known customer, or raw features: the segment (``segment``, ``segment_id``);
- customer not in the online store: the cold-start answer, the largest training segment,
  with ``cold_start: true``;
- online store down or slower than ``serving.feature_timeout_ms``: the same answer with
  ``degraded: true`` (and ``zm_feature_fallbacks_total``); never an error.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from inference_services import metrics
from inference_services.base import Loaded, Result, ServedModel, TensorSpec
from inference_services.features import FeatureLookupFailed, OnlineFeatures
from zmlops.settings import Settings

__all__ = ["SegmentationService", "SegmentRow"]

FEATURES = ("frequency", "tenure_days", "basket_lines", "units_per_line", "unit_price")


def _feature(description: str) -> Any:
    return Field(None, ge=0, le=1e9, allow_inf_nan=False, description=description)


class SegmentRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    customer_id: int | None = Field(None, ge=0, le=2**53, description="customer id (features from Feast)")
    frequency: float | None = _feature("orders so far")
    tenure_days: float | None = _feature("days since the first order")
    basket_lines: float | None = _feature("mean lines per order")
    units_per_line: float | None = _feature("mean units per line")
    unit_price: float | None = _feature("mean unit price")

    @model_validator(mode="after")
    def one_form(self) -> SegmentRow:
        given = [f for f in FEATURES if getattr(self, f) is not None]
        if self.customer_id is not None and given:
            raise ValueError(f"give either customer_id or the features, not both (got {given[0]})")
        if self.customer_id is None and len(given) < len(FEATURES):
            missing = [f for f in FEATURES if getattr(self, f) is None]
            raise ValueError(f"customer_id or all of {list(FEATURES)} are required; missing {missing[0]}")
        return self


class SegmentationService(ServedModel):
    family = "customer-segmentation"
    Row = SegmentRow
    inputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("customer_id", "INT64", accepts="INT"),
        *(TensorSpec(f, "FP64", accepts="FP") for f in FEATURES),
    )
    outputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("segment", "BYTES"),
        TensorSpec("segment_id", "INT32"),
        TensorSpec("cold_start", "BOOL"),
        TensorSpec("degraded", "BOOL"),
    )

    def __init__(self, settings: Settings, alias: str = "production", version: str | None = None) -> None:
        super().__init__(settings, alias, version)
        self.online = OnlineFeatures(
            settings, "customer_behaviour", FEATURES, "customer_id", settings.serving.feature_timeout_ms / 1000
        )

    def build_index(self, estimator: Any) -> dict[str, Any]:
        shares = pd.Series(estimator.kmeans_.labels_).value_counts()
        largest = int(shares.index[0])
        return {"default": (largest, estimator.names_[largest])}

    def smoke_rows(self, state: Loaded) -> list[SegmentRow]:
        return [SegmentRow(frequency=3.0, tenure_days=120.0, basket_lines=12.0, units_per_line=6.0, unit_price=2.5)]

    def warm(self, state: Loaded) -> None:
        import logging

        try:
            self.online.lookup_now([0])
        except Exception as error:  # noqa: BLE001 - the store may be down now and up later
            logging.getLogger("zmlops.serving").warning("%s: online store not reachable yet: %s", self.family, error)

    def _segments(self, state: Loaded, rows: list[dict[str, float]]) -> list[tuple[int, str]]:
        labels = state.estimator.predict({f: [r[f] for r in rows] for f in FEATURES})
        return [(int(i), state.estimator.names_[int(i)]) for i in labels]

    async def answer(self, state: Loaded, rows: list[SegmentRow]) -> list[Result]:  # type: ignore[override]
        features: list[dict[str, float] | None] = [
            None if r.customer_id is not None else {f: float(getattr(r, f)) for f in FEATURES} for r in rows
        ]
        degraded = [False] * len(rows)
        by_id = [i for i, r in enumerate(rows) if r.customer_id is not None]
        if by_id:
            try:
                found = await self.online.lookup([rows[i].customer_id for i in by_id])  # type: ignore[misc]
                for j, i in enumerate(by_id):
                    values = [found[f][j] for f in FEATURES]
                    if all(v is not None and math.isfinite(v) for v in values):
                        features[i] = dict(zip(FEATURES, map(float, values), strict=True))
                    else:
                        metrics.FALLBACKS.labels(self.family, "missing").inc()
            except FeatureLookupFailed as failed:
                metrics.FALLBACKS.labels(self.family, failed.reason).inc(len(by_id))
                for i in by_id:
                    degraded[i] = True
        known = [i for i, f in enumerate(features) if f is not None]
        segments: dict[int, tuple[int, str]] = {}
        if known:
            found_rows = [features[i] for i in known]
            segments = dict(zip(known, self._segments(state, found_rows), strict=True))  # type: ignore[arg-type]
        results = []
        for i, row in enumerate(rows):
            seg_id, name = segments.get(i, state.index["default"])
            cold = i not in segments and not degraded[i]
            results.append(
                Result(
                    v1={"customer_id": row.customer_id, "segment": name, "segment_id": seg_id,
                        "cold_start": cold, "degraded": degraded[i]},
                    v2={"segment": name, "segment_id": seg_id, "cold_start": cold, "degraded": degraded[i]},
                    log={"customer": None if row.customer_id is None else self.log.pseudonymise(row.customer_id),
                         "features": features[i], "segment": name, "cold_start": cold, "degraded": degraded[i]},
                )
            )
        return results

    def observe(self, state: Loaded, results: list[Result]) -> None:
        for r in results:
            metrics.child(metrics.SEGMENTS, self.family, state.version, r.v1["segment"]).inc()

    def stop(self) -> None:
        super().stop()
        self.online.close()

