"""Hyper-parameter search on a validation split carved from the training data (Optuna).

The data is split exactly as ``recsys train`` would split it (same strategy, fraction and
seed); the test part is dropped before the first trial. A per-user validation split is
carved out of the training part; every trial fits on the rest and is scored on the
validation part. The best settings are written as a TOML file for
``recsys train --config``, which then trains on the whole training part and evaluates on
the untouched test part once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from recsys.artifacts import atomic_file
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation.evaluate import evaluate
from recsys.models import MODELS, create_model
from recsys.progress import progress_bar
from recsys.workflows import (
    DataSource,
    ReadOptions,
    TrainConfig,
    attach_feature_tables,
    load,
    split_data,
    validation_split,
)


@dataclass(frozen=True)
class Dimension:
    """One searched hyper-parameter: a float or int range (optionally log-scaled) or choices."""

    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


def _f(low: float, high: float, log: bool = True) -> Dimension:
    return Dimension("float", low, high, log)


def _c(*choices: Any) -> Dimension:
    return Dimension("categorical", choices=choices)


SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    "als": {
        "factors": _c(32, 64, 128, 256),
        "regularization": _f(1e-3, 10.0),
        "alpha": _f(0.3, 50.0),
        "epochs": _c(10, 15, 25),
        "weighting": _c("binary", "log", "linear"),
    },
    "ials": {
        "factors": _c(32, 64, 128, 256),
        "regularization": _f(1e-4, 0.1),
        "unobserved_weight": _f(0.01, 3.0),
        "regularization_exponent": _f(0.0, 1.5, log=False),
        "epochs": _c(8, 16, 24),
        "weighting": _c("binary", "log"),
        "alpha": _f(0.1, 10.0),
    },
    "mf": {
        "factors": _c(32, 64, 128),
        "learning_rate": _f(1e-3, 0.1),
        "regularization": _f(1e-5, 0.1),
        "epochs": _c(10, 20, 40),
        "loss": _c("bpr", "softmax"),
        "negatives": _c(64, 256, 1024),
    },
    "two-tower": {
        "factors": _c(32, 64, 128),
        "learning_rate": _f(5e-4, 1e-2),
        "temperature": _f(0.03, 0.3),
        "id_dropout": _c(0.0, 0.25, 0.5),
        "epochs": _c(10, 20, 30),
        "regularization": _c(0.0, 1e-4, 1e-2),
        "lr_schedule": _c("constant", "cosine"),
    },
}
"""Default search spaces of ``recsys tune`` per model (the model defaults themselves come from
the searches in ``experiments/quality``; see the README)."""


def parse_space(spec: Mapping[str, Any], model: str) -> dict[str, Dimension]:
    """A search space from TOML-like data: ``name = [choices]`` or ``name = {low, high, log, int}``."""
    known = set(MODELS[model].param_names())
    space: dict[str, Dimension] = {}
    for name, value in spec.items():
        if name not in known:
            raise ConfigError(f"model {model!r} has no hyper-parameter {name!r}; it takes {', '.join(sorted(known))}")
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"search space for {name!r} lists no choices")
            space[name] = _c(*value)
        elif isinstance(value, Mapping) and {"low", "high"} <= set(value):
            kind = "int" if value.get("int") else "float"
            low, high = float(value["low"]), float(value["high"])
            if not low < high or (value.get("log") and low <= 0):
                raise ConfigError(f"search range for {name!r} must have 0 < low < high (log) or low < high")
            space[name] = Dimension(kind, low, high, bool(value.get("log", False)))
        else:
            raise ConfigError(f"search space for {name!r} must be a list of choices or a table with low and high")
    return space


@dataclass
class TuneResult:
    """The outcome of :func:`tune`: the best settings and every trial."""

    config: TrainConfig  # the run config with the best hyper-parameters
    best_params: dict[str, Any]
    best_value: float
    metric: str
    trials: pd.DataFrame
    seconds: float
    features: dict[str, Any] = dataclasses.field(default_factory=dict)  # the feature tables trials trained with

    def write_config(self, path: str | Path) -> Path:
        """Write the best settings as TOML for ``recsys train --config``, atomically."""
        from recsys.config import settings_toml

        path = Path(path)
        header = (
            f"# Best of {len(self.trials)} trials by validation {self.metric} = {self.best_value:.6f}\n"
            "# (written by recsys tune; use with: recsys train --config THIS_FILE)\n"
        )
        given = {name: value for name, value in self.features.items() if value is not None}
        if given:
            # The settings were found with these tables: training without them is another model.
            flags = " ".join(f"--{name.replace('_', '-')} {v}" for name, value in given.items()
                             for v in (value if isinstance(value, list | tuple) else [value]))
            header += f"# tuned with feature tables: pass them to train too: {flags}\n"
        with atomic_file(path) as tmp:
            tmp.write_text(settings_toml(self.config, header), encoding="utf-8")
        return path


TrialCallback = Callable[[int, dict[str, Any], float | None, float, str], None]
"""Called after each trial with (number, params, value or None, seconds, state)."""


def tune(
    data: DataSource,
    config: TrainConfig,
    *,
    trials: int = 30,
    space: Mapping[str, Dimension] | None = None,
    metric: str = "recall@20",
    validation_fraction: float = 0.2,
    timeout: float | None = None,
    read_options: ReadOptions | None = None,
    on_trial: TrialCallback | None = None,
    progress: bool = False,
    user_features: Any = None,
    item_features: Any = None,
    user_features_spec: Any = None,
    item_features_spec: Any = None,
) -> TuneResult:
    """Search ``config.model``'s hyper-parameters with Optuna's TPE sampler.

    Feature tables (as for :func:`recsys.workflows.train`) are attached before the split,
    so a ``two-tower`` search trains every trial with them.

    Hyper-parameters set in ``config.params`` are fixed in every trial and left out of
    the search.
    Returns the best settings; never evaluates on the test part of the split.
    """
    import optuna

    config.check()
    if config.split == "none":
        raise ConfigError("tuning needs a split (the test part is set aside); --split none trains on everything")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    # Hyper-parameters set explicitly in the config are fixed, not searched.
    search = {
        name: dim
        for name, dim in (space if space is not None else SEARCH_SPACES.get(config.model, {})).items()
        if name not in config.params
    }
    if not search:
        raise ConfigError(f"model {config.model!r} has no hyper-parameters to tune")
    try:
        k = int(metric.split("@")[1])
    except (IndexError, ValueError):
        raise ConfigError(f"metric must look like 'recall@20', got {metric!r}") from None
    fixed = config.model_params()
    full = load(data, read_options)
    if any(f is not None for f in (user_features, item_features)):
        full, _report = attach_feature_tables(full, config, user_features, item_features, user_features_spec,
                                              item_features_spec, (read_options or ReadOptions()).encoding)
    train, _test = split_data(full, config)
    del _test  # set aside: nothing below may see it
    fit_part, valid = validation_split(train, validation_fraction, config.seed)

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        params = {**fixed, **{name: dim.suggest(trial, name) for name, dim in search.items()}}
        t0 = time.perf_counter()
        model = create_model(config.model, **params).fit(fit_part)
        value = evaluate(model, valid, ks=[k]).metrics.get(metric)
        if value is None:
            raise ConfigError(f"unknown metric {metric!r}")
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        return float(value)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=config.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with progress_bar(trials, f"tuning {config.model}", enabled=progress) as bar:

        def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            seconds = float(trial.user_attrs.get("seconds", trial.duration.total_seconds() if trial.duration else 0.0))
            state = trial.state.name.lower()
            rows.append({"trial": trial.number, **trial.params, metric: trial.value, "seconds": seconds, "state": state})
            if on_trial is not None:
                on_trial(trial.number, dict(trial.params), trial.value, seconds, state)
            best = study.best_value if any(t.value is not None for t in study.trials) else float("nan")
            bar.advance(1, best=best)

        # A trial that fails (a diverging setting, a bad combination) is recorded as failed
        # and the search goes on; programming errors still surface.
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[after],
                       catch=(RecsysError, FloatingPointError, RuntimeError))
    complete = [t for t in study.trials if t.value is not None and math.isfinite(t.value)]
    if not complete:
        raise RecsysError(f"no trial of {config.model} completed; see the failed trials' errors with --debug")
    best = study.best_trial
    best_config = dataclasses.replace(config, params={**config.params, **best.params})
    return TuneResult(
        config=best_config,
        best_params=dict(best.params),
        best_value=float(best.value),
        metric=metric,
        trials=pd.DataFrame(rows),
        seconds=time.perf_counter() - start,
        features={"user_features": user_features, "item_features": item_features,
                  "user_features_spec": user_features_spec, "item_features_spec": item_features_spec},
    )


def describe_space(space: Mapping[str, Dimension]) -> list[str]:
    return [f"{name} in {dim.describe()}" for name, dim in space.items()]


__all__: Sequence[str] = ["SEARCH_SPACES", "Dimension", "TuneResult", "parse_space", "tune"]
