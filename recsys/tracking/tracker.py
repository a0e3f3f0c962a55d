"""Where runs are recorded: an MLflow tracking store, opened and checked once, at the edge.

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's own local
default ``sqlite:///mlflow.db`` in the working directory. :meth:`Tracker.run` opens it
before any work starts (an unreachable server fails in seconds, naming the URI), starts
a run and ends it ``FINISHED``, or ``FAILED`` (``KILLED`` on Ctrl-C) when the block
raises. A disabled tracker (``--no-track``, ``RECSYS_NO_TRACK=1``) hands out a
:class:`recsys.runs.NullRun` whose methods do nothing, so callers never branch on tracking.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import recsys
from recsys.errors import TrackingError
from recsys.runs import NULL_RUN, Run
from recsys.tracking.store import check_store, metric_key, resolve_uri, tracking_enabled

DEFAULT_EXPERIMENT = "recsys"
_MAX_PARAM = 6000  # MLflow's limit on a parameter value


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit checked out where recsys's source lives, or None outside a git work tree."""
    where = Path(path) if path is not None else Path(recsys.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(kind: str) -> dict[str, str]:
    """Tags every run carries: what made it, the package version, the git commit if any."""
    tags = {"recsys.kind": kind, "recsys.version": recsys.__version__}
    commit = git_commit()
    if commit:
        tags["recsys.git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


class Tracker:
    """An MLflow tracking store and experiment; :meth:`run` records one job.

    >>> tracker = Tracker("sqlite:///runs.db", experiment="ml-100k")
    >>> with tracker.run("train-als", kind="train") as run:
    ...     run.log_params({"factors": 64})
    """

    def __init__(self, uri: str | None = None, experiment: str | None = None, *,
                 enabled: bool = True, log_models: bool = True, timeout: float = 3.0) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = experiment or DEFAULT_EXPERIMENT
        self.enabled = enabled
        self.log_models = log_models
        self.timeout = timeout
        self.experiment_id: str | None = None

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

    def open(self) -> None:
        """Check the store is reachable, point MLflow at it and select the experiment."""
        if self.experiment_id is not None:
            self._point()
            return
        check_store(self.uri, self.timeout)
        import mlflow
        from mlflow.exceptions import MlflowException

        self._point()
        # Creating a new SQLite store or experiment logs INFO lines; they are not news.
        logger = logging.getLogger("mlflow")
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            self.experiment_id = mlflow.set_experiment(self.experiment).experiment_id
        except MlflowException as exc:
            raise TrackingError(f"tracking store {self.uri}: cannot use experiment {self.experiment!r}: {exc.message}") from None
        except Exception as exc:  # e.g. SQLAlchemy's, for a store whose creation was interrupted
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(
                f"tracking store {self.uri} cannot be opened ({first[:200]}); a run interrupted while "
                "creating a new store leaves it half made: remove it, or pass --no-track"
            ) from None
        finally:
            logger.setLevel(level)

    def _point(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.uri)

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        check_store(self.uri, self.timeout)
        return MlflowClient(tracking_uri=self.uri)

    @contextlib.contextmanager
    def run(self, name: str, *, kind: str, tags: Mapping[str, str] | None = None,
            nested: bool = False) -> Iterator[Run]:
        """Record one job as a run (a child of the active run with ``nested``).

        The run ends ``FINISHED`` when the block completes, ``FAILED`` with the error as
        the ``recsys.error`` tag when it raises, ``KILLED`` on Ctrl-C or a signal.
        """
        if not self.enabled:
            yield NULL_RUN
            return
        import mlflow

        self.open()
        active = mlflow.start_run(run_name=name, experiment_id=self.experiment_id, nested=nested,
                                  tags={**run_tags(kind), **(tags or {})})
        run = TrackedRun(active.info.run_id, self)
        try:
            yield run
        except BaseException as exc:
            # Ctrl-C, or a signal that stopped training after a checkpoint (TrainingInterrupted).
            stopped = isinstance(exc, KeyboardInterrupt) or getattr(exc, "signum", None) is not None
            status = "KILLED" if stopped else "FAILED"
            with contextlib.suppress(Exception):
                mlflow.set_tag("recsys.error", f"{type(exc).__name__}: {exc}"[:_MAX_PARAM])
            end_active_run(status)
            raise
        end_active_run("FINISHED")


def end_active_run(status: str) -> None:
    import mlflow

    # For HTTP stores MLflow prints the run's URL on stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        mlflow.end_run(status)


class TrackedRun:
    """The active MLflow run of one job (a :class:`recsys.runs.Run`): parameters, metrics,
    artifacts, child runs. ``keeps_models`` is the tracker's ``log_models``."""

    def __init__(self, run_id: str, tracker: Tracker) -> None:
        self.run_id = run_id
        self.tracker = tracker
        self.keeps_models = tracker.log_models

    @contextlib.contextmanager
    def child(self, name: str, *, kind: str, tags: Mapping[str, str] | None = None,
              keeps_models: bool | None = None) -> Iterator[Run]:
        """A run nested in this one (a grid's combination, a tuning trial), ended FAILED if
        its block raises; ``keeps_models`` overrides this run's for it."""
        with self.tracker.run(name, kind=kind, tags=tags, nested=True) as child:
            if keeps_models is not None:
                child.keeps_models = keeps_models
            yield child

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        import mlflow

        values = {f"{prefix}{k}": str(_plain(v))[:_MAX_PARAM] for k, v in params.items()}
        if values:
            mlflow.log_params(values, run_id=self.run_id)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
        import mlflow

        values = {}
        for name, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                values[metric_key(f"{prefix}{name}")] = float(value)
        if values:
            mlflow.log_metrics(values, step=step, run_id=self.run_id)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        # By id, not MLflow's active run: a parent tagged while a child run is open stays itself.
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        if tags:
            MlflowClient(self.tracker.uri).log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, name: str) -> None:
        import mlflow

        mlflow.log_text(text, name, run_id=self.run_id)

    def log_table(self, frame: Any, name: str) -> None:
        """A DataFrame as a CSV artifact."""
        self.log_text(frame.to_csv(index=frame.index.name is not None or not _default_index(frame)), name)

    def log_directory(self, path: str | os.PathLike, name: str) -> None:
        import mlflow

        mlflow.log_artifacts(str(path), name, run_id=self.run_id)

    def log_model(self, model_dir: str | os.PathLike) -> None:
        """The saved model directory as the servable pyfunc model ``runs:/<id>/model``."""
        from recsys.tracking.serving import log_pyfunc

        log_pyfunc(model_dir)



def _default_index(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame.index, pd.RangeIndex)
