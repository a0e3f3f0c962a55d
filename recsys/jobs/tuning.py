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
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.artifacts import OutputKind, atomic_file, check_output, starts_with
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation.full_ranking import evaluate
from recsys.jobs.config import settings_toml
from recsys.jobs.record import config_params, data_params
from recsys.jobs.settings import (
    DataSource,
    FeatureTables,
    ReadOptions,
    TrainConfig,
    load_training_data,
    split_data,
    validation_split,
)
from recsys.jobs.space import (
    SEARCH_SPACES,
    Dimension,
    absolute,
    default_point,
    describe_space,
    parse_duration,
)
from recsys.models import create_model
from recsys.progress import progress_bar
from recsys.runs import NULL_RUN, Run

# The header every config tune writes; an earlier one may be replaced, nothing else.
TUNED_CONFIG = OutputKind("tuned config", recognise=starts_with("(written by recsys tune;"))


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
    config_path: Path | None = None  # where tune(output=...) wrote the best settings

    def write_config(self, path: str | Path) -> Path:
        """Write the best settings as TOML for ``recsys train --config``, atomically."""
        path = Path(path)
        header = (
            f"# Best of {len(self.trials)} trials by validation {self.metric} = {self.best_value:.6f}\n"
            "# (written by recsys tune; use with: recsys train --config THIS_FILE)\n"
        )
        flags = _feature_flags(self.features)
        if flags:
            # The settings were found with these tables: training without them is another model.
            header += f"# tuned with feature tables: pass them to train too: {flags}\n"
        with atomic_file(path, kind=TUNED_CONFIG) as tmp:
            tmp.write_text(settings_toml(self.config, header), encoding="utf-8")
        return path


def _feature_flags(features: FeatureTables) -> str:
    """The feature tables as the flags that pass them again (tables given as data frames:
    "(given in memory)", never their text, which would break the TOML header)."""
    flags = {"users": "--user-features", "items": "--item-features", "user_spec": "--user-features-spec",
             "item_spec": "--item-features-spec"}
    parts = []
    for name, flag in flags.items():
        value = getattr(features, name)
        for v in [] if value is None else (value if isinstance(value, list | tuple) else [value]):
            shown = os.fspath(v) if isinstance(v, str | os.PathLike) else "(given in memory)"
            parts.append(f"{flag} {' '.join(shown.split())}")
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
    output: str | os.PathLike | None = None,
) -> TuneResult:
    """Search ``config.model``'s hyper-parameters with Optuna's TPE sampler, reporting to
    ``run`` (the search's settings, each trial as a child run, the best settings).

    ``trials`` bounds the number of trials (default 30, or none with a budget);
    ``time_budget`` (seconds, or ``"5m"``) bounds the whole search, loading included. The
    rest of the protocol (the first trial, relative dimensions, ``split="none"``, feature
    tables) is in the module's docstring. Never evaluates on the test part of the split.
    ``output``: where to write the best settings (:meth:`TuneResult.write_config`), checked
    before the search starts.
    """
    start = time.perf_counter()
    features = features or FeatureTables()
    if output is not None:
        check_output(output, TUNED_CONFIG, inputs=[data, features.users, features.items])
    budget, trials = _limits(trials, time_budget, validation_fraction)
    config.check()
    search = _search_space(config, space)
    k = _cut_off(metric)
    _record_settings(run, config, data, search, metric=metric, validation_fraction=validation_fraction,
                     trials=trials, time_budget=time_budget)
    train, fit_part, valid = _parts(data, config, read_options, features, validation_fraction)
    fixed = config.model_params()
    objective = _objective(config.model, fixed, search, fit_part, valid, metric, k)

    def report(number: int, params: dict[str, Any], value: float | None, seconds: float, state: str,
               error: str | None = None) -> None:
        _record_trial(run, number, params, value, seconds, error or state, metric)
        if on_trial is not None:
            on_trial(number, params, value, seconds, state)

    label = f"tuning {config.model}"
    study, rows = _search(objective, search, config, trials, budget, start, metric, report, progress, label)
    best = study.best_trial
    # Relative values become absolute on the whole training part, the data train will fit.
    best_params = {k: v for k, v in absolute(config.model, fixed, search, best.params, train).items() if k in search}
    result = TuneResult(config=dataclasses.replace(config, params={**config.params, **best_params}),
                        best_params=best_params, best_value=float(best.value), metric=metric,
                        trials=pd.DataFrame(rows), seconds=time.perf_counter() - start, features=features,
                        run_id=run.run_id)
    _record_best(run, result)
    if output is not None:
        result.config_path = result.write_config(output)
    return result


def _record_settings(run: Run, config: TrainConfig, data: DataSource, search: Mapping[str, Dimension], *,
                     metric: str, validation_fraction: float, trials: int | None,
                     time_budget: float | str | None) -> None:
    run.log_params({**config_params(config), "metric": metric, "validation_fraction": validation_fraction,
                    **({"trials": trials} if trials is not None else {}),
                    **({"time_budget": time_budget} if time_budget is not None else {})})
    run.log_params(data_params(data))
    run.log_text("\n".join(describe_space(search)) + "\n", "search_space.txt")


def _objective(model: str, fixed: dict[str, Any], search: Mapping[str, Dimension], fit_part: Interactions,
               valid: Interactions, metric: str, k: int) -> Callable[[dict[str, Any]], float]:
    """A trial: fit on ``fit_part`` with ``params`` (relative ones made absolute on it), score
    ``metric`` on the validation part."""

    def objective(params: dict[str, Any]) -> float:
        fitted = create_model(model, **absolute(model, fixed, search, params, fit_part)).fit(fit_part)
        value = evaluate(fitted, valid, ks=[k]).metrics.get(metric)
        if value is None:
            raise ConfigError(f"unknown metric {metric!r}")
        return float(value)

    return objective


def _limits(trials: int | None, time_budget: float | str | None,
            validation_fraction: float) -> tuple[float | None, int | None]:
    """(budget in seconds or None, trial count or None): 30 trials unless a budget is given."""
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
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
    full = load_training_data(data, config, read_options, features).interactions
    if config.split == "none":
        train = full  # the data is all training data (the user holds a test file of their own)
    else:
        train, _test = split_data(full, config)
        del _test  # set aside: nothing below may see it
    fit_part, valid = validation_split(train, validation_fraction, config.seed)
    return train, fit_part, valid


def _search(objective: Callable[[dict[str, Any]], float], search: Mapping[str, Dimension], config: TrainConfig,
            trials: int | None, budget: float | None, start: float, metric: str,
            report: Callable[..., None], progress: bool, label: str) -> tuple[Any, list[dict[str, Any]]]:
    """Run the Optuna study (the defaults first) within the trial count and the budget."""
    import optuna

    rows: list[dict[str, Any]] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    study.enqueue_trial(default_point(config.model, search))

    def trial_value(trial: optuna.Trial) -> float:
        began = time.perf_counter()
        try:
            value = objective({name: dim.suggest(trial, name) for name, dim in search.items()})
        except Exception as exc:  # kept for the trial's run; Optuna records the trial failed
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
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
            report(trial.number, dict(trial.params), trial.value, seconds, state, trial.user_attrs.get("error"))
            best = study.best_value if any(t.value is not None for t in study.trials) else float("nan")
            bar.advance(1, best=best)

        # A trial that fails (a diverging setting, a bad combination) is recorded as failed
        # and the search goes on; programming errors still surface.
        study.optimize(trial_value, n_trials=trials, timeout=left, callbacks=[after, within_budget],
                       catch=(RecsysError, FloatingPointError, RuntimeError))
    if not any(t.value is not None and math.isfinite(t.value) for t in study.trials):
        raise RecsysError(f"no trial of {config.model} completed; see the failed trials' errors with --debug")
    return study, rows


class TrialFailed(Exception):
    """Ends a failed trial's child run as FAILED, with the trial's own error (which Optuna
    caught) as its message."""


def _record_trial(run: Run, number: int, params: Mapping[str, Any], value: float | None, seconds: float,
                  state: str, metric: str) -> None:
    """One trial as a child run of the search's run (``FAILED``, with the trial's error, when
    it failed: ``state`` is then that error)."""
    with contextlib.suppress(TrialFailed), run.child(f"trial-{number}", kind="trial") as child:
        child.log_params({**params, "trial": number})
        child.log_metrics({"seconds": seconds, **({f"val_{metric}": value} if value is not None else {})})
        if state != "complete":
            raise TrialFailed(state)


def _record_best(run: Run, result: TuneResult) -> None:
    run.log_params(result.best_params, prefix="best.")
    run.log_metrics({f"best_{result.metric}": result.best_value, "tune_seconds": result.seconds})
    run.log_table(result.trials, "trials.csv")
    run.log_text(settings_toml(result.config), "best_config.toml")

