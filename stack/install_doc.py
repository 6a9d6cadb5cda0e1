"""The commands of docs/install.md that can run on one machine, run against the topology.

Every ``kubectl -n mlops exec deploy/NAME -- COMMAND`` of the page (continuation lines joined) becomes
``python -m stack exec NAME -- COMMAND``: the same command in the same workload's environment and working
directory. ``$(kubectl -n mlops get secret S -o jsonpath='{.data.K}' | base64 -d)`` is the Secret's value,
as the shell would substitute it. What needs a cluster (helm, kubectl apply/create) is rendered and
validated by the chart tests instead.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stack.client import Control
from stack.manifests import REPO

__all__ = ["DOC", "Command", "commands", "run"]

DOC = REPO / "docs" / "install.md"
EXEC = re.compile(r"^kubectl -n mlops exec deploy/(?P<pod>[a-z0-9-]+) -- (?P<command>.+)$")
SECRET = re.compile(r"\$\(kubectl -n mlops get secret (?P<name>[a-z0-9-]+) "
                    r"-o jsonpath='\{\.data\.(?P<key>[a-z0-9-]+)\}' \| base64 -d\)")


@dataclass(frozen=True)
class Command:
    section: str  # the page's "## " heading it is under
    pod: str
    text: str  # as written (after joining lines)


def commands(doc: Path = DOC) -> list[Command]:
    """The page's kubectl exec commands, in order, with the section each is in."""
    found, section, block, pending = [], "", False, ""
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            block = not block
            continue
        if not block or line.lstrip().startswith("#"):
            continue
        pending = f"{pending} {line.strip()}" if pending else line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        match = EXEC.match(pending)
        if match:
            found.append(Command(section, match["pod"], match["command"]))
        pending = ""
    return found


def argv(command: Command, control: Control) -> list[str]:
    """The harness command line for one documented command."""
    text = SECRET.sub(lambda m: _plain(control.secret(m["name"], m["key"])), command.text)
    return [sys.executable, "-m", "stack", "exec", "--root", str(control.layout.root), command.pod, "--",
            *shlex.split(text)]


def _plain(value: str) -> str:
    """A secret as the shell substitutes it inside double quotes (ours are URL-safe tokens)."""
    if re.search(r"[\"'$`\\\s]", value):
        raise ValueError("a secret with quotes, $, backslashes or spaces cannot be substituted here")
    return value


def run(control: Control, section: str, say: object = print) -> list[Command]:
    """Run every command of ``section`` (a heading's start, e.g. "4."); raises on the first that fails."""
    done = []
    for command in commands():
        if not command.section.startswith(section):
            continue
        out = subprocess.run(argv(command, control), cwd=REPO, capture_output=True, text=True, check=False)
        if callable(say):
            say(f"   $ kubectl -n mlops exec deploy/{command.pod} -- {command.text[:90]}")
        if out.returncode != 0:
            raise RuntimeError(f"docs/install.md: `{command.text}` in {command.pod} failed ({out.returncode}):\n"
                               f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        done.append(command)
    return done
