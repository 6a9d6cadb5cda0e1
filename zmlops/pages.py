"""HTML pages from Jinja2 templates kept beside the modules that fill them: autoescaped, and a name the template
uses but the caller did not give is an error, not an empty string."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["render"]


def render(template: Path, filters: dict[str, Callable[..., Any]] | None = None, **values: Any) -> str:
    """``template`` (a file) filled with ``values``; ``filters`` adds Jinja2 filters."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(filters or {})
    return env.from_string(template.read_text()).render(**values)
