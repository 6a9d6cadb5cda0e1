"""Product categories derived from descriptions.

The UCI file has no category column, so one is derived by keyword rules on the
upper-cased description: the first category (in the order below) with a keyword
contained in the description wins; descriptions matching none are ``other``.
Keywords match whole words, plurals included. The order resolves overlaps on purpose:
"CHRISTMAS CARD" is Christmas, "HEART T-LIGHT HOLDER" is candles and lights. The simulator names its products with the
same keywords, so one rule serves simulated and real data.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from feature_repo.names import CATEGORIES

__all__ = ["CATEGORY_KEYWORDS", "CATEGORIES", "categorize", "categorize_series"]

CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "christmas": ("CHRISTMAS", "XMAS", "SANTA", "REINDEER", "SNOWFLAKE", "ADVENT", "BAUBLE"),
    "candles_lights": ("T-LIGHT", "TEA LIGHT", "TEALIGHT", "CANDLE", "LANTERN", "LIGHT", "NIGHT LIGHT"),
    "bags_accessories": (
        "BAG", "PURSE", "SHOPPER", "TOTE", "UMBRELLA", "PARASOL", "HAND WARMER", "HAIR CLIP", "CLIP",
        "FAN", "MINI CASE", "JEWELLERY", "NECKLACE", "BRACELET", "EARRINGS", "KEY FOB",
    ),
    "kitchen": (
        "MUG", "CUP", "PLATE", "BOWL", "JAR", "SPOON", "CAKE", "TEAPOT", "LUNCH BOX", "BAKING", "NAPKIN",
        "TRAY", "BOTTLE", "TEA TOWEL", "TIN", "TEA SET", "JUG", "CUTLERY", "SCALES", "OVEN GLOVE",
        "COOKIE CUTTER", "GLASS", "POPCORN HOLDER", "WASHING UP GLOVE", "APRON", "COASTER", "EGG CUP",
    ),
    "stationery": (
        "CARD", "PAPER", "NOTEBOOK", "PENCIL", "WRAP", "STICKER", "TAPE", "ENVELOPE", "CALENDAR", "RIBBON",
        "NOTE BOOK", "JOURNAL", "ERASER", "RUBBER", "MEMO",
    ),
    "toys_games": (
        "TOY", "GAME", "DOLL", "PUZZLE", "SKIPPING ROPE", "PLAYHOUSE", "TEDDY", "DOMINOES", "CRAYON",
        "FELTCRAFT", "BINGO", "SNAKES & LADDERS", "SPINNING TOP", "MODELLING CLAY", "PAINT SET", "CHALK STICK",
        "COLOURING", "SEWING KIT", "JIGSAW", "BALLOON",
    ),
    "garden": ("GARDEN", "PLANT", "FLOWER POT", "BIRD", "WATERING", "SEED", "PLANTER", "PICNIC", "PEG"),
    "home_decor": (
        "FRAME", "SIGN", "CLOCK", "HEART", "CUSHION", "DECORATION", "MIRROR", "DOORMAT", "DOOR MAT", "HOOK",
        "VASE", "BOX", "HANGING", "WREATH", "BUNTING", "BUILDING BLOCK WORD", "CABINET", "DRAWER KNOB",
        "COAT RACK", "MEMOBOARD", "CHALKBOARD", "BLACK BOARD", "GARLAND", "STAR", "ORNAMENT", "TRINKET",
        "STORAGE", "BASKET", "THROW", "QUILT",
    ),
}
if (*CATEGORY_KEYWORDS, "other") != CATEGORIES:  # the feature repository owns the names and their order
    raise ImportError(f"keyword rules for {list(CATEGORY_KEYWORDS)} do not match feature_repo.names.CATEGORIES")

# Whole words only, plurals allowed: "BUNTING" must not match "TIN", "CARDS" must match "CARD".
_PATTERNS = [
    (name, re.compile(r"\b(?:" + "|".join(re.escape(k) for k in kws) + r")(?:S|ES)?\b"))
    for name, kws in CATEGORY_KEYWORDS.items()
]


def categorize(description: str | None) -> str:
    """The category of one description (``other`` when no keyword matches or it is missing)."""
    if not description:
        return "other"
    text = description.upper()
    for name, pattern in _PATTERNS:
        if pattern.search(text):
            return name
    return "other"


def categorize_series(descriptions: pd.Series) -> pd.Series:
    """Vectorised :func:`categorize`: each distinct description is classified once."""
    codes, uniques = pd.factorize(descriptions.fillna(""), sort=False)
    labels = np.array([categorize(str(u)) for u in uniques], dtype=object)
    return pd.Series(labels[codes] if len(codes) else [], index=descriptions.index, dtype="string")
