"""``recsys train`` as a function: read, split, fit, evaluate, save, and report to a run.

Checkpoints (iterative models): ``checkpoint_every=N`` saves one every N epochs in
``checkpoint_dir`` (default: the model directory's name plus ``.checkpoint``), and
SIGINT/SIGTERM save one before stopping with :class:`~recsys.checkpoint.TrainingInterrupted`
(always with ``checkpoint_on_signal``, the CLI's default). ``resume=DIR`` continues from the
checkpoint in DIR with the settings stored there (:func:`recsys.jobs.resume.resumed`;
``data``, ``test``, ``output`` and ``features`` given to :func:`train` replace the stored
ones); on CPU with the same seed it ends with the same factors as an uninterrupted run. The
checkpoint directory is removed once the model is saved.

The run (:class:`recsys.runs.Run`) receives the settings, the data's description
(``data_info`` replaces it: a log read once and trained on many times), per-epoch figures,
the metrics, the model and diagnostics; its id is the result's ``run_id``.

Data-parallel (``mf``, ``two-tower``): ``nproc=N`` trains in N processes on this machine,
this one rank 0; under torchrun every process calls :func:`train` and the group comes from
its environment (:mod:`recsys.distributed`). Every rank reads and splits the data and trains
its shard; rank 0 alone evaluates, saves, checkpoints and reports to the run, and the others
return a result without evaluation (``rank`` > 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys import distributed
from recsys.artifacts import check_output, output_lock, write_json
from recsys.checkpoint import CHECKPOINT_DIRECTORY, Checkpointing
from recsys.data.filters import FilterReport, Filters, apply_filters, describe_values
from recsys.data.interactions import Interactions
from recsys.data.splits import on_training_ids
from recsys.errors import ConfigError
from recsys.evaluation.full_ranking import Evaluation, evaluate
from recsys.evaluation.validation import Validation
from recsys.jobs.record import record_outcome, record_settings
from recsys.jobs.resume import resumed, stored_settings
from recsys.jobs.settings import (
    DataSource,
    FeatureTables,
    ReadOptions,
    TrainConfig,
    load,
    load_training_data,
    source_name,
    split_for_training,
    validation_split,
)
from recsys.models import MODELS, create_model
from recsys.models.als import resolved_weighting
from recsys.models.base import Recommender
from recsys.models.persistence import MODEL_DIRECTORY
from recsys.models.training import Callback
from recsys.progress import status
from recsys.runs import NULL_RUN, EpochLogger, Run
from recsys.spark.session import SparkSettings


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    model: Recommender
    config: TrainConfig
    train: Interactions
    test: Interactions | None
    evaluation: Evaluation | None
    model_dir: Path | None
    seconds: dict[str, float]
    validation: Interactions | None = None
    features: Any = None  # FeatureReport when feature tables were given
    run_id: str | None = None  # the run that recorded it, when one did
    filtered: FilterReport | None = None  # what the filters dropped, when any were given
    merged: int | None = None  # rows of the training file that repeated a pair and were combined
    read_shape: tuple[int, int] | None = None  # users and items of the data as read (filtered), before any split
    processes: dict[str, Any] | None = None  # data-parallel: processes, backend, per machine (None: one process)
    rank: int = 0  # data-parallel: this process's rank; only rank 0's result is evaluated and saved
    engine: dict[str, Any] | None = None  # where it trained when not here (Spark: master, settings, version)


NO_DATA = "no training data: give --data FILE (or --resume a checkpoint directory)"


_WEIGHTS = {"binary": "each entry one positive", "linear": "weighted by its value",
            "log": "weighted by log(1 + value)"}


def describe_data(result: TrainResult) -> str:
    """How the training data was read and what the model made of its values, in one line:
    ``ratings 0.5-5, each entry one positive (weighting auto: binary)``."""
    values = describe_values(result.train)
    params = result.model.get_params()
    if params.get("loss") == "mse":
        use = "fitted as explicit ratings (loss mse)"
    elif result.model.predicts_ratings:
        use = "fitted as explicit ratings"
    elif "weighting" in params:
        chosen = resolved_weighting(params["weighting"], result.train.feedback)
        shown = f"auto: {chosen}" if params["weighting"] == "auto" else chosen
        use = f"{_WEIGHTS.get(chosen, chosen)} (weighting {shown})"
    else:
        use = "each entry one positive"
    merged = ""
    if result.merged:
        rule = "the latest rating kept" if result.train.feedback == "rating" else "their values added up"
        merged = f"; {result.merged:,} repeated (user, item) rows merged, {rule}"
    return f"{values}, {use}{merged}"


def default_model_dir(model: str) -> Path:
    """``models/<model>-<UTC time>`` under the working directory."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("models") / f"{model}-{stamp}"


def train(
    data: DataSource | None,
    config: TrainConfig | None = None,
    *,
    test: DataSource | None = None,
    read_options: ReadOptions | None = None,
    features: FeatureTables | None = None,
    output: str | os.PathLike | None = None,
    save: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    index_trees: int | None = None,
    checkpoint_every: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    checkpoint_on_signal: bool = False,
    run: Run = NULL_RUN,
    data_info: Mapping[str, Any] | None = None,
    nproc: int | None = None,
    spark: SparkSettings | None = None,
) -> TrainResult:
    """Load, split, fit, evaluate and save a model, reporting to ``run``.

    ``test`` evaluates on a given file (mapped onto the training ids; unknown ids dropped
    and counted) instead of splitting. With ``save``, the model directory (``output`` or
    :func:`default_model_dir`) is written atomically, with the Annoy index when
    ``index_trees`` is given.

    ``features`` (:class:`FeatureTables`) attach side information for models that use it
    (``two-tower``); ids with features but no interactions join the catalogue as cold
    ones. With ``split="cold-items"`` the evaluation is on the held-out cold items.
    Checkpoints, ``resume``, what ``run`` receives and ``nproc``: see the module's docstring.

    ``spark`` (:class:`recsys.spark.SparkSettings`) reads, splits and fits on Spark
    (:mod:`recsys.spark.training`: ``als`` only, no checkpoints or feature tables); ``data``
    and ``test`` are then any path Spark reads. The evaluation, the model directory and the
    run are those of a local fit.
    """
    features = features or FeatureTables()
    if spark is not None:
        config = config or TrainConfig(model="als")  # the one model Spark trains (the CLI's default there)
        _check_spark_run(config, features, checkpoint_every, checkpoint_dir, resume, nproc)
        checkpoint_on_signal = False
    if resume is not None:
        job = resumed(resume, data=data, test=test, output=output, checkpoint_every=checkpoint_every,
                      features=features, config=config, read_options=read_options)
        data, config, test, read_options = job.data, job.config, job.test, job.read_options
        output, checkpoint_every, features, checkpoint_dir = job.output, job.checkpoint_every, job.features, resume
    if data is None:
        raise ConfigError(NO_DATA)
    config = config or TrainConfig()
    config.check()
    if index_trees is not None and (isinstance(index_trees, bool) or index_trees < 1):
        raise ConfigError(f"trees must be at least 1, got {index_trees} (--no-index builds none)")
    check_data_parallel(config.model, distributed.processes(nproc))
    launch = distributed.launched()
    device = str(config.model_params().get("device", "auto"))
    directory = Path(output) if output is not None else default_model_dir(config.model)
    if launch is not None and launch.rank > 0:
        # Another rank of a torchrun job: its shard of the training, nothing written or reported.
        checkpointing = _checkpointing(config.model, directory, checkpoint_every, checkpoint_dir, resume is not None,
                                       checkpoint_on_signal, {}, check=False)
        with distributed.group(None, device) as world:
            result = train_shard(data, config, test, read_options, features, checkpointing)
        result.processes, result.rank = distributed.describe(world), launch.rank
        return result
    if save:
        check_output(directory, MODEL_DIRECTORY, inputs=[data, test, features.users, features.items])
    # The lock is held for the whole run: a second run aimed at the same directory is
    # refused at once with a clear message, not after hours of training.
    with output_lock(directory) if save else contextlib.nullcontext():
        checkpointing = _checkpointing(
            config.model, directory, checkpoint_every, checkpoint_dir, resume is not None, checkpoint_on_signal,
            stored_settings(data, test, config, read_options, directory, checkpoint_every, features),
        )
        record_settings(run, config, data, test, features, data_info)
        if spark is not None:
            run.log_params(spark.describe())
        # Started by --nproc, the other ranks run train_shard with the same settings (their
        # checkpointing without signals: Ctrl-C is this process's to handle).
        shard_checkpointing = None if checkpointing is None else dataclasses.replace(checkpointing, handle_signals=False)
        with distributed.group(nproc, device, train_shard,
                               (data, config, test, read_options, features, shard_checkpointing)) as world:
            if world is not None:
                run.log_params({f"distributed.{k}": v for k, v in (distributed.describe(world) or {}).items()})
            result = fit_and_evaluate(data, config, test=test, read_options=read_options, features=features,
                                      callbacks=[*callbacks, EpochLogger(run)], progress=progress,
                                      checkpointing=checkpointing, spark=spark)
            result.processes = distributed.describe(world)
        if save or run.keeps_models:
            with status("saving the model" + (" and building its Annoy index" if index_trees else "")
                        + (" (and logging it to MLflow)" if run.keeps_models else ""), progress):
                _save(result, directory if save else None, data, index_trees, run)
        with status("recording the run's metrics and diagnostics", progress and run.recording):
            record_outcome(run, result, features)
        result.run_id = run.run_id  # asked last: it waits until the store has created the run
        if checkpointing is not None and checkpointing.directory.exists():
            with output_lock(checkpointing.directory):  # its job is done: the model is saved
                shutil.rmtree(checkpointing.directory, ignore_errors=True)
    return result


def check_data_parallel(model: str, processes: int) -> None:
    """Refuse more than one process for a model that cannot train data-parallel, saying what to use."""
    if processes <= 1 or MODELS[model].data_parallel:
        return
    able = " and ".join(n for n, c in MODELS.items() if c.data_parallel)
    raise ConfigError(
        f"model {model!r} does not train data-parallel: --nproc and torchrun apply to {able}. "
        "To train ALS past one machine, use Spark (recsys train --model als --engine spark); "
        f"otherwise drop --nproc and train {model!r} in one process"
    )


def train_shard(data: DataSource, config: TrainConfig, test: DataSource | None, read_options: ReadOptions | None,
                features: FeatureTables | None, checkpointing: Checkpointing | None) -> TrainResult:
    """A rank other than 0 of a data-parallel run (inside its group): read and split as rank
    0 does and train this rank's shard; rank 0 evaluates, saves and reports."""
    return fit_and_evaluate(data, config, test=test, read_options=read_options, features=features,
                            checkpointing=checkpointing)


def fit_and_evaluate(
    data: DataSource,
    config: TrainConfig,
    *,
    test: DataSource | None = None,
    read_options: ReadOptions | None = None,
    features: FeatureTables | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    checkpointing: Checkpointing | None = None,
    spark: SparkSettings | None = None,
) -> TrainResult:
    """The heart of :func:`train` without saving or reporting: data in, a fitted and
    evaluated model out (fitted on Spark with ``spark``)."""
    if spark is not None:
        return _fit_on_spark(data, config, spark, test=test, read_options=read_options, progress=progress)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with status(f"reading {source_name(data)}", progress):
        read = load_training_data(data, config, read_options, features)
    full = read.interactions
    train_data, test_data, dropped, given = _parts(full, config, test, read_options)
    timings["load_split"] = time.perf_counter() - start

    validation = None
    if config.validation_fraction:
        # Carved for every model, so that each fits on the same entries whatever it does with them.
        train_data, validation = validation_split(train_data, config.validation_fraction, config.seed)
    model = create_model(config.model, **config.model_params())
    options: dict[str, Any] = {}
    if model.trains_by_epoch:
        options = {"callbacks": callbacks, "progress": progress, "checkpointing": checkpointing}
        if validation is not None:
            options["validation"] = Validation(validation, config.validation_metric, config.patience)
    start = time.perf_counter()
    model.fit(train_data, **options)
    timings["fit"] = time.perf_counter() - start

    evaluation = _evaluation(model, config, test_data, test, dropped, progress, timings, ratings=given)
    return TrainResult(model, config, train_data, test_data, evaluation, None, timings, validation, read.features,
                       filtered=read.filtered if config.filters().active else None,
                       merged=None if read.read is None else read.read.merged, read_shape=full.shape)


def _evaluation(model: Recommender, config: TrainConfig, test_data: Interactions | None, test: DataSource | None,
                dropped: int, progress: bool, timings: dict[str, float],
                ratings: Interactions | None = None) -> Evaluation | None:
    """recsys's full-ranking evaluation of ``model`` on ``test_data`` (None without test
    entries); a rating model's RMSE over ``ratings``, the test file as read, when given."""
    if test_data is None or not test_data.nnz or not distributed.is_main():  # data-parallel: rank 0's alone
        return None
    if config.split == "cold-items" and test is None:
        from recsys.evaluation.cold import evaluate_cold_items

        evaluation = evaluate_cold_items(model, test_data, ks=config.ks, progress=progress)
    else:
        evaluation = evaluate(model, test_data, ks=config.ks, progress=progress,
                              sample_users=config.eval_users, seed=config.seed, ratings=ratings)
    evaluation.dropped_entries += dropped
    timings["evaluate"] = evaluation.seconds
    return evaluation


def _check_spark_run(config: TrainConfig, features: FeatureTables, checkpoint_every: int,
                     checkpoint_dir: str | os.PathLike | None, resume: str | os.PathLike | None,
                     nproc: int | None) -> None:
    """Refuse, before any work, what a Spark run cannot do (the one check of a Spark job:
    :func:`recsys.spark.training.fit_on_spark` relies on it)."""
    from recsys.spark.training import check_spark_config

    if nproc is not None or distributed.launched() is not None:
        raise ConfigError("--engine spark trains als on Spark's executors; --nproc and torchrun train mf and "
                          "two-tower in several processes: use one or the other")
    if resume is not None or checkpoint_every or checkpoint_dir is not None:
        raise ConfigError("--engine spark keeps no recsys checkpoints (Spark runs its ALS sweeps in one go); "
                          "drop --checkpoint-every, --checkpoint-dir and --resume")
    if features.given:
        raise ConfigError("--engine spark trains als, which reads no feature tables; drop the feature files")
    check_spark_config(config)


def _fit_on_spark(data: DataSource, config: TrainConfig, spark: SparkSettings, *, test: DataSource | None,
                  read_options: ReadOptions | None, progress: bool) -> TrainResult:
    from recsys.spark.training import fit_on_spark

    if isinstance(data, Interactions) or isinstance(test, Interactions):
        raise ConfigError("--engine spark reads the data itself: give paths, not interactions in memory")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    fitted = fit_on_spark(os.fspath(data), config, spark, test=None if test is None else os.fspath(test),
                          read_options=read_options or ReadOptions(), progress=progress)
    timings["fit"] = fitted.model.fit_seconds
    timings["load_split"] = time.perf_counter() - start - fitted.model.fit_seconds
    evaluation = _evaluation(fitted.model, config, fitted.test, test, fitted.dropped, progress, timings)
    return TrainResult(fitted.model, config, fitted.train, fitted.test, evaluation, None, timings,
                       filtered=fitted.filtered if config.filters().active else None, merged=fitted.merged,
                       read_shape=fitted.read_shape, engine={**spark.describe(), "spark_version": fitted.spark_version})


def _parts(full: Interactions, config: TrainConfig, test: DataSource | None,
           read_options: ReadOptions | None) -> tuple[Interactions, Interactions | None, int, Interactions | None]:
    """The training and test parts, the test entries dropped (one rule for both: see
    :func:`split_for_training`) and the test file as read: a given test file mapped onto the
    training ids, the split ``config`` asks for, or all of it for training (``split="none"``).

    The file as read is kept for a rating model's RMSE, which covers every test rating (an
    unknown user or item is rated from the biases), as Surprise and the published figures do.
    """
    if test is not None:
        given = load(test, read_options)
        if config.min_rating is not None:  # the same rule as the training entries (counts are not filtered)
            given, _ = apply_filters(given, Filters(min_rating=config.min_rating))
        test_data, dropped = on_training_ids(given, full, path=None if isinstance(test, Interactions) else test)
        return full, test_data, dropped, given if given.feedback == "rating" else None
    if config.split == "none":
        return full, None, 0, None
    return (*split_for_training(full, config), None)


def _checkpointing(model: str, directory: Path, every: int, checkpoint_dir: str | os.PathLike | None,
                   resume: bool, on_signal: bool, settings: dict[str, Any], check: bool = True) -> Checkpointing | None:
    """The epoch loop's checkpoint settings, or None when the run keeps no checkpoints
    (``check``: the folder is checked first; data-parallel, by rank 0 alone)."""
    can = MODELS[model].supports_checkpoints()
    if not (every or checkpoint_dir is not None or (on_signal and can)):
        return None
    if not can:
        able = [n for n, c in MODELS.items() if c.supports_checkpoints()]
        raise ConfigError(f"model {model!r} has no checkpoints; they apply to iterative models ({', '.join(able)})")
    where = Path(checkpoint_dir) if checkpoint_dir is not None else directory.with_name(directory.name + ".checkpoint")
    if not resume and check:
        # Checked now, not at the first checkpoint hours in: the folder is replaced at every
        # save and removed at the end, so it may only be new, empty or an earlier checkpoint.
        check_output(where, CHECKPOINT_DIRECTORY)
    return Checkpointing(where, every=int(every or 0), resume=resume, run=settings)


def _save(result: TrainResult, directory: Path | None, data: DataSource, index_trees: int | None, run: Run) -> None:
    """Save the model (with ``run.json`` and the Annoy index) and hand it to the run; with no
    directory (``save=False``) only for the run, in a temporary one."""
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recsys-model-"))) / "model"
        else:
            result.model_dir = directory

        def extras(tmp: Path) -> None:
            write_json(tmp / "run.json", run_record(result, data))
            if index_trees:
                from recsys.retrieval.annoy_index import INDEX_DIR, AnnoyIndex

                (tmp / INDEX_DIR).mkdir()
                AnnoyIndex.build(result.model, trees=index_trees).write(tmp / INDEX_DIR)

        result.model.save(directory, extras=extras, lock=False)
        if result.model_dir is not None:
            result.seconds["save"] = time.perf_counter() - start
        if run.keeps_models:
            # Once: the servable pyfunc model holds the model directory (runs:/<id>/model).
            run.log_model(directory)


def run_record(result: TrainResult, data: DataSource) -> dict[str, Any]:
    """The resolved configuration and outcome of a run, as saved in ``run.json``."""
    config = dataclasses.asdict(result.config)
    config["params"] = result.model.get_params()
    return {
        "fitted_params": result.model.fitted_params,
        "data_shape": result.model.data_shape,
        "data": source_name(data),
        "config": config,
        "train_entries": result.train.nnz,
        "test_entries": None if result.test is None else result.test.nnz,
        "metrics": None if result.evaluation is None else result.evaluation.metrics,
        "seconds": result.seconds,
        "processes": result.processes,
        **({"engine": result.engine} if result.engine else {}),
    }
