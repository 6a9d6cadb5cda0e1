"""customer-segmentation: a named segment per customer.

Input per row: either ``customer_id`` (behaviour features are read from the Feast online
store) or the five raw behaviour features. Answers:

- known customer, or raw features: the segment (``segment``, ``segment_id``);
- customer not in the online store: the cold-start answer, the largest training segment,
  with ``cold_start: true``;
- online store down or slower than ``serving.feature_timeout_ms``: the same answer with
  ``degraded: true`` (and ``zm_feature_fallbacks_total``); never an error. Customers whose
  features are in the feature cache (``serving.feature_cache_size``, see
  :mod:`inference_services.features`) still get their segment.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from feature_repo.names import PROFILE_FEATURES
from inference_services import metrics
from inference_services.base import Loaded, Result, ServedModel, TensorSpec
from inference_services.features import FeatureLookupFailed, OnlineFeatures
from zmlops.settings import Settings

__all__ = ["SegmentationService", "SegmentRow"]

FEATURES = tuple(PROFILE_FEATURES)  # the customer_profile feature view; the model's inputs
_UNREAD: Any = object()  # a customer the online store could not be asked about (degraded)


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
    batched = True  # one online-store read and one predict for the rows of concurrent requests
    consent_purpose = "profiling"
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
        cfg = settings.serving
        self.online = OnlineFeatures(settings, "customer_profile", FEATURES, cfg.feature_timeout_ms / 1000,
                                     cfg.feature_cache_size, cfg.feature_cache_seconds, label=self.family)

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

    def watch_inputs(self) -> None:
        """The poll loop's look at the feature view (its first, right after loading, takes note)."""
        import logging

        if self.online.watch():
            logging.getLogger("zmlops.serving").info("%s: customer_profile materialized again: feature cache dropped",
                                                     self.family)

    async def answer(self, state: Loaded, rows: list[SegmentRow]) -> list[Result]:  # type: ignore[override]
        values: list[list[float] | None] = [None] * len(rows)  # the model's inputs per row, FEATURES order
        degraded = [False] * len(rows)
        by_id: list[int] = []
        personal = [r.customer_id is None or self.personal(r.customer_id) for r in rows]
        for i, r in enumerate(rows):
            if r.customer_id is None:
                values[i] = [getattr(r, f) for f in FEATURES]
            elif personal[i]:  # the others: not profiled, the answer an unknown customer gets
                by_id.append(i)
        if by_id:
            try:
                found = await self.online.lookup([rows[i].customer_id for i in by_id])  # type: ignore[misc]
            except FeatureLookupFailed as failed:  # answered from the feature cache where it could
                found = [failed.cached.get(n, _UNREAD) for n in range(len(by_id))]
                unread = sum(got is _UNREAD for got in found)
                metrics.FALLBACKS.labels(self.family, failed.reason).inc(unread)
            missing = 0
            for i, got in zip(by_id, found, strict=True):
                if got is _UNREAD:
                    degraded[i] = True
                elif got is not None and None not in got and all(map(math.isfinite, got)):
                    values[i] = got
                else:  # not in the store (cold start) or a feature missing
                    missing += 1
            if missing:
                metrics.FALLBACKS.labels(self.family, "missing").inc(missing)
        known = [i for i, v in enumerate(values) if v is not None]
        labels = state.estimator.predict(np.array([values[i] for i in known], dtype=float)).tolist() if known else []
        segment = dict(zip(known, labels, strict=True))
        names: dict[int, str] = state.estimator.names_
        keep_features = self.settings.request_log.keep_features
        default_id, default_name = state.index["default"]
        results = []
        for i, row in enumerate(rows):
            seg_id = segment.get(i)
            name = default_name if seg_id is None else names[seg_id]
            seg_id = default_id if seg_id is None else seg_id
            cold = i not in segment and not degraded[i]
            given = values[i]
            results.append(
                Result(
                    v1={"customer_id": row.customer_id, "segment": name, "segment_id": seg_id,
                        "cold_start": cold, "degraded": degraded[i]},
                    v2={"segment": name, "segment_id": seg_id, "cold_start": cold, "degraded": degraded[i]},
                    log={"customer": None if row.customer_id is None or not personal[i]
                         else self.log.pseudonymise(row.customer_id),
                         **({"features": None if given is None else dict(zip(FEATURES, given, strict=True))}
                            if keep_features else {}),
                         "segment": name, "cold_start": cold, "degraded": degraded[i]},
                )
            )
        return results

    def observe(self, state: Loaded, results: list[Result]) -> None:
        for r in results:
            metrics.child(metrics.SEGMENTS, self.family, state.version, r.v1["segment"]).inc()

    def stop(self) -> None:
        super().stop()
        self.online.close()

