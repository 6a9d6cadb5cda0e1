"""The toy family's monitoring checks: drift of the log basket value, and what was served."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monitoring.checks import CONTINUOUS, CheckResult, Checks, Snapshots, latest
from zmlops.settings import Settings


def _assess(s: Snapshots, result: CheckResult) -> None:
    from tests.toy_family.training import basket_value
    from training.features.build import customer_features

    ref, cur = (latest(customer_features(frame)) for frame in (s.reference, s.current))
    ref, cur = (f.assign(log_basket_value=np.log(basket_value(f).clip(min=1e-6))) for f in (ref, cur))
    result.columns = s.drift(ref, cur, {"log_basket_value": CONTINUOUS})
    result.signals["median_basket_value"] = float(np.exp(cur["log_basket_value"].median()))


def _served(settings: Settings, log: pd.DataFrame, estimator: Any, reference: pd.DataFrame,
            current: pd.DataFrame) -> dict[str, float]:
    return {"served_basket_value": float(log["basket_value"].mean())}


BASKET_VALUE = Checks(_assess, _served)
