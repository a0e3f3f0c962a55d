"""Hyper-parameter search on a validation split carved from the training data (Optuna).

The data is split exactly as ``recsys train`` would split it (same strategy, fraction and
seed); the test part is dropped before the first trial. A per-user validation split is
carved out of the training part; every trial fits on the rest and is scored on the
validation part. The best settings are written as a TOML file for
``recsys train --config``, which then trains on the whole training part and evaluates on
the untouched test part once.

With ``split="none"`` the data is taken as all training data (a log with a test file of its
own, as ``recsys train --test`` reads it) and the validation part is carved from all of it.
Feature tables (:class:`~recsys.jobs.settings.FeatureTables`) are attached before the
split, so a ``two-tower`` search trains every trial with them.

Hyper-parameters set in the config's ``params`` are fixed in every trial and left out of
the search. The first trial is the model's defaults (as far as the space holds them), so
the best is never worse than the defaults on validation. No trial starts that would likely
end past the time budget. Relative dimensions search multipliers of the ``"auto"`` values
(:mod:`recsys.models.auto`); the written settings hold the multiplier times the rule's
value on the whole training part (the part ``recsys train --config`` fits), so the balance
found on validation carries over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from recsys.artifacts import atomic_file
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation.evaluate import evaluate
from recsys.jobs.record import data_params
from recsys.jobs.settings import (
    DataSource,
    FeatureTables,
    ReadOptions,
    TrainConfig,
    load,
    split_data,
    validation_split,
)
from recsys.jobs.training import attach_feature_tables
from recsys.models import MODELS, create_model
from recsys.models.auto import AUTO
from recsys.progress import progress_bar
from recsys.runs import NULL_RUN, Run


@dataclass(frozen=True)
class Dimension:
    """One searched hyper-parameter: a float or int range (optionally log-scaled) or choices.

    A ``relative`` range is a multiplier of the value the model's ``"auto"`` rule gives the
    data (:mod:`recsys.models.auto`): alpha x [1/4, 4] suits a dense log and a sparse one
    alike, where any fixed range of alpha fits one density only.
    """

    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    relative: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"{'auto x ' if self.relative else ''}[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


def _f(low: float, high: float, log: bool = True) -> Dimension:
    return Dimension("float", low, high, log)


def _x(low: float, high: float) -> Dimension:
    """A multiplier of the ``"auto"`` value, log-scaled."""
    return Dimension("float", low, high, True, relative=True)


def _c(*choices: Any) -> Dimension:
    return Dimension("categorical", choices=choices)


SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    # Relative ranges first: ALS's ridge rule reads the alpha chosen before it.
    "als": {
        "alpha": _x(0.25, 4.0),
        "regularization": _x(0.1, 10.0),
        "factors": _c(64, 128, 256, 512),
        "epochs": _c(10, 15, 25),
        "weighting": _c("auto", "binary", "log", "linear"),
    },
    "ials": {
        "unobserved_weight": _x(0.1, 10.0),
        "factors": _c(64, 128, 256, 512),
        "regularization": _f(1e-3, 0.1),
        "epochs": _c(8, 16, 24),
        "weighting": _c("auto", "binary", "log", "linear"),
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
the leave-one-data-set-out search in ``experiments/quality``; see the README)."""


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``5m``, ``1.5h`` (a number alone is seconds)."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text).lower())
        if match is None:
            raise ConfigError(f"a time budget looks like 90s, 5m or 1.5h, not {text!r}")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"a time budget must be positive, got {text!r}")
    return seconds


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
            relative = bool(value.get("relative", False))
            if not low < high or ((value.get("log") or relative) and low <= 0):
                raise ConfigError(f"search range for {name!r} must have 0 < low < high (log, relative) or low < high")
            space[name] = Dimension(kind, low, high, bool(value.get("log", False)) or relative, relative=relative)
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
    features: FeatureTables = dataclasses.field(default_factory=FeatureTables)  # what trials trained with
    run_id: str | None = None  # the run that recorded the search, when one did

    def write_config(self, path: str | Path) -> Path:
        """Write the best settings as TOML for ``recsys train --config``, atomically."""
        from recsys.jobs.config import settings_toml

        path = Path(path)
        header = (
            f"# Best of {len(self.trials)} trials by validation {self.metric} = {self.best_value:.6f}\n"
            "# (written by recsys tune; use with: recsys train --config THIS_FILE)\n"
        )
        flags = _feature_flags(self.features)
        if flags:
            # The settings were found with these tables: training without them is another model.
            header += f"# tuned with feature tables: pass them to train too: {flags}\n"
        with atomic_file(path) as tmp:
            tmp.write_text(settings_toml(self.config, header), encoding="utf-8")
        return path


def _feature_flags(features: FeatureTables) -> str:
    flags = {"users": "--user-features", "items": "--item-features", "user_spec": "--user-features-spec",
             "item_spec": "--item-features-spec"}
    parts = []
    for name, flag in flags.items():
        value = getattr(features, name)
        for v in [] if value is None else (value if isinstance(value, list | tuple) else [value]):
            parts.append(f"{flag} {v}")
    return " ".join(parts)


TrialCallback = Callable[[int, dict[str, Any], float | None, float, str], None]
"""Called after each trial with (number, params, value or None, seconds, state)."""


def tune(
    data: DataSource,
    config: TrainConfig,
    *,
    trials: int | None = None,
    space: Mapping[str, Dimension] | None = None,
    metric: str = "recall@20",
    validation_fraction: float = 0.2,
    time_budget: float | str | None = None,
    read_options: ReadOptions | None = None,
    on_trial: TrialCallback | None = None,
    progress: bool = False,
    features: FeatureTables | None = None,
    run: Run = NULL_RUN,
) -> TuneResult:
    """Search ``config.model``'s hyper-parameters with Optuna's TPE sampler, reporting to
    ``run`` (the search's settings, each trial as a child run, the best settings).

    ``trials`` bounds the number of trials (default 30, or none with a budget);
    ``time_budget`` (seconds, or ``"5m"``) bounds the whole search, loading included. The
    rest of the protocol (the first trial, relative dimensions, ``split="none"``, feature
    tables) is in the module's docstring. Never evaluates on the test part of the split.
    """
    start = time.perf_counter()
    budget, trials = _limits(trials, time_budget)
    config.check()
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    search = _search_space(config, space)
    k = _cut_off(metric)
    features = features or FeatureTables()
    run.log_params({**_config_params(config), "metric": metric, "validation_fraction": validation_fraction,
                    **({"trials": trials} if trials is not None else {}),
                    **({"time_budget": time_budget} if time_budget is not None else {})})
    run.log_params(data_params(data))
    run.log_text("\n".join(describe_space(search)) + "\n", "search_space.txt")
    train, fit_part, valid = _parts(data, config, read_options, features, validation_fraction)
    fixed = config.model_params()

    def objective(params: dict[str, Any]) -> float:
        model = create_model(config.model, **_absolute(config.model, fixed, search, params, fit_part)).fit(fit_part)
        value = evaluate(model, valid, ks=[k]).metrics.get(metric)
        if value is None:
            raise ConfigError(f"unknown metric {metric!r}")
        return float(value)

    def report(number: int, params: dict[str, Any], value: float | None, seconds: float, state: str) -> None:
        _record_trial(run, number, params, value, seconds, state, metric)
        if on_trial is not None:
            on_trial(number, params, value, seconds, state)

    label = f"tuning {config.model}"
    study, rows = _search(objective, search, config, trials, budget, start, metric, report, progress, label)
    best = study.best_trial
    # Relative values become absolute on the whole training part, the data train will fit.
    best_params = {k: v for k, v in _absolute(config.model, fixed, search, best.params, train).items() if k in search}
    result = TuneResult(config=dataclasses.replace(config, params={**config.params, **best_params}),
                        best_params=best_params, best_value=float(best.value), metric=metric,
                        trials=pd.DataFrame(rows), seconds=time.perf_counter() - start, features=features,
                        run_id=run.run_id)
    _record_best(run, result)
    return result


def _limits(trials: int | None, time_budget: float | str | None) -> tuple[float | None, int | None]:
    """(budget in seconds or None, trial count or None): 30 trials unless a budget is given."""
    budget = None if time_budget is None else parse_duration(time_budget)
    if trials is None:
        return budget, None if budget is not None else 30
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    return budget, trials


def _search_space(config: TrainConfig, space: Mapping[str, Dimension] | None) -> dict[str, Dimension]:
    """The dimensions to search: the given space or the model's own, less what the config fixes."""
    search = {name: dim for name, dim in (space if space is not None else SEARCH_SPACES.get(config.model, {})).items()
              if name not in config.params}
    if not search:
        raise ConfigError(f"model {config.model!r} has no hyper-parameters to tune")
    return search


def _cut_off(metric: str) -> int:
    try:
        return int(metric.split("@")[1])
    except (IndexError, ValueError):
        raise ConfigError(f"metric must look like 'recall@20', got {metric!r}") from None


def _parts(data: DataSource, config: TrainConfig, read_options: ReadOptions | None, features: FeatureTables,
           validation_fraction: float) -> tuple[Any, Any, Any]:
    """(training part, the part trials fit, the validation part): the test part is dropped
    at once, never seen."""
    full = load(data, read_options)
    if features.given:
        full, _report = attach_feature_tables(full, config.model, features, (read_options or ReadOptions()).encoding)
    if config.split == "none":
        train = full  # the data is all training data (the user holds a test file of their own)
    else:
        train, _test = split_data(full, config)
        del _test  # set aside: nothing below may see it
    fit_part, valid = validation_split(train, validation_fraction, config.seed)
    return train, fit_part, valid


def _search(objective: Callable[[dict[str, Any]], float], search: Mapping[str, Dimension], config: TrainConfig,
            trials: int | None, budget: float | None, start: float, metric: str,
            report: TrialCallback, progress: bool, label: str) -> tuple[Any, list[dict[str, Any]]]:
    """Run the Optuna study (the defaults first) within the trial count and the budget."""
    import optuna

    rows: list[dict[str, Any]] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    study.enqueue_trial(_default_point(config.model, search))

    def trial_value(trial: optuna.Trial) -> float:
        began = time.perf_counter()
        value = objective({name: dim.suggest(trial, name) for name, dim in search.items()})
        trial.set_user_attr("seconds", time.perf_counter() - began)
        return value

    def within_budget(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        # Stop before a trial that would likely end past the budget (a trial cannot be cut short).
        done = [r["seconds"] for r in rows if r["state"] == "complete"]
        if budget is not None and time.perf_counter() - start + statistics.mean(done or [0.0]) > budget:
            study.stop()

    left = None if budget is None else max(budget - (time.perf_counter() - start), 0.0)
    with progress_bar(trials, label, enabled=progress) as bar:

        def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            seconds = float(trial.user_attrs.get("seconds", trial.duration.total_seconds() if trial.duration else 0.0))
            state = trial.state.name.lower()
            rows.append({"trial": trial.number, **trial.params, metric: trial.value, "seconds": seconds, "state": state})
            report(trial.number, dict(trial.params), trial.value, seconds, state)
            best = study.best_value if any(t.value is not None for t in study.trials) else float("nan")
            bar.advance(1, best=best)

        # A trial that fails (a diverging setting, a bad combination) is recorded as failed
        # and the search goes on; programming errors still surface.
        study.optimize(trial_value, n_trials=trials, timeout=left, callbacks=[after, within_budget],
                       catch=(RecsysError, FloatingPointError, RuntimeError))
    if not any(t.value is not None and math.isfinite(t.value) for t in study.trials):
        raise RecsysError(f"no trial of {config.model} completed; see the failed trials' errors with --debug")
    return study, rows


class _TrialFailed(Exception):
    """Ends a failed trial's child run as FAILED (the trial's own error was caught by Optuna)."""


def _record_trial(run: Run, number: int, params: Mapping[str, Any], value: float | None, seconds: float,
                  state: str, metric: str) -> None:
    """One trial as a child run of the search's run (``FAILED`` when the trial failed)."""
    with contextlib.suppress(_TrialFailed), run.child(f"trial-{number}", kind="trial") as child:
        child.log_params({**params, "trial": number})
        child.log_metrics({"seconds": seconds, **({f"val_{metric}": value} if value is not None else {})})
        if state != "complete":
            raise _TrialFailed(state)


def _record_best(run: Run, result: TuneResult) -> None:
    from recsys.jobs.config import settings_toml

    run.log_params(result.best_params, prefix="best.")
    run.log_metrics({f"best_{result.metric}": result.best_value, "tune_seconds": result.seconds})
    run.log_table(result.trials, "trials.csv")
    run.log_text(settings_toml(result.config), "best_config.toml")


def _config_params(config: TrainConfig) -> dict[str, Any]:
    from recsys.jobs.config import config_params

    return config_params(config)


def _absolute(model: str, fixed: Mapping[str, Any], search: Mapping[str, Dimension], point: Mapping[str, Any],
              data: Any) -> dict[str, Any]:
    """The hyper-parameters of a trial ``point`` for ``data``: relative values times what the
    ``"auto"`` rule gives ``data`` (in the space's order: a rule may read a value set before it)."""
    params = {**fixed, **{k: v for k, v in point.items() if not search[k].relative}}
    for name, dim in search.items():
        if dim.relative:
            base = create_model(model, **{**params, name: AUTO}).resolved_params(data)[name]
            params[name] = float(point[name]) * float(base)
    return params


def _default_point(model: str, search: Mapping[str, Dimension]) -> dict[str, Any]:
    """The model's defaults as a point of the space (1 for relative dimensions); a default
    outside a dimension's range is left to the sampler."""
    defaults = {p.name: p.default for p in inspect.signature(MODELS[model].__init__).parameters.values()}
    point: dict[str, Any] = {}
    for name, dim in search.items():
        value = defaults.get(name)
        if dim.relative and value == AUTO:
            point[name] = 1.0
        elif _holds(dim, value):
            point[name] = value
    return point


def _holds(dim: Dimension, value: Any) -> bool:
    if dim.kind == "categorical":
        return value in dim.choices
    return not dim.relative and isinstance(value, int | float) and dim.low <= value <= dim.high


def describe_space(space: Mapping[str, Dimension]) -> list[str]:
    return [f"{name} in {dim.describe()}" for name, dim in space.items()]


__all__: Sequence[str] = ["SEARCH_SPACES", "Dimension", "TuneResult", "parse_duration", "parse_space", "tune"]
