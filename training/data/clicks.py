"""Simulated clicks on served recommendations, with a planted click-through rate per model version.

Every experiment day new customers are shown a recommendation list by the variant they are assigned to;
each clicks with the planted rate of that variant's model version (the truth an A/B test must find). A
configurable uplift of the treatment over the control is the usual way to plant one. Deterministic from
the seed.

- :func:`daily_counts`: many experiments at once as cumulative customers and clicks per day and variant
  (binomial draws): what the power and false-positive studies run on.
- :func:`events`: one experiment as events (shown, clicked, bought) per customer, assigned by the caller's
  function (the experiment's sticky assignment): what the request log and the events path carry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ClickWorld", "daily_counts", "events"]


@dataclass(frozen=True)
class ClickWorld:
    rates: Mapping[str, float]  # planted click-through per variant: the share of shown customers who click
    customers_per_day: int  # new customers shown a list each day
    days: int = 7
    seed: int = 0
    purchase_rate: float = 0.3  # of clicks, the share that end in a purchase of the clicked product
    mean_price: float = 4.0  # of a purchased line (units x unit price), exponential

    @staticmethod
    def with_uplift(control_rate: float, uplift: float, customers_per_day: int, days: int = 7,
                    seed: int = 0) -> ClickWorld:
        """Control at ``control_rate``, treatment ``uplift`` (relative) above it."""
        return ClickWorld({"control": control_rate, "treatment": control_rate * (1 + uplift)}, customers_per_day,
                          days, seed)


def daily_counts(world: ClickWorld, split: Mapping[str, float], experiments: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """Cumulative ``customers`` and ``clicks`` per variant, arrays of shape (experiments, days)."""
    rng = np.random.default_rng(world.seed)
    names = sorted(split)
    shown = rng.multinomial(world.customers_per_day, [split[n] for n in names], size=(experiments, world.days))
    out: dict[str, dict[str, np.ndarray]] = {"customers": {}, "clicks": {}}
    for i, name in enumerate(names):
        clicks = rng.binomial(shown[..., i], world.rates[name])
        out["customers"][name] = shown[..., i].cumsum(axis=1)
        out["clicks"][name] = clicks.cumsum(axis=1)
    return out


def events(world: ClickWorld, assign: Callable[[int], str], first_customer: int = 1) -> pd.DataFrame:
    """One row per customer shown a list: day, customer id, variant, clicked, bought, revenue."""
    rng = np.random.default_rng(world.seed)
    n = world.customers_per_day * world.days
    ids = np.arange(first_customer, first_customer + n)
    variants = np.array([assign(int(c)) for c in ids])
    rate = np.array([world.rates[v] for v in variants])
    clicked = rng.random(n) < rate
    bought = clicked & (rng.random(n) < world.purchase_rate)
    revenue = np.where(bought, rng.exponential(world.mean_price, n), 0.0).round(2)
    return pd.DataFrame({"day": np.repeat(np.arange(1, world.days + 1), world.customers_per_day),
                         "customer_id": ids, "variant": variants, "clicked": clicked, "bought": bought,
                         "revenue": revenue})
