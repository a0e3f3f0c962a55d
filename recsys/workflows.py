"""The jobs the CLI runs, as plain Python: train, evaluate, split.

Each function takes paths or in-memory data, does the whole job and returns a result
object; the CLI only parses flags, calls one of these and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.artifacts import atomic_directory, atomic_file, output_lock, write_json
from recsys.checkpoint import Checkpointing, read_checkpoint_meta
from recsys.data.interactions import Interactions
from recsys.data.io import DataFormat, read_interactions, write_interactions
from recsys.data.splits import STRATEGIES, split
from recsys.errors import ConfigError, InputError
from recsys.evaluation.evaluate import DEFAULT_KS, Evaluation, evaluate
from recsys.models import MODELS, create_model
from recsys.models.base import Recommender
from recsys.models.training import Callback, IterativeRecommender, Validation

DataSource = str | os.PathLike | Interactions


@dataclass
class ReadOptions:
    """How to read an interaction file (see :func:`recsys.data.read_interactions`)."""

    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    weight_col: str | None = None
    timestamp_col: str | None = None
    sep: str | None = None
    header: bool | None = None
    feedback: str | None = None
    encoding: str = "utf-8"
    skip_bad_rows: bool = False
    data_format: DataFormat = "auto"


def load(source: DataSource, options: ReadOptions | None = None) -> Interactions:
    """An :class:`Interactions` from a path (read with ``options``) or as given.

    With ``skip_bad_rows`` the number of rows skipped is logged (logger ``recsys``, level
    WARNING, which the CLI prints): skipping is a policy the user chose, never silent.
    """
    if isinstance(source, Interactions):
        return source
    options = options or ReadOptions()
    if not options.skip_bad_rows:
        return read_interactions(source, **dataclasses.asdict(options))  # type: ignore[return-value]
    data, report = read_interactions(source, **dataclasses.asdict(options), return_report=True)  # type: ignore[misc]
    logging.getLogger("recsys").warning(
        "%s: skipped %d malformed row%s (--skip-bad-rows)",
        source, report.skipped, "" if report.skipped == 1 else "s",
    )
    return data


@dataclass
class TrainConfig:
    """Everything that decides a training run besides the data.

    ``split`` is one of ``user`` (per-user holdout, the default), ``random``,
    ``temporal``, ``last-n``, ``leave-one-out`` or ``none`` (train on everything, no
    evaluation). ``validation_fraction`` carves a per-user validation split out of the
    training part for per-epoch ``validation_metric`` and early stopping (``patience``);
    the test part is never seen during training.
    """

    model: str = "als"
    params: dict[str, Any] = field(default_factory=dict)
    split: str = "user"
    test_fraction: float = 0.2
    split_n: int = 1
    seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    validation_fraction: float | None = None
    validation_metric: str = "recall@20"
    patience: int | None = None

    def check(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.split not in (*STRATEGIES, "none"):
            raise ConfigError(f"unknown split {self.split!r}; choose one of {', '.join(STRATEGIES)}, none")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"k must be positive integers, got {self.ks}")

    def model_params(self) -> dict[str, Any]:
        """Hyper-parameters with the run's seed as ``random_state`` unless set explicitly."""
        params = dict(self.params)
        if "random_state" in MODELS[self.model].param_names():
            params.setdefault("random_state", self.seed)
        return params


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
    run_id: str | None = None  # the tracking run that recorded it (recsys.tracking)


def default_model_dir(model: str) -> Path:
    """``models/<model>-<UTC time>`` under the working directory."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("models") / f"{model}-{stamp}"


def validation_split(train: Interactions, fraction: float, seed: int) -> tuple[Interactions, Interactions]:
    """The per-user validation split carved out of training data (by ``train`` and ``tune``).

    Seeded with ``seed + 1`` so it differs from the train/test split made with ``seed``.
    """
    return split(train, "user", test_fraction=fraction, seed=seed + 1)


def split_data(data: Interactions, config: TrainConfig) -> tuple[Interactions, Interactions]:
    return split(
        data, config.split, test_fraction=config.test_fraction, n=config.split_n, seed=config.seed  # type: ignore[arg-type]
    )


def train(
    data: DataSource | None,
    config: TrainConfig | None = None,
    *,
    test: DataSource | None = None,
    read_options: ReadOptions | None = None,
    output: str | os.PathLike | None = None,
    save: bool = True,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    on_saving: Callable[[Path, TrainResult], None] | None = None,
    user_features: Any = None,
    item_features: Any = None,
    user_features_spec: Any = None,
    item_features_spec: Any = None,
    index_trees: int | None = None,
    checkpoint_every: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    checkpoint_on_signal: bool = False,
) -> TrainResult:
    """Load, split, fit, evaluate and save a model.

    ``test`` evaluates on a given file (mapped onto the training ids; unknown ids dropped
    and counted) instead of splitting. With ``save``, the model directory (``output`` or
    :func:`default_model_dir`) is written atomically; ``on_saving(dir, result)`` may add
    files to it before it is moved into place (the Annoy index, a run record).

    ``user_features``/``item_features`` (paths, or frames from
    :func:`recsys.data.features.read_features`) attach side information for models that
    use it (``two-tower``); ids with features but no interactions join the catalogue as
    cold ones. With ``split="cold-items"`` the evaluation is on the held-out cold items
    (:func:`recsys.evaluation.cold.evaluate_cold_items`).

    ``index_trees`` builds the Annoy index with that many trees into the model directory.

    Checkpoints (iterative models): ``checkpoint_every=N`` saves one every N epochs in
    ``checkpoint_dir`` (default: the model directory's name plus ``.checkpoint``), and
    SIGINT/SIGTERM save one before stopping with
    :class:`~recsys.checkpoint.TrainingInterrupted`. ``resume=DIR`` continues from the
    checkpoint in DIR with the settings stored there (``data``, ``config``, ``test``,
    ``read_options`` and ``output`` default to the stored ones); on CPU with the same seed
    it ends with the same factors as an uninterrupted run. The checkpoint directory is
    removed once the model is saved. ``checkpoint_on_signal`` (the CLI's default) saves one
    on SIGINT/SIGTERM even without ``checkpoint_every``, for iterative models.
    """
    features = {"user_features": user_features, "item_features": item_features,
                "user_features_spec": user_features_spec, "item_features_spec": item_features_spec}
    if resume is not None:
        data, config, test, read_options, output, checkpoint_every = resume_settings(
            resume, data, config, test, read_options, output, checkpoint_every
        )
        features = resume_features(resume, features)
        user_features, item_features = features["user_features"], features["item_features"]
        user_features_spec, item_features_spec = features["user_features_spec"], features["item_features_spec"]
        checkpoint_dir = resume
    if data is None:
        raise ConfigError("no training data: give --data (or --resume a checkpoint)")
    config = config or TrainConfig()
    config.check()
    checkpointing = None
    directory = Path(output) if output is not None else default_model_dir(config.model)
    with contextlib.ExitStack() as held:
        if save:
            # Hold the output for the whole run: a second run aimed at the same directory is
            # refused at once with a clear message, not after hours of training.
            held.enter_context(output_lock(directory))
        model_cls = MODELS[config.model]
        can = issubclass(model_cls, IterativeRecommender) and model_cls.supports_checkpoints()
        if checkpoint_every or checkpoint_dir is not None or (checkpoint_on_signal and can):
            if not can:
                raise ConfigError(
                    f"model {config.model!r} has no checkpoints; they apply to iterative models "
                    f"({', '.join(n for n, c in MODELS.items() if issubclass(c, IterativeRecommender) and c.supports_checkpoints())})"
                )
            if checkpoint_dir is None:
                checkpoint_dir = directory.with_name(directory.name + ".checkpoint")
            checkpointing = Checkpointing(
                Path(checkpoint_dir),
                every=int(checkpoint_every or 0),
                resume=resume is not None,
                run=_run_settings(data, test, config, read_options, directory, int(checkpoint_every or 0), features),
            )
        timings: dict[str, float] = {}
        start = time.perf_counter()
        full = load(data, read_options)
        feature_report = None
        if user_features is not None or item_features is not None:
            full, feature_report = attach_feature_tables(full, config, user_features, item_features, user_features_spec,
                                           item_features_spec, (read_options or ReadOptions()).encoding)
        test_data: Interactions | None = None
        if test is not None:
            train_data = full
            test_data, dropped = load(test, read_options).reindex(full.users, full.items)
            if test_data.nnz == 0:
                raise InputError(
                    f"no test entry has a user and an item in the training data ({dropped} entries "
                    "dropped); is this the right test file for this training data?",
                    path=None if isinstance(test, Interactions) else test,
                )
        elif config.split == "none":
            train_data = full
        else:
            train_data, test_data = split_data(full, config)
        timings["load_split"] = time.perf_counter() - start

        validation = None
        fit_options: dict[str, Any] = {"callbacks": callbacks, "progress": progress}
        if config.validation_fraction:
            train_data, validation = validation_split(train_data, config.validation_fraction, config.seed)
            fit_options["validation"] = Validation(validation, config.validation_metric, config.patience)
        model = create_model(config.model, **config.model_params())
        start = time.perf_counter()
        if checkpointing is not None:
            fit_options["checkpointing"] = checkpointing
        if config.model == "popular":
            fit_options = {}
        model.fit(train_data, **fit_options)
        timings["fit"] = time.perf_counter() - start

        evaluation = None
        if test_data is not None and test_data.nnz:
            if config.split == "cold-items" and test is None:
                from recsys.evaluation.cold import evaluate_cold_items

                evaluation = evaluate_cold_items(model, test_data, ks=config.ks, progress=progress)
            else:
                evaluation = evaluate(model, test_data, ks=config.ks, progress=progress)
            timings["evaluate"] = evaluation.seconds
        result = TrainResult(model, config, train_data, test_data, evaluation, None, timings, validation, feature_report)
        if save:
            start = time.perf_counter()

            def extras(tmp: Path) -> None:
                write_json(tmp / "run.json", run_record(result, data))
                if index_trees:
                    from recsys.retrieval.annoy_index import INDEX_DIR, AnnoyIndex

                    (tmp / INDEX_DIR).mkdir()
                    AnnoyIndex.build(result.model, trees=index_trees).write(tmp / INDEX_DIR)
                if on_saving is not None:
                    on_saving(tmp, result)

            model.save(directory, extras=extras, lock=False)
            result.model_dir = directory
            timings["save"] = time.perf_counter() - start
        if checkpointing is not None and checkpointing.directory.exists():
            # Its job is done: the run is complete and the model saved.
            with output_lock(checkpointing.directory):
                shutil.rmtree(checkpointing.directory, ignore_errors=True)
        return result


def attach_feature_tables(
    data: Interactions,
    config: TrainConfig,
    user_features: Any,
    item_features: Any,
    user_spec: Any,
    item_spec: Any,
    encoding: str,
) -> tuple[Interactions, Any]:
    """``data`` with the user and item feature tables (paths or frames) attached, and the
    feature report; refused for a model that reads no features."""
    from recsys.data.features import attach_features, load_features

    if not getattr(MODELS[config.model], "uses_features", False):
        users = [name for name, cls in MODELS.items() if getattr(cls, "uses_features", False)]
        raise ConfigError(
            f"model {config.model!r} does not use user or item features; drop the feature files "
            f"or use {', '.join(users)}"
        )
    return attach_features(
        data,
        load_features(user_features, "user", user_spec, encoding),
        load_features(item_features, "item", item_spec, encoding),
    )


def _run_settings(
    data: DataSource, test: DataSource | None, config: TrainConfig,
    read_options: ReadOptions | None, output: Path, every: int, features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the run (paths absolute: a resume may run elsewhere).

    Feature tables and specs given as paths are stored as paths; ones given in memory (data
    frames, dicts) as ``IN_MEMORY``, so that a resume without them is refused, not run
    without features.
    """

    def where(source: DataSource | None) -> str | None:
        return None if source is None or isinstance(source, Interactions) else str(Path(source).resolve())

    def feature_source(name: str, value: Any) -> str | list[str] | None:
        if value is None:
            return None
        if isinstance(value, list | tuple) and all(isinstance(v, str | os.PathLike) for v in value):
            return [str(Path(v).resolve()) for v in value]  # several tables joined on id
        if not isinstance(value, str | os.PathLike):
            return IN_MEMORY
        text = os.fspath(value)
        # A spec is either inline ("title=skip") or a TOML file; tables are files.
        inline = name.endswith("_spec") and not text.endswith(".toml")
        return text if inline else str(Path(text).resolve())

    return {
        "features": {name: feature_source(name, value) for name, value in (features or {}).items()},
        "data": where(data),
        "test": where(test),
        "config": dataclasses.asdict(config),
        "read_options": None if read_options is None else dataclasses.asdict(read_options),
        "output": str(output.resolve()),
        "every": every,
    }


IN_MEMORY = "<in memory>"


def resume_features(resume: str | os.PathLike, given: dict[str, Any]) -> dict[str, Any]:
    """The feature tables and specs of a resumed run: the ones given, else the stored paths."""
    run = read_checkpoint_meta(resume).get("run")
    stored = run.get("features") if isinstance(run, dict) else None
    stored = stored if isinstance(stored, dict) else {}
    out = dict(given)
    for name, value in given.items():
        if value is None and stored.get(name) == IN_MEMORY:
            raise ConfigError(f"{resume}: the run was given its {name.replace('_', ' ')} in memory; pass them again")
        if value is None:
            out[name] = stored.get(name)
    return out


def resume_settings(
    resume: str | os.PathLike,
    data: DataSource | None,
    config: TrainConfig | None,
    test: DataSource | None,
    read_options: ReadOptions | None,
    output: str | os.PathLike | None,
    every: int,
) -> tuple[Any, ...]:
    run = read_checkpoint_meta(resume).get("run")
    if not isinstance(run, dict):
        raise ConfigError(f"{resume}: the checkpoint holds no run settings; call train() with data and config")
    if config is None and isinstance(run.get("config"), dict):
        stored = dict(run["config"])
        stored["ks"] = tuple(stored.get("ks", DEFAULT_KS))
        try:
            config = TrainConfig(**stored)
        except TypeError as exc:
            raise ConfigError(f"{resume}: unreadable run settings ({exc})") from None
    if read_options is None and isinstance(run.get("read_options"), dict):
        read_options = ReadOptions(**run["read_options"])
    return (
        data if data is not None else run.get("data"),
        config,
        test if test is not None else run.get("test"),
        read_options,
        output if output is not None else run.get("output"),
        every or int(run.get("every") or 0),
    )


def run_record(result: TrainResult, data: DataSource) -> dict[str, Any]:
    """The resolved configuration and outcome of a run, as saved in ``run.json``."""
    config = dataclasses.asdict(result.config)
    config["params"] = result.model.get_params()
    return {
        "fitted_params": result.model.fitted_params,
        "data_shape": result.model.data_shape,
        "data": str(data) if not isinstance(data, Interactions) else data.source,
        "config": config,
        "train_entries": result.train.nnz,
        "test_entries": None if result.test is None else result.test.nnz,
        "metrics": None if result.evaluation is None else result.evaluation.metrics,
        "seconds": result.seconds,
    }


def evaluate_model(
    model: Recommender | str | os.PathLike,
    test: DataSource,
    *,
    train: DataSource | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    read_options: ReadOptions | None = None,
    per_user: bool = False,
    progress: bool = False,
    retrieval: str = "exact",
    search_k: int | None = None,
    cold_items: bool = False,
) -> Evaluation:
    """Evaluate a model (object or saved directory) on a test file.

    ``retrieval="annoy"`` ranks through the Annoy index saved in the model directory and
    adds ``overlap@k`` with the exact top-k (:func:`recsys.retrieval.evaluation.evaluate_with_index`).
    ``cold_items`` ranks the test's items without training interactions among themselves,
    as ``train`` does after a ``cold-items`` split (:func:`recsys.evaluation.cold.evaluate_cold_items`;
    a model that cannot score them gets empty metrics and a note in ``extra``).
    """
    model_dir = None
    if not isinstance(model, Recommender):
        model_dir = model
        model = Recommender.load(model)
    test_data = load(test, read_options)
    if cold_items:
        if retrieval != "exact" or train is not None or per_user:
            raise ConfigError("--cold-items ranks the cold items exactly with the model's own training data; "
                              "drop --retrieval, --train and --per-user")
        from recsys.evaluation.cold import evaluate_cold_items

        return evaluate_cold_items(model, test_data, ks=ks, progress=progress)
    train_data = None if train is None else load(train, read_options)
    if retrieval != "exact":
        from recsys.retrieval.batch import open_retrieval
        from recsys.retrieval.evaluation import evaluate_with_index

        index = open_retrieval(model, retrieval, model_dir, search_k=search_k)  # type: ignore[arg-type]
        return evaluate_with_index(model, test_data, index, train=train_data, ks=ks, per_user=per_user, progress=progress)
    return evaluate(model, test_data, train=train_data, ks=ks, per_user=per_user, progress=progress)


def split_file(
    data: DataSource,
    out_dir: str | os.PathLike,
    *,
    strategy: str = "user",
    test_fraction: float = 0.2,
    n: int = 1,
    seed: int = 0,
    read_options: ReadOptions | None = None,
) -> tuple[Path, Path, Interactions, Interactions]:
    """Split a log and write ``out_dir/train.csv`` and ``out_dir/test.csv``."""
    full = load(data, read_options)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown split {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    train_part, test_part = split(full, strategy, test_fraction=test_fraction, n=n, seed=seed)  # type: ignore[arg-type]
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in SPLIT_FILES)
        if foreign:
            raise ConfigError(
                f"{out}: holds other files ({', '.join(foreign[:3])}); the split directory is "
                "replaced as a whole, so give a new or empty directory"
            )
    record = {
        "source": str(data) if not isinstance(data, Interactions) else data.source,
        "strategy": strategy,
        "test_fraction": test_fraction,
        "n": n,
        "seed": seed,
        "train_entries": train_part.nnz,
        "test_entries": test_part.nnz,
    }
    # Train and test land together or not at all: both are written into a temporary
    # directory that then replaces ``out``.
    with atomic_directory(out) as tmp:
        write_interactions(train_part, tmp / "train.csv", lock=False)
        write_interactions(test_part, tmp / "test.csv", lock=False)
        write_json(tmp / "split.json", record)
    return out / "train.csv", out / "test.csv", train_part, test_part


SPLIT_FILES = ("train.csv", "test.csv", "split.json")


def write_table(frame: Any, path: str | os.PathLike) -> Path:
    """Write a DataFrame as Parquet (``.parquet``) or CSV, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path
