"""The toy family's service: the three basket features in, the basket value out."""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from inference_services.base import Loaded, Result, ServedModel, TensorSpec


class BasketRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    basket_lines: float = Field(gt=0, le=1e6, allow_inf_nan=False, description="mean lines per order")
    units_per_line: float = Field(gt=0, le=1e6, allow_inf_nan=False, description="mean units per line")
    unit_price: float = Field(gt=0, le=1e6, allow_inf_nan=False, description="mean unit price")


class BasketValueService(ServedModel):
    family = "basket-value"
    Row = BasketRow
    inputs: ClassVar[tuple[TensorSpec, ...]] = tuple(
        TensorSpec(name, "FP64", accepts="FP", required=True) for name in BasketRow.model_fields)
    outputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("basket_value", "FP64"),)

    def smoke_rows(self, state: Loaded) -> list[BasketRow]:
        return [BasketRow(basket_lines=10.0, units_per_line=5.0, unit_price=2.0)]

    async def answer(self, state: Loaded, rows: list[BasketRow]) -> list[Result]:  # type: ignore[override]
        values = state.estimator.predict(pd.DataFrame([r.model_dump() for r in rows]))
        out: list[Any] = []
        for value in values:
            v = round(float(value), 4)
            out.append(Result(v1={"basket_value": v}, v2={"basket_value": v}, log={"basket_value": v}))
        return out
