"""The Kubernetes topology for the tests of this folder: started once, from the chart's rendered manifests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.client import Control

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def topology() -> Iterator[Control]:
    # in the checkout, not pytest's tmp: PostgreSQL runs as its own user, which cannot enter pytest-of-root/
    root = REPO / ".zm" / "stack-test"
    up = subprocess.run([sys.executable, "-m", "stack", "up", "--root", str(root)], cwd=REPO, capture_output=True,
                        text=True, check=False)
    control = Control(root)
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        yield control
    finally:
        subprocess.run([sys.executable, "-m", "stack", "down", "--root", str(root)], cwd=REPO, check=False,
                       capture_output=True)
