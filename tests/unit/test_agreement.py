"""The shadow comparisons (monitoring/agreement.py), on rows as the request log keeps them."""

from __future__ import annotations

import pytest

from monitoring.agreement import rank_overlap, same_answer, units_closeness
from zmlops import catalog

pytestmark = pytest.mark.unit


def test_each_family_compares_what_its_answer_is() -> None:
    assert rank_overlap({"items": ["a", "b", "c", "d"]}, {"items": ["d", "c", "x", "y"]}) == 0.5  # order aside
    assert rank_overlap({"items": []}, {"items": []}) == 1.0 and rank_overlap({"items": []}, {"items": ["a"]}) == 0.0
    assert units_closeness({"units": [10.0, 30.0]}, {"units": [12.0, 27.0]}) == pytest.approx(1 - 5 / 40)
    assert units_closeness({"units": [10.0]}, {"units": [30.0]}) == 0.0  # 200% apart: no agreement, not negative
    assert units_closeness({"units": [1.0, 2.0]}, {"units": [1.0]}) == 0.0  # another horizon
    segment = {"customer": "h1", "segment": "loyal", "cold_start": False}
    assert same_answer(segment, {**segment, "latency_ms": 3.0}) == 1.0  # how long is not what
    assert same_answer(segment, {**segment, "segment": "new"}) == 0.0


def test_the_catalog_names_each_family_s_comparison() -> None:
    assert catalog.load(catalog.entry("product-recommendation").agreement) is rank_overlap
    assert catalog.load(catalog.entry("demand-forecast").agreement) is units_closeness
    assert catalog.load(catalog.entry("customer-segmentation").agreement) is same_answer
