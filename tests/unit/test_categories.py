import pandas as pd
import pytest

from training.data.categories import CATEGORIES, categorize, categorize_series
from training.data.world import SimulationConfig, build_world

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("WHITE HANGING HEART T-LIGHT HOLDER", "candles_lights"),
        ("CHRISTMAS CRAFT WHITE FAIRY", "christmas"),
        ("PAPER CHAIN KIT 50'S CHRISTMAS", "christmas"),
        ("JUMBO BAG RED RETROSPOT", "bags_accessories"),
        ("PACK OF 72 RETROSPOT CAKE CASES", "kitchen"),
        ("PARTY BUNTING", "home_decor"),  # must not match TIN inside BUNTING
        ("ASSORTED COLOUR BIRD ORNAMENT", "garden"),
        ("SPACEBOY BIRTHDAY CARD", "stationery"),
        ("nan", "other"),
        ("", "other"),
    ],
)
def test_known_descriptions(description: str, expected: str) -> None:
    assert categorize(description) == expected


def test_simulated_catalogue_is_categorised_exactly() -> None:
    products = build_world(SimulationConfig(n_products=2_000)).products_frame()
    derived = categorize_series(products["description"])
    wrong = products[derived.to_numpy() != products["category"].to_numpy()]
    assert wrong.empty, wrong[["description", "category"]].head().to_string()


def test_series_version_matches_scalar_and_handles_missing() -> None:
    s = pd.Series(["RED MUG", None, "RED MUG", "GARDEN WATERING CAN"])
    assert categorize_series(s).tolist() == ["kitchen", "other", "kitchen", "garden"]
    assert set(CATEGORIES) >= set(categorize_series(s))
