"""What decides a job besides the code: how to read a file, which feature tables, the run.

Three values travel together through every job: :class:`ReadOptions` (how an interaction
file is read), :class:`FeatureTables` (the side information of users and items) and
:class:`TrainConfig` (model, hyper-parameters, split, seed, cut-offs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.data.filters import FilterReport, Filters, apply_filters
from recsys.data.interactions import Interactions
from recsys.data.io import ReadReport, read_interactions
from recsys.data.options import ReadOptions
from recsys.data.splits import STRATEGIES, keep_trained, split
from recsys.errors import ConfigError, InputError
from recsys.evaluation.metrics import DEFAULT_KS

DataSource = str | os.PathLike | Interactions
"""A path to an interaction file, or the interactions themselves."""

IN_MEMORY = "<in memory>"
"""How a checkpoint records a table given as a data frame: a resume must be given it again."""


def load(source: DataSource, options: ReadOptions | None = None) -> Interactions:
    """An :class:`Interactions` from a path (read with ``options``) or as given.

    With ``skip_bad_rows`` the number of rows skipped is logged (logger ``recsys``, level
    WARNING, which the CLI prints): skipping is a policy the user chose, never silent.
    """
    return load_reported(source, options)[0]


def check_sources(*sources: Any) -> None:
    """Refuse a data path that does not exist before a run is opened (a mistake in the
    command leaves no tracking store or FAILED run behind); others are checked when read."""
    for source in sources:
        # A URI (hdfs://, s3a://) is for Spark to read; it says so itself when it cannot.
        if isinstance(source, str | os.PathLike) and "://" not in os.fspath(source) and not Path(source).exists():
            raise InputError("no such file", path=source)


def load_reported(source: DataSource, options: ReadOptions | None = None) -> tuple[Interactions, ReadReport | None]:
    """:func:`load`, and what the read did (None for interactions given in memory)."""
    if isinstance(source, Interactions):
        return source, None
    options = options or ReadOptions()
    data, report = read_interactions(source, **dataclasses.asdict(options), return_report=True)  # type: ignore[misc]
    if options.skip_bad_rows:
        logging.getLogger("recsys").warning(
            "%s: skipped %d malformed row%s (--skip-bad-rows)",
            source, report.skipped, "" if report.skipped == 1 else "s",
        )
    return data, report


@dataclass(frozen=True)
class FeatureTables:
    """Side information for a job: the user and item feature tables and their column specs.

    Each table is a path, a list of paths (joined on the id) or a data frame from
    :func:`recsys.data.features.read_features`; each spec is inline text
    (``"title=skip"``), a TOML file or a :class:`~recsys.data.features.FeatureSpec`.
    """

    users: Any = None
    items: Any = None
    user_spec: Any = None
    item_spec: Any = None

    @property
    def given(self) -> bool:
        return self.users is not None or self.items is not None

    def sides(self) -> dict[str, tuple[Any, Any]]:
        """``{"user": (table, spec), "item": (table, spec)}`` for the sides given."""
        out = {"user": (self.users, self.user_spec), "item": (self.items, self.item_spec)}
        return {side: pair for side, pair in out.items() if pair[0] is not None}

    def stored(self) -> dict[str, Any]:
        """As a checkpoint keeps them: absolute paths, inline specs as written, and
        :data:`IN_MEMORY` for frames (a resume without them is refused, not run without)."""
        return {name: _stored(name, value) for name, value in self._fields().items()}

    @classmethod
    def from_stored(cls, stored: dict[str, Any], given: FeatureTables, where: str | os.PathLike) -> FeatureTables:
        """The tables of a resumed run: the ones ``given`` again (moved files), else the stored."""
        # Checkpoints written before FeatureTables existed keep the four arguments' names.
        stored = {_STORED_NAMES.get(k, k): v for k, v in stored.items()}
        values = {}
        for name, value in given._fields().items():
            kept = stored.get(name)
            if value is None and kept == IN_MEMORY:
                raise ConfigError(f"{where}: the run was given its {name.replace('_', ' ')} in memory; pass them again")
            values[name] = value if value is not None else kept
        return cls(**values)

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_STORED_NAMES = {"user_features": "users", "item_features": "items",
                 "user_features_spec": "user_spec", "item_features_spec": "item_spec"}


def _stored(name: str, value: Any) -> Any:
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


@dataclass
class TrainConfig:
    """Everything that decides a training run besides the data.

    ``split`` is one of ``user`` (per-user holdout, the default), ``random``,
    ``temporal``, ``last-n``, ``leave-one-out``, ``cold-items`` or ``none`` (train on
    everything, no evaluation). ``eval_users`` evaluates a seeded sample of that many test
    users (each ranking the whole catalogue; default: every one). ``validation_fraction`` carves a per-user validation split
    out of the training part for per-epoch ``validation_metric`` and early stopping
    (``patience``); the test part is never seen during training.
    """

    # The model whose defaults hold on data nobody tuned on (experiments/quality).
    model: str = "ials"
    params: dict[str, Any] = field(default_factory=dict)
    split: str = "user"
    test_fraction: float = 0.2
    split_n: int = 1
    seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    validation_fraction: float | None = None
    validation_metric: str = "recall@20"
    patience: int | None = None
    eval_users: int | None = None
    # Filters applied to the log before the split (recsys.data.filters).
    min_rating: float | None = None
    min_user_count: int = 1
    min_item_count: int = 1

    def filters(self) -> Filters:
        return Filters(self.min_rating, self.min_user_count, self.min_item_count)

    def check(self) -> None:
        # The registry loads the models (and torch): deferred, so that `recsys split` does not.
        from recsys.models import MODELS
        from recsys.models.params import check_params

        # Types first (a config file or grid may hold anything), then the ranges.
        check_params(TrainConfig, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "settings")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"settings: test_fraction must be between 0 and 1, got {self.test_fraction}")
        for name, low in (("seed", 0), ("split_n", 1), ("patience", 1), ("eval_users", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{name.replace('_', '-')} must be at least {low}, got {value}")
        if self.validation_fraction is not None and not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"settings: validation_fraction must be in [0, 1), got {self.validation_fraction}")
        self.filters().check()
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.split not in (*STRATEGIES, "none"):
            raise ConfigError(f"unknown split {self.split!r}; choose one of {', '.join(STRATEGIES)}, none")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"k must be positive integers, got {self.ks}")

    def model_params(self) -> dict[str, Any]:
        """Hyper-parameters with the run's seed as ``random_state`` unless set explicitly."""
        from recsys.models import MODELS

        params = dict(self.params)
        if "random_state" in MODELS[self.model].param_names():
            params.setdefault("random_state", self.seed)
        return params

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> TrainConfig:
        """A config written by :func:`dataclasses.asdict` (a checkpoint, ``run.json``); its
        hyper-parameters under today's names (:meth:`Recommender.rename_params`)."""
        from recsys.models import MODELS

        values = dict(stored)
        values["ks"] = tuple(values.get("ks", DEFAULT_KS))
        if isinstance(values.get("params"), dict) and values.get("model") in MODELS:
            values["params"] = MODELS[values["model"]].rename_params(values["params"])
        return cls(**values)


@dataclass
class TrainingData:
    """A job's log as read: filtered, with its feature tables attached."""

    interactions: Interactions
    filtered: FilterReport
    features: Any = None  # the feature report, when tables were given
    read: ReadReport | None = None  # what reading the file did (None for data given in memory)


def load_training_data(data: DataSource, config: TrainConfig, read_options: ReadOptions | None,
                       features: FeatureTables | None) -> TrainingData:
    """Read ``data``, apply ``config``'s filters, attach the feature tables (train and tune)."""
    loaded, report = load_reported(data, read_options)
    full, filtered = apply_filters(loaded, config.filters())
    feature_report = None
    if features is not None and features.given:
        full, feature_report = attach_feature_tables(full, config.model, features,
                                                     (read_options or ReadOptions()).encoding)
    return TrainingData(full, filtered, feature_report, report)


def attach_feature_tables(data: Interactions, model: str, features: FeatureTables,
                          encoding: str) -> tuple[Interactions, Any]:
    """``data`` with the feature tables attached, and the feature report; refused for a
    model that reads no features."""
    from recsys.data.features import attach_features, load_features
    from recsys.models import MODELS

    if not MODELS[model].uses_features:
        users = [name for name, cls in MODELS.items() if cls.uses_features]
        raise ConfigError(
            f"model {model!r} does not use user or item features; drop the feature files "
            f"or use {', '.join(users)}"
        )
    return attach_features(
        data,
        load_features(features.users, "user", features.user_spec, encoding),
        load_features(features.items, "item", features.item_spec, encoding),
    )


def split_data(data: Interactions, config: TrainConfig) -> tuple[Interactions, Interactions]:
    """The training and test parts ``config`` asks for (:func:`split_for_training`)."""
    train, test, _dropped = split_for_training(data, config)
    return train, test


def split_for_training(data: Interactions, config: TrainConfig) -> tuple[Interactions, Interactions, int]:
    """The training and test parts ``config`` asks for, and the test entries dropped.

    One rule with a test file of one's own (``--test``): the model knows the users and items
    that have training entries, and test entries of any other are dropped and counted, so a
    split made here and the same split written by ``recsys split`` and read back score the
    same. Not for ``cold-items`` (the held-out items are its point) nor for data with feature
    tables, whose users and items without entries join the catalogue as cold ones.
    """
    train, test = split(data, config.split, test_fraction=config.test_fraction, n=config.split_n,  # type: ignore[arg-type]
                        seed=config.seed)
    if config.split == "cold-items" or data.user_features is not None or data.item_features is not None:
        return train, test, 0
    return keep_trained(train, test)


def validation_split(train: Interactions, fraction: float, seed: int) -> tuple[Interactions, Interactions]:
    """The per-user validation split carved out of training data (by ``train`` and ``tune``).

    Seeded with ``seed + 1`` so it differs from the train/test split made with ``seed``.
    """
    return split(train, "user", test_fraction=fraction, seed=seed + 1)


def source_name(source: DataSource | None) -> str | None:
    """A data source as a path for records (an in-memory log: where it was read from)."""
    if source is None:
        return None
    return source.source if isinstance(source, Interactions) else str(source)


__all__: Sequence[str] = [
    "DataSource", "FeatureTables", "ReadOptions", "TrainConfig", "load", "split_data", "validation_split",
]
