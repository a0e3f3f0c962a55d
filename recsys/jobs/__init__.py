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
from recsys.runs import NULL_RUN, NullRun, Run

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
