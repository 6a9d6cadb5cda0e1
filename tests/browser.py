"""Pages as a person sees them: Debian's headless Chromium renders a URL (its scripts run) and the tests read the
visible text and keep a screenshot (``ZM_TEST_ARTIFACTS``, default ``.zm/test-artifacts``)."""

from __future__ import annotations

import html
import os
import re
import subprocess
from pathlib import Path

__all__ = ["ARTIFACTS", "CHROMIUM", "screenshot", "visible_text"]

CHROMIUM = "chromium"
ARTIFACTS = Path(os.environ.get("ZM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / ".zm" / "test-artifacts"))
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
          "--run-all-compositor-stages-before-draw", "--force-prefers-reduced-motion"]  # charts drawn, not animated


def _chromium(url: str, *extra: str, budget_ms: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *_FLAGS, f"--virtual-time-budget={budget_ms}", *extra, url],
                          capture_output=True, text=True, timeout=120, check=True)


def visible_text(url: str, budget_ms: int = 15_000) -> str:
    """The page's text after its scripts ran (``budget_ms`` of virtual time): the rendered DOM without scripts,
    styles and tags, whitespace collapsed."""
    dom = _chromium(url, "--dump-dom", budget_ms=budget_ms).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def screenshot(url: str, name: str, size: tuple[int, int] = (1400, 1600), budget_ms: int = 15_000) -> Path:
    """A PNG of the page in ``ARTIFACTS``/``name``.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    _chromium(url, f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", budget_ms=budget_ms)
    return out
