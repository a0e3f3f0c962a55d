"""Progress bars for long work (rich), silenced by ``enabled=False`` (the CLI's ``--quiet``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


class Progress:
    """A single task's bar; ``advance`` moves it and shows the latest figures."""

    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, steps: float = 1, **figures: float | str) -> None:
        if self._bar is None:
            return
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        self._bar.update(self._task, advance=steps, info=info)


@contextlib.contextmanager
def status(description: str, enabled: bool = True) -> Iterator[None]:
    """A line with a spinner on stderr while work without steps runs (saving, indexing,
    recording a run, t-SNE), so no stage is silent; nothing when disabled."""
    if not enabled:
        yield
        return
    from rich.console import Console

    console = Console(file=sys.stderr)
    if not console.is_terminal:  # a log file: the line itself, once
        print(f"{description} ...", file=sys.stderr, flush=True)
        yield
        return
    with console.status(description):
        yield


@contextlib.contextmanager
def progress_bar(total: float | None, description: str, enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr, or a silent stand-in when disabled."""
    if not enabled:
        yield Progress(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=sys.stderr),
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, info="")
        yield Progress(bar, task)
