"""``recsys train --engine spark``: the log read, filtered, indexed and split by Spark, the
``als`` model's factors computed by Spark MLlib; what comes back is what a local fit gives
(the training and test parts on the driver, a fitted :class:`~recsys.models.ALS`), so the
job goes on as a local one: recsys's own full-ranking evaluation, the model directory, the
run.

The driver keeps the id maps and the training pairs (the seen items every recsys model
holds, and what ``"auto"`` reads) and the test pairs (the evaluation); it never trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recsys.data.filters import FilterReport, Filters
from recsys.data.interactions import Interactions
from recsys.data.splits import keep_trained, on_training_ids
from recsys.errors import ConfigError
from recsys.models.base import Recommender
from recsys.spark.als import SparkALS
from recsys.spark.data import read_log, split_log, to_interactions
from recsys.spark.session import SparkSettings, spark_session

SPARK_MODELS = ("als",)


@dataclass
class SparkFit:
    """What :func:`fit_on_spark` gives back: as :func:`recsys.jobs.training.fit_and_evaluate`
    has it after a local fit."""

    model: Recommender
    train: Interactions
    test: Interactions | None
    dropped: int
    read_shape: tuple[int, int]
    rows: int
    merged: int
    filtered: FilterReport
    spark_version: str


def check_spark_config(config: Any) -> None:
    """Refuse what a Spark run cannot do, before anything starts (``config``: a
    :class:`recsys.jobs.TrainConfig`)."""
    if config.model not in SPARK_MODELS:
        raise ConfigError(f"--engine spark trains {', '.join(SPARK_MODELS)} (Spark MLlib's ALS), not "
                          f"{config.model!r}; drop --model or use --engine local")
    from recsys.spark.data import SPLITS_ON_SPARK

    if config.split not in SPLITS_ON_SPARK:  # before Spark reads a row, not after
        raise ConfigError(f"the {config.split!r} split is not available with --engine spark (it takes "
                          f"{', '.join(SPLITS_ON_SPARK)}); split with `recsys split` and pass --test")
    if config.validation_fraction or config.patience:
        raise ConfigError("--engine spark runs Spark's ALS sweeps in one go: no per-epoch validation or "
                          "early stopping; drop --validation-fraction and --patience")


def fit_on_spark(data: str, config: Any, settings: SparkSettings, *, test: str | None = None,
                 read_options: Any = None, progress: bool = False) -> SparkFit:
    """Read ``data`` (and ``test``) with Spark, split as ``config`` (a
    :class:`recsys.jobs.TrainConfig`) says or evaluate on ``test``, and fit ``als`` on the
    cluster; ``read_options`` is a :class:`recsys.jobs.ReadOptions`. ``config`` has passed
    :func:`check_spark_config` (:func:`recsys.jobs.train` checks it before any work)."""
    with spark_session(settings, progress=progress) as spark:
        cached: list[Any] = []  # unpersisted at the end: a long-lived session keeps no job's frames
        try:
            log = read_log(spark, data, read_options, config.filters())
            cached.append(log)
            dropped = 0
            if test is not None:
                given = read_log(spark, test, read_options, Filters(min_rating=config.min_rating))
                cached.append(given)
                train_frame = log.entries
                train = to_interactions(log, log.entries)
                test_data, dropped = on_training_ids(to_interactions(given, given.entries), train, path=test)
            else:
                parts = split_log(log, config.split, test_fraction=config.test_fraction, n=config.split_n,
                                  seed=config.seed)
                cached.append(parts)
                train_frame = parts.where("NOT test")
                train = to_interactions(log, train_frame)
                test_data = None
                if config.split != "none":
                    train, test_data, dropped = keep_trained(train, to_interactions(log, parts.where("test")))
            model = SparkALS(**config.model_params())
            model.fit(train, entries=train_frame, users=log.users, items=log.items)
        finally:
            for frame in reversed(cached):
                frame.unpersist()
        return SparkFit(model, train, test_data, dropped, log.shape, log.rows, log.merged, log.filtered,
                        spark.version)
