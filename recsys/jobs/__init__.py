"""The jobs: what ``recsys train``, ``evaluate``, ``recommend``, ``tune``, ``split`` and
``experiment run`` do, as plain functions.

Each takes paths or in-memory data and its settings (:class:`TrainConfig`,
:class:`ReadOptions`, :class:`FeatureTables`), does the whole job, reports to a
:class:`Run` (nothing is kept by default; :class:`recsys.tracking.Tracker` gives MLflow
runs) and returns a result object. The command line only parses flags, calls one of these
and prints.

>>> from recsys.jobs import TrainConfig, train
>>> result = train("ratings.csv", TrainConfig(model="als"))
>>> result.evaluation.metrics["recall@20"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.lazy import lazy_exports
from recsys.runs import NULL_RUN, NullRun, Run

if TYPE_CHECKING:
    from recsys.jobs.batch import recommend
    from recsys.jobs.evaluate import evaluate_model
    from recsys.jobs.grid import Grid, GridResult, read_grid, run_grid
    from recsys.jobs.resume import Resumed, resumed
    from recsys.jobs.settings import (
        DataSource,
        FeatureTables,
        ReadOptions,
        TrainConfig,
        load,
        split_data,
        validation_split,
    )
    from recsys.jobs.split import split_file, write_table
    from recsys.jobs.training import TrainResult, default_model_dir, train
    from recsys.jobs.tuning import TuneResult, tune

# Loaded on first use: `recsys split` needs the split job, not the models and torch.
_HOME = {
    "recommend": "batch", "evaluate_model": "evaluate",
    "Grid": "grid", "GridResult": "grid", "read_grid": "grid", "run_grid": "grid",
    "Resumed": "resume", "resumed": "resume",
    "DataSource": "settings", "FeatureTables": "settings", "ReadOptions": "settings", "TrainConfig": "settings",
    "load": "settings", "split_data": "settings", "validation_split": "settings",
    "split_file": "split", "write_table": "split",
    "TrainResult": "training", "default_model_dir": "training", "train": "training",
    "TuneResult": "tuning", "tune": "tuning",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOME)

__all__ = [
    "NULL_RUN",
    "DataSource",
    "FeatureTables",
    "Grid",
    "GridResult",
    "NullRun",
    "ReadOptions",
    "Resumed",
    "Run",
    "TrainConfig",
    "TrainResult",
    "TuneResult",
    "default_model_dir",
    "evaluate_model",
    "load",
    "read_grid",
    "recommend",
    "resumed",
    "run_grid",
    "split_data",
    "split_file",
    "train",
    "tune",
    "validation_split",
    "write_table",
]
