"""Names that DAG files and light tools need without importing the model code."""

from __future__ import annotations

__all__ = ["FAMILIES", "RETRAIN_ASSET_PREFIX", "retrain_asset_uri"]

# One entry per model family; training.families defines them (a test keeps the two equal).
FAMILIES = ("demand-forecast", "customer-segmentation", "product-recommendation")

RETRAIN_ASSET_PREFIX = "zmlops://retrain/"


def retrain_asset_uri(family: str) -> str:
    """The Airflow asset whose events re-enter the training DAG for one family."""
    return RETRAIN_ASSET_PREFIX + family
