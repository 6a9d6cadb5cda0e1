"""The version of the code that runs: what training runs, model versions and audit entries record.

An image holds no git checkout, so both Dockerfiles take it as a build argument (``--build-arg
ZM_CODE_VERSION="$(zm version)"``, docs/install.md) and set it as the environment. From a checkout it is the
commit, with ``-dirty-<hash of the diff>`` while there are uncommitted changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

__all__ = ["UNKNOWN_CODE", "code_version"]

REPO = Path(__file__).resolve().parents[1]
UNKNOWN_CODE = "unknown"


def code_version() -> str:
    """The image's build stamp (``ZM_CODE_VERSION``), else this checkout's commit (``-dirty-<hash of the diff>``
    with uncommitted changes), else :data:`UNKNOWN_CODE` (training then reuses nothing: training/run.py)."""
    stamped = os.environ.get("ZM_CODE_VERSION", "").strip()
    if stamped:
        return stamped
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        # docs (benchmark figures, generated model cards) do not change what a model is
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", ".", ":(exclude)docs"], cwd=REPO, capture_output=True, check=True
        ).stdout
        # a dirty tree is named by its diff, so two different uncommitted edits never share a fingerprint
        return out.stdout.strip() + (f"-dirty-{hashlib.sha256(diff).hexdigest()[:8]}" if diff else "")
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN_CODE
