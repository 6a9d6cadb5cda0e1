"""The simulated retailer's world: products, customers, segments, seasonality and promotions.

Everything here is planted truth. :mod:`training.data.simulator` draws transactions from
it; tests read it back to check that models learn it. A world is a pure function of its
config (seed included), so the same config always yields the same world.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from training.data.categories import CATEGORY_KEYWORDS

__all__ = ["Segment", "SEGMENTS", "CategorySeason", "SEASONS", "SimulationConfig", "World", "build_world",
           "SCENARIOS"]


@dataclass(frozen=True)
class Segment:
    """A planted customer segment: how often, how much and how cheaply its members buy."""

    name: str
    share: float
    orders_per_week: float
    lines_per_order: float
    units_per_line: float
    price_sensitivity: float  # exponent on price in item choice: 0 = indifferent
    price_tier: float  # multiplier on list price (wholesale pays less per unit)


SEGMENTS: tuple[Segment, ...] = (
    Segment("wholesale", 0.10, 0.30, 18.0, 24.0, 0.0, 0.85),
    Segment("loyal", 0.25, 0.60, 8.0, 4.0, 0.0, 1.0),
    Segment("occasional", 0.45, 0.08, 4.0, 2.0, 0.0, 1.0),
    Segment("bargain", 0.20, 0.25, 6.0, 8.0, 1.5, 1.0),
)


@dataclass(frozen=True)
class CategorySeason:
    """Yearly seasonality of a category: demand share multiplier exp(amp * cos(2pi (woy - peak) / 52))."""

    amplitude: float
    peak_week: int
    base_price: float


SEASONS: dict[str, CategorySeason] = {
    "christmas": CategorySeason(1.6, 48, 2.0),
    "candles_lights": CategorySeason(0.6, 47, 2.8),
    "bags_accessories": CategorySeason(0.2, 30, 2.1),
    "kitchen": CategorySeason(0.15, 48, 2.5),
    "stationery": CategorySeason(0.3, 36, 0.9),
    "toys_games": CategorySeason(0.5, 49, 3.0),
    "garden": CategorySeason(0.8, 20, 3.5),
    "home_decor": CategorySeason(0.25, 46, 4.0),
}

# Design lines ("themes") cut across categories: customers collect a few of them, which
# plants the co-purchase structure that recommendation models should find.
THEME_NAMES = (
    "RETROSPOT", "PAISLEY", "WOODLAND", "REGENCY", "POLKADOT", "ALPINE", "GINGHAM", "FAIRY",
    "ROSES", "VINTAGE DOILY", "SKULL", "CIRCUS", "SWALLOW", "JUNGLE", "NAUTICAL", "SCANDI",
    "ORIENTAL", "MOROCCAN", "COTTAGE", "PARISIENNE", "BLOSSOM", "STRAWBERRY", "OWL", "DINOSAUR",
    "BUTTERFLY", "PEACOCK", "TARTAN", "ZINC", "ENAMEL", "WICKER", "SPACE", "PIXIE",
)
COLOURS = ("RED", "BLUE", "PINK", "GREEN", "IVORY", "BLACK", "CREAM", "PURPLE", "SILVER", "NAVY")
COUNTRIES = (
    ("United Kingdom", 0.86), ("Germany", 0.03), ("France", 0.03), ("EIRE", 0.025), ("Netherlands", 0.015),
    ("Spain", 0.01), ("Belgium", 0.01), ("Switzerland", 0.008), ("Portugal", 0.007), ("Australia", 0.005),
)

SCENARIOS = ("none", "new_product_mix", "price_shock", "segment_growth")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``start`` is a Monday; weeks are numbered from ``start``."""

    seed: int = 42
    n_customers: int = 2_000
    n_products: int = 1_500
    weeks: int = 104
    start: dt.date = dt.date(2023, 1, 2)
    start_week: int = 0  # first week index of this period (a "next period" continues the numbering)
    scenario: str = "none"
    guest_share: float = 0.15
    cancel_share: float = 0.015
    return_share: float = 0.01
    non_product_share: float = 0.03
    nan_description_share: float = 0.002
    duplicate_share: float = 0.005
    promos_per_year: int = 3
    trend_per_year: float = 0.05
    # changing seasonality (multi-year histories): each category's peak moves this many weeks later per year, and
    # its amplitude changes by this share per year (compounded)
    season_shift_weeks_per_year: float = 0.0
    season_amplitude_change_per_year: float = 0.0

    def __post_init__(self) -> None:
        if self.start.weekday() != 0:
            raise ValueError(f"start must be a Monday, got {self.start} ({self.start:%A})")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.n_customers < 10 or not 40 <= self.n_products <= 80_000 or self.weeks < 1:
            raise ValueError("need at least 10 customers, 40 to 80,000 products and 1 week")

    def next_period(self, weeks: int, scenario: str = "none") -> SimulationConfig:
        """The config of the period that follows this one, optionally under a drift scenario."""
        return replace(self, start_week=self.start_week + self.weeks, weeks=weeks, scenario=scenario)

    @property
    def end(self) -> dt.date:
        """Last day of this period (a Sunday)."""
        return self.start + dt.timedelta(weeks=self.start_week + self.weeks, days=-1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        return out

    @classmethod
    def for_rows(cls, rows: int, **kwargs: Any) -> SimulationConfig:
        """A config whose output has about ``rows`` raw rows (customers scale, the catalogue grows slowly)."""
        weeks = int(kwargs.get("weeks", cls.weeks))
        lines_per_customer_week = sum(s.share * s.orders_per_week * s.lines_per_order for s in SEGMENTS) * 1.05
        n_customers = max(10, round(rows / (weeks * lines_per_customer_week)))
        kwargs.setdefault("n_products", int(min(4_000, max(400, 40 * np.sqrt(n_customers)))))
        return cls(n_customers=n_customers, **kwargs)


@dataclass
class World:
    """Arrays describing products and customers (index = position)."""

    config: SimulationConfig
    product_code: np.ndarray
    product_description: np.ndarray
    product_category: np.ndarray  # index into CATEGORIES order of SEASONS
    product_theme: np.ndarray
    product_price: np.ndarray
    product_popularity: np.ndarray
    customer_id: np.ndarray
    customer_segment: np.ndarray
    customer_country: np.ndarray
    customer_theme_cdf: np.ndarray  # cumulative theme preference, customers x themes
    promos: dict[str, list[int]] = field(default_factory=dict)  # category -> absolute week indices
    categories: tuple[str, ...] = tuple(SEASONS)

    @property
    def n_themes(self) -> int:
        return int(self.customer_theme_cdf.shape[1])

    def season_multiplier(self, week: int) -> np.ndarray:
        """Demand multiplier per category for absolute week index ``week``."""
        woy = _week_of_year(self.config.start, week)
        years = week / 52.0
        shift = self.config.season_shift_weeks_per_year * years
        scale = (1.0 + self.config.season_amplitude_change_per_year) ** years
        mult = np.array([np.exp(s.amplitude * scale * np.cos(2 * np.pi * (woy - s.peak_week - shift) / 52.0))
                         for s in SEASONS.values()])
        for c, name in enumerate(self.categories):
            if week in self.promos.get(name, ()):
                mult[c] *= PROMO_UPLIFT
        return mult

    def products_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "stock_code": self.product_code,
                "description": self.product_description,
                "category": np.array(self.categories)[self.product_category],
                "theme": np.array(THEME_NAMES)[self.product_theme],
                "list_price": self.product_price,
                "popularity": self.product_popularity,
            }
        )

    def customers_frame(self) -> pd.DataFrame:
        names = np.array([s.name for s in SEGMENTS])
        top_theme = np.argmax(np.diff(self.customer_theme_cdf, axis=1, prepend=0.0), axis=1)
        return pd.DataFrame(
            {
                "customer_id": self.customer_id,
                "segment": names[self.customer_segment],
                "country": np.array([c for c, _ in COUNTRIES])[self.customer_country],
                "top_theme": top_theme,
            }
        )


PROMO_UPLIFT = 1.6
PROMO_DISCOUNT = 0.85
BLACK_FRIDAY_UPLIFT = 1.5
# Black Friday follows the fourth Thursday of November (22nd-28th), so it falls on the 23rd-29th.
BLACK_FRIDAY_DAYS = (23, 29)
CHRISTMAS_WEEK_FACTOR = 0.35
GLOBAL_SEASON_AMPLITUDE = 0.35  # gift retailer: orders peak before Christmas
GLOBAL_SEASON_PEAK = 46


def _week_of_year(start: dt.date, week: int) -> int:
    return (start + dt.timedelta(weeks=week)).isocalendar()[1]


def order_rate_multiplier(config: SimulationConfig, week: int) -> float:
    """Global order-rate multiplier for an absolute week: yearly season, trend, holidays."""
    monday = config.start + dt.timedelta(weeks=week)
    woy = monday.isocalendar()[1]
    mult = float(np.exp(GLOBAL_SEASON_AMPLITUDE * np.cos(2 * np.pi * (woy - GLOBAL_SEASON_PEAK) / 52.0)))
    mult *= float((1 + config.trend_per_year) ** (week / 52.0))
    days = [monday + dt.timedelta(days=d) for d in range(7)]
    if any(d.month == 11 and d.weekday() == 4 and BLACK_FRIDAY_DAYS[0] <= d.day <= BLACK_FRIDAY_DAYS[1] for d in days):
        mult *= BLACK_FRIDAY_UPLIFT
    if any(d.month == 12 and d.day == 25 for d in days):
        mult *= CHRISTMAS_WEEK_FACTOR
    return mult


def build_world(config: SimulationConfig) -> World:
    """The world of ``config``: identical for identical configs; scenarios alter a copy."""
    rng = np.random.default_rng([config.seed, 0])
    categories = tuple(SEASONS)
    n_products = config.n_products
    n_themes = max(8, min(len(THEME_NAMES), n_products // 25))

    category = rng.integers(0, len(categories), n_products)
    theme = rng.integers(0, n_themes, n_products)
    popularity = rng.lognormal(0.0, 1.0, n_products)
    base = np.array([SEASONS[c].base_price for c in categories])[category]
    price = np.round(base * rng.lognormal(0.0, 0.35, n_products), 2).clip(0.1)
    # five digits like the real file's codes; 37 and 80,000 are coprime, so codes stay unique
    codes = np.array([f"{20000 + (37 * i) % 80_000:05d}" for i in range(n_products)], dtype=object)
    suffix = rng.random(n_products) < 0.15
    codes[suffix] = codes[suffix] + np.array(list("ABCDE"))[rng.integers(0, 5, suffix.sum())]
    descriptions = np.array(
        [
            _describe(THEME_NAMES[theme[i]], COLOURS[rng.integers(0, len(COLOURS))], categories[category[i]], rng)
            for i in range(n_products)
        ],
        dtype=object,
    )

    n_customers = config.n_customers
    seg_share = np.array([s.share for s in SEGMENTS])
    segment = rng.choice(len(SEGMENTS), size=n_customers, p=seg_share)
    country_p = np.array([p for _, p in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=n_customers, p=country_p / country_p.sum())
    prefs = rng.dirichlet(np.full(n_themes, 0.25), size=n_customers)
    world = World(
        config=config,
        product_code=codes,
        product_description=descriptions,
        product_category=category,
        product_theme=theme,
        product_price=price,
        product_popularity=popularity,
        customer_id=12_000 + np.arange(n_customers, dtype=np.int64),
        customer_segment=segment,
        customer_country=country,
        customer_theme_cdf=np.cumsum(prefs, axis=1),
        promos=_plan_promos(config, categories, rng),
        categories=categories,
    )
    return _apply_scenario(world, config, rng) if config.scenario != "none" else world


def _describe(theme: str, colour: str, category: str, rng: np.random.Generator) -> str:
    keyword = CATEGORY_KEYWORDS[category][rng.integers(0, len(CATEGORY_KEYWORDS[category]))]
    return f"{colour} {theme} {keyword}" if rng.random() < 0.5 else f"{theme} {keyword}"


def _plan_promos(config: SimulationConfig, categories: tuple[str, ...], rng: np.random.Generator) -> dict[
    str, list[int]]:
    years = 20  # fixed, so every period of one seed sees the same promotion calendar
    promos: dict[str, list[int]] = {}
    for name in categories:
        weeks: list[int] = []
        for y in range(years):
            weeks.extend(int(w) + 52 * y for w in rng.choice(52, size=config.promos_per_year, replace=False))
        promos[name] = sorted(weeks)
    return promos


def _apply_scenario(world: World, config: SimulationConfig, rng: np.random.Generator) -> World:
    """Named drift scenarios for a "next period"; the planted change is recorded in truth."""
    srng = np.random.default_rng([config.seed, 1, SCENARIOS.index(config.scenario)])
    if config.scenario == "price_shock":
        shocked = np.isin(world.product_category, [world.categories.index(c) for c in ("kitchen", "home_decor")])
        world.product_price = np.where(shocked, np.round(world.product_price * 1.35, 2), world.product_price)
    elif config.scenario == "new_product_mix":
        # a new design line arrives, is heavily promoted, and customers shift their taste towards it
        n_new = max(10, config.n_products // 5)
        new_theme = world.n_themes - 1
        world.product_code = np.concatenate(
            [world.product_code, np.array([f"{90000 + i:05d}" for i in range(n_new)], dtype=object)]
        )
        cats = srng.integers(0, len(world.categories), n_new)
        world.product_category = np.concatenate([world.product_category, cats])
        world.product_theme = np.concatenate([world.product_theme, np.full(n_new, new_theme)])
        base = np.array([SEASONS[c].base_price for c in world.categories])[cats]
        world.product_price = np.concatenate([world.product_price, np.round(base * 1.2, 2)])
        world.product_popularity = np.concatenate(
            [world.product_popularity, srng.lognormal(1.5, 0.5, n_new)]
        )
        world.product_description = np.concatenate(
            [world.product_description,
             np.array([_describe("NEW WAVE", "", world.categories[c], srng).strip() for c in cats], dtype=object)]
        )
        prefs = np.diff(world.customer_theme_cdf, axis=1, prepend=0.0)
        prefs[:, new_theme] += 0.8
        world.customer_theme_cdf = np.cumsum(prefs / prefs.sum(axis=1, keepdims=True), axis=1)
    elif config.scenario == "segment_growth":
        # the bargain segment grows: 60% more customers, all bargain hunters
        grow = int(0.6 * len(world.customer_id))
        bargain = [s.name for s in SEGMENTS].index("bargain")
        world.customer_id = np.concatenate(
            [world.customer_id, world.customer_id.max() + 1 + np.arange(grow, dtype=np.int64)]
        )
        world.customer_segment = np.concatenate([world.customer_segment, np.full(grow, bargain)])
        world.customer_country = np.concatenate([world.customer_country, np.zeros(grow, dtype=np.int64)])
        prefs = srng.dirichlet(np.full(world.n_themes, 0.25), size=grow)
        world.customer_theme_cdf = np.vstack([world.customer_theme_cdf, np.cumsum(prefs, axis=1)])
    return world
