"""What a test needs from the machine: a Debian binary, a schema file, a built environment.

Where it is missing a developer's run skips the test with the reason (and how to get it); under CI
(``CI`` or ``ZM_STRICT`` set: `.ci/run` sets it) the run fails instead, so a missing install step can never leave
the suite green by skipping. Data that is not ours to ship (the UCI file) still skips: see tests/conftest.py.
Plain functions, no fixtures: the chart tests run with ``--noconftest``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["binary", "missing", "path", "strict"]


def strict() -> bool:
    return any(os.environ.get(v, "").lower() not in ("", "0", "false", "no") for v in ("CI", "ZM_STRICT"))


def _fail_under_ci(what: str) -> None:
    if strict():
        pytest.fail(f"{what} (CI runs every test: a missing part fails)", pytrace=False)


def missing(what: str) -> None:
    """Inside a test or fixture: skip, or fail under CI."""
    _fail_under_ci(what)
    pytest.skip(what)


def _mark(ok: bool, what: str) -> pytest.MarkDecorator:
    if not ok:  # at collection, under CI: the module errors out, naming what is missing
        _fail_under_ci(what)
    return pytest.mark.skipif(not ok, reason=what)


def binary(name: str, hint: str = "make test installs it") -> pytest.MarkDecorator:
    """A mark: the program ``name`` must be on PATH."""
    return _mark(shutil.which(name) is not None, f"{name} missing: {hint}")


def path(file: Path, what: str) -> pytest.MarkDecorator:
    """A mark: ``file`` (a schema, a built environment) must exist."""
    return _mark(file.exists(), f"{what} not found at {file}")
