"""How far a shadow version's answer to one row agrees with production's, 0..1, from the two rows as the
request log keeps them (``Result.log``): the same function judges a copy the predictor answered itself
(``serving.shadow_alias``) and a copy a gateway mirrored to a shadow predictor (``serving.mirrored``), whose
answers are joined to production's in the request log by request id. Pure functions of two dicts, so both
the serving and the pipelines environments import them; a family names its own in its catalog entry
(``agreement``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["same_answer", "rank_overlap", "units_closeness"]

NOT_ANSWERS = ("latency_ms", "cache_hits")  # how, not what: never part of an answer's comparison


def same_answer(production: Mapping[str, Any], shadow: Mapping[str, Any]) -> float:
    """1 when every logged field of the answer is equal, else 0 (segments, and any family that names no other)."""
    keys = (set(production) | set(shadow)) - set(NOT_ANSWERS)
    return float(all(production.get(k) == shadow.get(k) for k in keys))


def rank_overlap(production: Mapping[str, Any], shadow: Mapping[str, Any]) -> float:
    """Recommendations: the share of production's list that the shadow's list holds too (1 when both are empty)."""
    mine, theirs = production.get("items") or [], shadow.get("items") or []
    return len(set(mine) & set(theirs)) / len(mine) if mine else float(not theirs)


def units_closeness(production: Mapping[str, Any], shadow: Mapping[str, Any]) -> float:
    """Forecasts: 1 minus the relative difference of the weekly units over the horizon (0 at 100% or more apart)."""
    a: list[float] = list(production.get("units") or [])
    b: list[float] = list(shadow.get("units") or [])
    if len(a) != len(b):
        return 0.0
    total = float(sum(abs(x) for x in a))
    if total == 0:
        return float(all(y == 0 for y in b))
    return max(0.0, 1.0 - float(sum(abs(x - y) for x, y in zip(a, b, strict=True))) / total)
