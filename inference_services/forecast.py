"""demand-forecast: weekly units and revenue per category with 90% intervals.

Input: ``category`` (one of the model's categories) and ``horizon`` (weeks, default 8, at
most the forecasts the version precomputed). The forecasts of a version are computed at
training time, so an answer is a table lookup; repeated keys are also cached.
"""

from __future__ import annotations

from typing import Any, ClassVar

from kserve.errors import InvalidInput
from pydantic import BaseModel, ConfigDict, Field

from inference_services import metrics
from inference_services.base import Loaded, Result, ServedModel, TensorSpec

__all__ = ["ForecastService", "ForecastRow"]

VALUES = ("units", "units_lower", "units_upper", "revenue", "revenue_lower", "revenue_upper")


class ForecastRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    category: str = Field(min_length=1, max_length=64, description="product category, e.g. 'kitchen'")
    horizon: int = Field(8, ge=1, le=52, description="weeks ahead (at most what the version precomputed)")


class ForecastService(ServedModel):
    family = "demand-forecast"
    Row = ForecastRow
    cached = True
    inputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("category", "BYTES", accepts="BYTES", required=True),
        TensorSpec("horizon", "INT64", accepts="INT"),
    )
    outputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("category", "BYTES"),
        TensorSpec("step", "INT32"),
        TensorSpec("week_start", "BYTES"),
        *(TensorSpec(v, "FP64") for v in VALUES),
    )

    def broadcast_inputs(self) -> set[str]:
        return {"horizon"}

    def build_index(self, estimator: Any) -> dict[str, Any]:
        table = estimator.forecasts_.sort_values(["category", "step"])
        weeks = table["week_start"].dt.strftime("%Y-%m-%d")
        by_category: dict[str, list[dict[str, Any]]] = {}
        for row, week in zip(table.to_dict("records"), weeks, strict=True):
            entry = {"step": int(row["step"]), "week_start": week, **{v: round(float(row[v]), 2) for v in VALUES}}
            by_category.setdefault(str(row["category"]), []).append(entry)
        return {"table": by_category, "max_horizon": int(estimator.max_horizon)}

    def smoke_rows(self, state: Loaded) -> list[ForecastRow]:
        return [ForecastRow(category=c, horizon=1) for c in list(state.index["table"])[:2]]

    def check(self, state: Loaded, rows: list[ForecastRow]) -> None:  # type: ignore[override]
        table, most = state.index["table"], state.index["max_horizon"]
        for i, row in enumerate(rows):
            if row.category not in table:
                known = ", ".join(sorted(table))
                raise InvalidInput(f"instances[{i}].category: unknown category {row.category!r}; known: {known}")
            if row.horizon > most:
                raise InvalidInput(f"instances[{i}].horizon: at most {most} weeks for version {state.version}")

    async def answer(self, state: Loaded, rows: list[ForecastRow]) -> list[Result]:  # type: ignore[override]
        results = []
        for row in rows:
            weeks = state.index["table"][row.category][: row.horizon]
            v2: dict[str, Any] = {
                "category": [row.category] * len(weeks),
                "step": [w["step"] for w in weeks],
                "week_start": [w["week_start"] for w in weeks],
                **{v: [w[v] for w in weeks] for v in VALUES},
            }
            results.append(
                Result(
                    v1={"category": row.category, "horizon": row.horizon, "forecasts": weeks},
                    v2=v2,
                    log={"category": row.category, "horizon": row.horizon, "units": v2["units"]},
                )
            )
        return results

    def observe(self, state: Loaded, results: list[Result]) -> None:
        hist = metrics.child(metrics.FORECAST_UNITS, self.family, state.version)
        for r in results:  # one observation per answer: its mean weekly units
            hist.observe(sum(r.v2["units"]) / max(len(r.v2["units"]), 1))
