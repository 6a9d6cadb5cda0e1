"""The cluster's DNS for the topology: Service names -> loopback addresses, as a block of ``/etc/hosts``.

The block sits between two marker lines and is rewritten in place (containers bind-mount
``/etc/hosts``, so it is never replaced by a new file); :func:`remove` takes it out again.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write", "remove", "HOSTS"]

HOSTS = Path("/etc/hosts")
BEGIN, END = "# zm-stack begin (make stack-down removes this block)", "# zm-stack end"


def _without_block(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            lines.append(line)
    return lines


def write(names: dict[str, list[str]], path: Path = HOSTS) -> None:
    """Map every name to its address (one line per address)."""
    lines = _without_block(path.read_text())
    block = [BEGIN, *(f"{ip}\t{' '.join(dict.fromkeys(n))}" for ip, n in sorted(names.items())), END]
    with path.open("r+") as f:
        f.truncate(0)
        f.write("\n".join([*lines, *block]) + "\n")


def remove(path: Path = HOSTS) -> None:
    text = path.read_text()
    if BEGIN not in text:
        return
    with path.open("r+") as f:
        f.truncate(0)
        f.write("\n".join(_without_block(text)) + "\n")
