"""The docs name only what exists: every relative link of README.md and docs/ resolves to a file, and every
repository path they quote in backticks (``zmlops/cli.py``, ``charts/zero-margin/values.yaml``) is there.

Paths the code writes at run time (``reports/...``, ``.zm/...``) are not repository paths and are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SOURCE_DIRS = ("zmlops", "training", "inference_services", "monitoring", "governance", "dashboards", "dags",
               "feature_repo", "charts", "stack", "tests", "docker", "docs", ".ci")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
QUOTED = re.compile(r"`([^`\s]+)`")


def _links(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # not inside code blocks
    return [m for m in LINK.findall(text) if not re.match(r"^(https?:|mailto:|#)", m)]


def _quoted_paths(doc: Path) -> list[str]:
    out = []
    for token in QUOTED.findall(doc.read_text()):
        token = token.rstrip(".,:;").split("::")[0]
        if token.split("/")[0] in SOURCE_DIRS and "/" in token and not re.search(r"[<>*{}$|]", token):
            out.append(token.split(":")[0] if re.search(r":\d+$", token) else token)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_link_and_quoted_path_exists(doc: Path) -> None:
    broken = [link for link in _links(doc) if not (doc.parent / link.split("#")[0]).exists()]
    missing = [path for path in _quoted_paths(doc) if not (ROOT / path).exists()]
    assert not broken and not missing, f"{doc.relative_to(ROOT)}: broken links {broken}, missing paths {missing}"


def test_the_check_finds_what_it_is_meant_to_find(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("See [the CLI](zmlops/cli.py), `training/no_such_module.py` and `zmlops/cli.py`.\n"
                   "```\n[not a link](nowhere.md)\n```\n[web](https://example.org) `reports/monitoring/index.html`\n")
    assert _links(doc) == ["zmlops/cli.py"]
    assert _quoted_paths(doc) == ["training/no_such_module.py", "zmlops/cli.py"]
