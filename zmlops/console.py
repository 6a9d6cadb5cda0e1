"""Console output shared by the CLI and the demo: timed steps, tables, progress."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["console", "step", "table", "week_progress"]

# Logs and CI are not terminals: give tables room instead of rich's 80-column default.
console = Console(highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Print ``title``, run the block, print how long it took (or that it failed)."""
    console.print(f"[bold cyan]>>[/] {title}")
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        console.print(f"   [red]failed[/] after {time.perf_counter() - started:.1f} s")
        raise
    console.print(f"   [green]done[/] in {time.perf_counter() - started:.1f} s")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    out = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    console.print(out)


@contextlib.contextmanager
def week_progress(label: str) -> Iterator[Callable[[int, int, int], None]]:
    """A progress bar fed by ``(done, total, rows)`` callbacks, as the simulator gives them."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("weeks {task.fields[rows]} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None, rows="0")

        def update(done: int, total: int, rows: int) -> None:
            progress.update(task, completed=done, total=total, rows=f"{rows:,}")

        yield update
