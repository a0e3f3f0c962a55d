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


# A stage shows its line once it has run this long: quick ones (and errors) stay one line.
STATUS_AFTER_SECONDS = 1.0


@contextlib.contextmanager
def status(description: str, enabled: bool = True) -> Iterator[None]:
    """A line on stderr while work without steps runs (reading, saving, indexing, recording
    a run, t-SNE) for more than :data:`STATUS_AFTER_SECONDS`, so no slow stage is silent: a
    spinner on a terminal, the line itself in a log; nothing when disabled."""
    if not enabled:
        yield
        return
    import threading

    from rich.console import Console

    console = Console(file=sys.stderr)
    if console.is_terminal:
        live = console.status(description)
        timer = threading.Timer(STATUS_AFTER_SECONDS, live.start)
    else:
        live = None
        timer = threading.Timer(STATUS_AFTER_SECONDS, lambda: print(f"{description} ...", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        # A timer already firing runs on: wait for it, or its spinner (or line) would start
        # after the stop below and stay on screen.
        timer.join()
        if live is not None:
            live.stop()


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
