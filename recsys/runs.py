"""Where a job reports what it did: a :class:`Run`.

Below every package of recsys: jobs report to runs, tracking implements them.

Every job takes a run and tells it its parameters, per-epoch figures, final metrics and
artifacts. :class:`NullRun` (the default) keeps nothing; MLflow's run
(:class:`recsys.tracking.TrackedRun`) is one implementation, given by the command line or by
a caller with a :class:`recsys.tracking.Tracker`. So there is one ``train``, not a plain
one and a tracked copy.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Run(Protocol):
    """What a job may tell the run it reports to (see :class:`NullRun` for the semantics)."""

    run_id: str | None
    recording: bool  # True for a run that keeps what it is told (known at once; run_id may wait for the store)
    keeps_models: bool

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_text(self, text: str, name: str) -> None: ...

    def log_table(self, frame: Any, name: str) -> None: ...

    def log_directory(self, path: str | os.PathLike, name: str) -> None: ...

    def log_model(self, model_dir: str | os.PathLike) -> None: ...

    def child(self, name: str, *, kind: str, tags: Mapping[str, str] | None = None,
              keeps_models: bool | None = None) -> contextlib.AbstractContextManager[Run]: ...


class NullRun:
    """A run that keeps nothing: the default of every job.

    ``run_id`` is None; ``keeps_models`` is False (a job saves no model just to record it);
    ``child`` gives another null run. (A recording run's ``child`` is nested in it, ended
    FAILED if its block raises; ``keeps_models`` overrides the parent's for the child.)
    """

    run_id: str | None = None
    recording = False
    keeps_models = False

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_text(self, text: str, name: str) -> None:
        pass

    def log_table(self, frame: Any, name: str) -> None:
        pass

    def log_directory(self, path: str | os.PathLike, name: str) -> None:
        pass

    def log_model(self, model_dir: str | os.PathLike) -> None:
        pass

    @contextlib.contextmanager
    def child(self, name: str, *, kind: str, tags: Mapping[str, str] | None = None,
              keeps_models: bool | None = None) -> Iterator[Run]:
        yield self


NULL_RUN = NullRun()


class EpochLogger:
    """An epoch callback reporting each epoch's figures (loss, validation metric) to a run."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> None:
        finite = {k: v for k, v in figures.items() if isinstance(v, int | float) and not math.isnan(v)}
        self.run.log_metrics(finite, step=epoch)
