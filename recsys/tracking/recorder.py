"""The MLflow calls a tracked job makes, in whichever process makes them.

:class:`MlflowRecorder` opens a store and experiment and records runs through MLflow's own
API; :class:`LocalRecorder` makes its calls in this process, and
:class:`recsys.tracking.worker.RecorderProcess` in a process of its own. Both take the same
calls, with values already made plain (strings, floats, text): a run is named by a token,
its MLflow id is known once the store has created it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import recsys
from recsys.errors import TrackingError

# The calls a run may make after it starts (anything else sent to a recorder is refused).
CALLS = frozenset({"log_params", "log_metrics", "set_tags", "log_text", "log_directory", "log_model"})
# Those a worker may gather into one write when several arrive together.
BATCHED = frozenset({"log_params", "log_metrics", "set_tags"})
MAX_PARAM = 6000  # MLflow's limit on a parameter value


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


class MlflowRecorder:
    """A store and experiment, and the runs recorded in them through MLflow."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self.experiment_id: str | None = None
        # Each run's logged models: its step-0 metrics are the models' too (as MLflow's own
        # log_metrics links them), so that a model's page shows how it evaluated.
        self.model_ids: dict[str, list[str]] = {}

    def open(self) -> None:
        """Point MLflow at the store and select (or create) the experiment."""
        import mlflow
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(self.uri)
        if self.experiment_id is not None:
            return
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

    def start(self, name: str, kind: str, tags: dict[str, str], nested: bool) -> str:
        """Start a run (nested in the active one with ``nested``) and make it the active one."""
        import mlflow

        active = mlflow.start_run(run_name=name, experiment_id=self.experiment_id, nested=nested,
                                  tags={**run_tags(kind), **tags})
        return active.info.run_id

    def end(self, status: str, error: str | None = None) -> None:
        """End the active run with ``status``, the error (if any) as its ``recsys.error`` tag."""
        import mlflow

        if error is not None:
            with contextlib.suppress(Exception):
                mlflow.set_tag("recsys.error", error[:MAX_PARAM])
        # For HTTP stores MLflow prints the run's URL on stdout; keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            mlflow.end_run(status)

    def log_params(self, run_id: str, values: dict[str, str]) -> None:
        self.log_batch(run_id, Batch(params=dict(values)))

    def log_metrics(self, run_id: str, values: dict[str, float], step: int | None,
                    timestamp: int | None = None) -> None:
        batch = Batch()
        batch.add("log_metrics", values, step, timestamp)
        self.log_batch(run_id, batch)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.log_batch(run_id, Batch(tags=dict(tags)))

    def log_batch(self, run_id: str, batch: Batch) -> None:
        """Parameters, metrics and tags in one write, by the run's id (not MLflow's active
        run: a parent tagged while a child run is open stays itself)."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        models = self.model_ids.get(run_id) or [None]
        metrics = []
        for key, value, step, timestamp in batch.metrics:
            # A step-0 figure is each logged model's too (one row per model); an epoch's is the run's.
            metrics += [Metric(key, value, timestamp, step or 0, model_id=model) for model in (models if not step else [None])]
        MlflowClient(self.uri).log_batch(
            run_id,
            metrics=metrics,
            params=[Param(key, value) for key, value in batch.params.items()],
            tags=[RunTag(key, value) for key, value in batch.tags.items()],
        )

    def log_text(self, run_id: str, text: str, name: str) -> None:
        import mlflow

        mlflow.log_text(text, name, run_id=run_id)

    def log_directory(self, run_id: str, path: str, name: str) -> None:
        import mlflow

        mlflow.log_artifacts(path, name, run_id=run_id)

    def log_model(self, run_id: str, path: str) -> None:
        """The saved model directory as the servable pyfunc model of the active run."""
        from recsys.tracking.serving import log_pyfunc

        model_id = getattr(log_pyfunc(path), "model_id", None)
        if model_id:
            self.model_ids.setdefault(run_id, []).append(model_id)


@dataclass
class Batch:
    """Parameters, metrics (key, value, step, timestamp in ms) and tags for one write."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int | None, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def add(self, method: str, values: dict[str, Any], *rest: Any) -> bool:
        """Take one ``log_params``/``log_metrics``/``set_tags`` call; False (nothing taken)
        for parameters already in the batch, which MLflow refuses to see twice in one write."""
        if method == "log_params":
            if not self.params.keys().isdisjoint(values):
                return False
            self.params.update(values)
        elif method == "log_metrics":
            step = rest[0] if rest else None
            timestamp = rest[1] if len(rest) > 1 and rest[1] is not None else int(time.time() * 1000)
            self.metrics.extend((key, value, step, timestamp) for key, value in values.items())
        else:
            self.tags.update(values)  # as one call after another would: the later value stays
        return True


class LocalRecorder:
    """Runs recorded by MLflow in this process, each named by a token."""

    def __init__(self, recorder: MlflowRecorder) -> None:
        self.recorder = recorder
        self.run_ids: list[str] = []

    def start(self, name: str, kind: str, tags: dict[str, str], nested: bool) -> int:
        self.run_ids.append(self.recorder.start(name, kind, tags, nested))
        return len(self.run_ids) - 1

    def run_id(self, token: int) -> str:
        return self.run_ids[token]

    def call(self, token: int, method: str, *args: Any, files: bool = False) -> None:
        if method not in CALLS:
            raise ValueError(f"not a run's call: {method!r}")
        getattr(self.recorder, method)(self.run_ids[token], *args)

    def end(self, token: int, status: str, error: str | None = None) -> None:
        self.recorder.end(status, error)

    def close(self) -> None:
        pass
