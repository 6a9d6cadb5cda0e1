"""A missing binary or schema file skips a developer's test run but fails CI's (tests/needs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MODULE = '''
from pathlib import Path
from tests import needs

@needs.binary("zm-no-such-program")
def test_needs_a_program():
    pass

@needs.path(Path("/nonexistent/crds"), "KServe CRDs")
def test_needs_a_schema():
    pass
'''


@pytest.mark.parametrize("strict", [False, True])
def test_a_missing_part_skips_locally_and_fails_under_ci(tmp_path: Path, strict: bool) -> None:
    (tmp_path / "test_missing.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ZM_STRICT", "PYTEST_ADDOPTS")}
    if strict:
        env["ZM_STRICT"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--noconftest",
                           str(tmp_path / "test_missing.py")], capture_output=True, text=True, env=env, cwd=tmp_path)
    if strict:
        assert done.returncode != 0, done.stdout
        assert "zm-no-such-program missing: make test installs it (CI runs every test" in done.stdout, done.stdout
    else:
        assert done.returncode == 0 and "2 skipped" in done.stdout, done.stdout
        assert "zm-no-such-program missing" in done.stdout and "KServe CRDs not found" in done.stdout
