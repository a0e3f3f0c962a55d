"""Where runs are recorded: an MLflow tracking store, opened and checked once, at the edge.

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's own local
default ``sqlite:///mlflow.db`` in the working directory. :meth:`Tracker.run` checks it
before any work starts (an unreachable server fails in seconds, naming the URI), starts
a run and ends it ``FINISHED``, or ``FAILED`` (``KILLED`` on Ctrl-C) when the block
raises. MLflow itself runs in a worker process (:mod:`recsys.tracking.worker`) so that
importing it and opening the store overlap the job's own work. A disabled tracker (``--no-track``, ``RECSYS_NO_TRACK=1``) hands out a
:class:`recsys.runs.NullRun` whose methods do nothing, so callers never branch on tracking.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from recsys.errors import TrackingError
from recsys.runs import NULL_RUN, Run
from recsys.tracking.recorder import MAX_PARAM, LocalRecorder, MlflowRecorder
from recsys.tracking.store import check_store, metric_key, resolve_uri, tracking_enabled

DEFAULT_EXPERIMENT = "recsys"


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


class Tracker:
    """An MLflow tracking store and experiment; :meth:`run` records one job.

    ``background`` (the default) records runs from a process of its own
    (:mod:`recsys.tracking.worker`), which imports MLflow and opens the store while the job
    works; ``background=False`` makes the same calls in this process.

    >>> tracker = Tracker("sqlite:///runs.db", experiment="ml-100k")
    >>> with tracker.run("train-als", kind="train") as run:
    ...     run.log_params({"factors": 64})
    """

    def __init__(self, uri: str | None = None, experiment: str | None = None, *,
                 enabled: bool = True, log_models: bool = True, timeout: float = 3.0,
                 background: bool = True) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = experiment or DEFAULT_EXPERIMENT
        self.enabled = enabled
        self.log_models = log_models
        self.timeout = timeout
        self.background = background
        self._local: MlflowRecorder | None = None
        self._worker: Any = None  # the process started by prepare(), until a run takes it

    @classmethod
    def from_options(cls, track: bool | None = None, uri: str | None = None,
                     experiment: str | None = None, **kwargs: Any) -> Tracker:
        """The tracker the command-line flags ask for (``--no-track`` and the env var disable it)."""
        return cls(uri, experiment, enabled=tracking_enabled(track), **kwargs)

    @classmethod
    def disabled(cls) -> Tracker:
        return cls(enabled=False)

    def __repr__(self) -> str:
        state = "" if self.enabled else ", enabled=False"
        return f"Tracker({self.uri!r}, experiment={self.experiment!r}{state})"

    @property
    def experiment_id(self) -> str | None:
        """The experiment's id once this process has opened the store (:meth:`open`)."""
        return None if self._local is None else self._local.experiment_id

    def open(self) -> None:
        """Check the store is reachable, point MLflow at it in this process and select the
        experiment: a caller that wants a broken store refused before any work."""
        if self._local is None:
            check_store(self.uri, self.timeout)
            self._local = MlflowRecorder(self.uri, self.experiment)
        self._local.open()

    def prepare(self) -> None:
        """Start the process that will record the next :meth:`run` now, so that importing
        MLflow overlaps what the caller does first (a command's own imports, checking its
        input). Nothing is written to the store until the run starts; if none does, the
        process exits with this one."""
        if self.enabled and self._in_worker() and self._worker is None:
            from recsys.tracking.worker import RecorderProcess

            self._worker = RecorderProcess(self.uri, self.experiment, log_models=self.log_models)

    def _in_worker(self) -> bool:
        # An embedded interpreter may have no executable to start a worker with.
        return self.background and bool(sys.executable)

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        check_store(self.uri, self.timeout)
        return MlflowClient(tracking_uri=self.uri)

    @contextlib.contextmanager
    def run(self, name: str, *, kind: str, tags: Mapping[str, str] | None = None,
            nested: bool = False) -> Iterator[Run]:
        """Record one job as a run (a child of this process's active MLflow run with
        ``nested``, recorded in this process).

        The store is checked before the block starts (an unreachable server fails in
        seconds, naming the URI). The run ends ``FINISHED`` when the block completes,
        ``FAILED`` with the error as the ``recsys.error`` tag when it raises, ``KILLED`` on
        Ctrl-C or a signal; it is complete in the store when the block is left.
        """
        if not self.enabled:
            yield NULL_RUN
            return
        if self._in_worker() and not nested:
            check_store(self.uri, self.timeout)
            self.prepare()
            recorder, self._worker = self._worker, None  # one job's runs per process
        else:
            self.open()
            assert self._local is not None
            recorder = LocalRecorder(self._local)
        try:
            with _recorded(recorder, self, name, kind, tags, nested) as run:
                yield run
        except BaseException:
            with contextlib.suppress(TrackingError):
                recorder.close()
            raise
        recorder.close()


@contextlib.contextmanager
def _recorded(recorder: Any, tracker: Tracker, name: str, kind: str, tags: Mapping[str, str] | None,
              nested: bool) -> Iterator[TrackedRun]:
    """A run of ``recorder`` for the block, ended by how the block ends."""
    token = recorder.start(name, kind, {k: str(v) for k, v in (tags or {}).items()}, nested)
    try:
        yield TrackedRun(token, recorder, tracker)
    except BaseException as exc:
        # Ctrl-C, or a signal that stopped training after a checkpoint (TrainingInterrupted).
        stopped = isinstance(exc, KeyboardInterrupt) or getattr(exc, "signum", None) is not None
        recorder.end(token, "KILLED" if stopped else "FAILED", f"{type(exc).__name__}: {exc}"[:MAX_PARAM])
        raise
    recorder.end(token, "FINISHED")


class TrackedRun:
    """The MLflow run of one job (a :class:`recsys.runs.Run`): parameters, metrics,
    artifacts, child runs. ``keeps_models`` is the tracker's ``log_models``. Values are
    made plain here; the recorder (this process, or the tracker's worker) sends them on."""

    recording = True

    def __init__(self, token: int, recorder: Any, tracker: Tracker) -> None:
        self.token = token
        self.recorder = recorder
        self.tracker = tracker
        self.keeps_models = tracker.log_models

    @property
    def run_id(self) -> str:
        """MLflow's id of the run (waits until the store has created it)."""
        return self.recorder.run_id(self.token)

    @contextlib.contextmanager
    def child(self, name: str, *, kind: str, tags: Mapping[str, str] | None = None,
              keeps_models: bool | None = None) -> Iterator[Run]:
        """A run nested in this one (a grid's combination, a tuning trial), ended FAILED if
        its block raises; ``keeps_models`` overrides this run's for it."""
        with _recorded(self.recorder, self.tracker, name, kind, tags, True) as child:
            if keeps_models is not None:
                child.keeps_models = keeps_models
            yield child

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        values = {f"{prefix}{k}": str(_plain(v))[:MAX_PARAM] for k, v in params.items()}
        if values:
            self.recorder.call(self.token, "log_params", values)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
        values = {}
        for name, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                values[metric_key(f"{prefix}{name}")] = float(value)
        if values:
            # Stamped now: the worker may record it a little later.
            self.recorder.call(self.token, "log_metrics", values, step, int(time.time() * 1000))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self.recorder.call(self.token, "set_tags", {k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, name: str) -> None:
        self.recorder.call(self.token, "log_text", text, name)

    def log_table(self, frame: Any, name: str) -> None:
        """A DataFrame as a CSV artifact."""
        self.log_text(frame.to_csv(index=frame.index.name is not None or not _default_index(frame)), name)

    def log_directory(self, path: str | os.PathLike, name: str) -> None:
        # The caller may remove the directory once this returns (the recorder keeps a snapshot).
        self.recorder.call(self.token, "log_directory", str(path), name, files=True)

    def log_model(self, model_dir: str | os.PathLike) -> None:
        """The saved model directory as the servable pyfunc model ``runs:/<id>/model``."""
        self.recorder.call(self.token, "log_model", str(model_dir), files=True)


def _default_index(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame.index, pd.RangeIndex)
