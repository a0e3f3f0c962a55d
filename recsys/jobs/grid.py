"""Experiment grids: data sets x splits x models x hyper-parameter grids, one child run each.

A grid file (TOML)::

    experiment = "ml-100k"        # MLflow experiment (default: the file's name)
    metric = "ndcg@10"            # the leaderboard's order
    k = [10, 20]

    [[datasets]]
    name = "ml-100k"
    path = "$DATA/ml-100k/u.data"   # relative paths: to this file; $VARS expanded
    read = { sep = "\\t", header = false }     # reader options (optional)

    [[splits]]
    strategy = "user"             # as recsys train --split
    test_fraction = 0.2
    seed = 0

    [[models]]
    model = "als"
    params = { epochs = 15 }      # fixed
    grid = { factors = [32, 64], regularization = [0.01, 0.1] }   # every combination

:func:`run_grid` reports to one run (the grid's parent run: ``recsys.kind = grid``) and
trains every combination in a child run (recorded like ``recsys train``: parameters,
per-epoch figures, test metrics, the model). A combination that fails is recorded
``FAILED`` with its error and the grid goes on. The leaderboard (sorted by ``metric``) is
returned and logged on the parent as ``leaderboard.csv`` and ``leaderboard.md``;
:func:`recsys.tracking.leaderboard` rebuilds it from the store (``recsys experiment show``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import ConfigError, RecsysError, TrackingError
from recsys.evaluation.full_ranking import DEFAULT_KS
from recsys.jobs.config import read_toml
from recsys.jobs.record import data_params
from recsys.jobs.settings import ReadOptions, TrainConfig, load
from recsys.leaderboard import board, to_markdown
from recsys.models import MODELS
from recsys.runs import Run

_KEYS = {"experiment", "metric", "k", "datasets", "splits", "models", "validation_fraction",
         "log_models", "description"}
_SPLIT_KEYS = {"strategy", "test_fraction", "n", "seed"}


@dataclass
class Dataset:
    name: str
    path: Path
    read: dict[str, Any] = field(default_factory=dict)


@dataclass
class SplitSpec:
    strategy: str = "user"
    test_fraction: float = 0.2
    n: int = 1
    seed: int = 0

    def describe(self) -> str:
        detail = f"n={self.n}" if self.strategy == "last-n" else f"{self.test_fraction:g}"
        return f"{self.strategy}:{detail}:seed{self.seed}"


@dataclass
class ModelGrid:
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def settings(self) -> Iterator[dict[str, Any]]:
        names = list(self.grid)
        for values in itertools.product(*(self.grid[n] for n in names)):
            yield dict(zip(names, values))


@dataclass
class Grid:
    """A parsed grid file."""

    experiment: str
    metric: str
    ks: tuple[int, ...]
    datasets: list[Dataset]
    splits: list[SplitSpec]
    models: list[ModelGrid]
    validation_fraction: float | None = None
    log_models: bool = True
    source: Path | None = None

    def combinations(self) -> Iterator[Combination]:
        for dataset, split, spec in itertools.product(self.datasets, self.splits, self.models):
            for varied in spec.settings():
                config = TrainConfig(
                    model=spec.model, params={**spec.params, **varied}, split=split.strategy,
                    test_fraction=split.test_fraction, split_n=split.n, seed=split.seed, ks=self.ks,
                    validation_fraction=self.validation_fraction,
                    validation_metric=f"recall@{max(self.ks)}",
                )
                yield Combination(dataset, split, config, varied)

    def __len__(self) -> int:
        per_model = sum(math.prod(len(v) for v in m.grid.values()) for m in self.models)
        return len(self.datasets) * len(self.splits) * per_model


@dataclass
class Combination:
    dataset: Dataset
    split: SplitSpec
    config: TrainConfig
    varied: dict[str, Any]

    @property
    def name(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.varied.items())
        return f"{self.dataset.name} {self.split.strategy} {self.config.model} {params}".strip()


def read_grid(path: str | Path) -> Grid:
    """Parse and check a grid file (paths of data sets are relative to the file)."""
    path = Path(path)
    spec = read_toml(path)
    where = str(path)
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    ks, metric = _cut_offs(spec, where)
    grid = Grid(
        experiment=str(spec.get("experiment", path.stem)), metric=metric, ks=ks,
        datasets=[_dataset(entry, path) for entry in _tables(spec, "datasets", where)],
        splits=[_split(entry, where) for entry in spec.get("splits", [{}])],
        models=[_model_grid(entry, where) for entry in _tables(spec, "models", where)],
        validation_fraction=spec.get("validation_fraction"),
        log_models=bool(spec.get("log_models", True)), source=path,
    )
    for combo in grid.combinations():
        try:
            combo.config.check()  # a bad split or setting stops here, not once per combination
        except ConfigError as exc:
            raise ConfigError(f"{where}: {combo.name}: {exc}") from None
    return grid


def _dataset(entry: dict[str, Any], grid_file: Path) -> Dataset:
    where = str(grid_file)
    if "path" not in entry:
        raise ConfigError(f"{where}: every [[datasets]] entry needs a path")
    data_path = Path(os.path.expandvars(str(entry["path"]))).expanduser()
    if "$" in str(data_path):
        raise ConfigError(f"{where}: data set path {entry['path']!r} names an unset environment variable")
    if not data_path.is_absolute():
        data_path = (grid_file.parent / data_path).resolve()
    if not data_path.is_file():
        raise ConfigError(f"{where}: data set {entry['path']!r}: no such file ({data_path})")
    read = dict(entry.get("read", {}))
    try:
        ReadOptions(**read)
    except TypeError as exc:
        raise ConfigError(f"{where}: data set {entry['path']!r}: bad read options ({exc})") from None
    return Dataset(str(entry.get("name", data_path.stem)), data_path, read)


def _split(entry: Any, where: str) -> SplitSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: every [[splits]] entry is a table, got {entry!r}")
    bad = sorted(set(entry) - _SPLIT_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown split keys {', '.join(bad)}; known: {', '.join(sorted(_SPLIT_KEYS))}")
    return SplitSpec(**entry)


def _model_grid(entry: dict[str, Any], where: str) -> ModelGrid:
    name = entry.get("model")
    if name not in MODELS:
        raise ConfigError(f"{where}: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    rename = MODELS[name].rename_param  # a grid written for an earlier version
    grid = {}
    for key, values in dict(entry.get("grid", {})).items():
        renamed = [rename(key, v) for v in (values if isinstance(values, list) else [values])]
        grid[renamed[0][0] if renamed else key] = [v for _, v in renamed]
    params = MODELS[name].rename_params(dict(entry.get("params", {})))
    known = set(MODELS[name].param_names())
    bad = sorted((set(grid) | set(params)) - known)
    if bad:
        raise ConfigError(f"{where}: model {name!r} has no hyper-parameter {', '.join(bad)}; it takes {', '.join(sorted(known))}")
    if any(not v for v in grid.values()):
        raise ConfigError(f"{where}: a grid of model {name!r} lists no values")
    return ModelGrid(name, params, grid)


def _cut_offs(spec: dict[str, Any], where: str) -> tuple[tuple[int, ...], str]:
    """The grid's cut-offs and its leaderboard metric (which must be at one of them)."""
    ks = spec.get("k", DEFAULT_KS)
    if not isinstance(ks, list | tuple) or not ks or not all(type(k) is int and k > 0 for k in ks):
        raise ConfigError(f"{where}: k must be a list of positive integers, e.g. k = [10, 20], got {ks!r}")
    ks = tuple(ks)
    metric = str(spec.get("metric", f"ndcg@{ks[0]}"))
    cut = metric.partition("@")[2]
    if cut and not cut.isdigit():
        raise ConfigError(f"{where}: metric must look like 'ndcg@10', got {metric!r}")
    if cut and int(cut) not in ks:
        raise ConfigError(f"{where}: metric {metric} needs k = {cut} in k = {list(ks)}")
    return ks, metric


def _tables(spec: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    entries = spec.get(key)
    if not entries or not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: needs at least one [[{key}]] table")
    return entries


@dataclass
class GridResult:
    """The parent run's id and the leaderboard of its combinations."""

    run_id: str | None
    leaderboard: pd.DataFrame
    failed: int


def run_grid(grid: Grid, run: Run, *, progress: bool = False,
             on_combination: Callable[[Combination, str, float | None], None] | None = None) -> GridResult:
    """Train and evaluate every combination of ``grid``, each in a child run of ``run``."""
    from recsys.jobs.training import train

    if not run.recording:
        raise ConfigError("an experiment grid is recorded in MLflow; it cannot run with tracking off")
    run.log_params({"metric": grid.metric, "ks": ",".join(map(str, grid.ks)), "combinations": len(grid),
                    "grid_file": str(grid.source) if grid.source else None})
    if grid.source is not None:
        run.log_text(grid.source.read_text(encoding="utf-8"), grid.source.name)
    cache: dict[str, Any] = {}
    rows = []
    first_failure = None
    for combo in grid.combinations():
        tags = {"recsys.dataset": combo.dataset.name, "recsys.split": combo.split.describe(),
                "recsys.combination": combo.name, "recsys.params": _params_text(combo.varied)}
        row = {"dataset": combo.dataset.name, "split": combo.split.describe(), "model": combo.config.model,
               "params": tags["recsys.params"], "status": "FAILED"}
        try:
            with run.child(combo.name, kind="train", tags=tags, keeps_models=grid.log_models) as child:
                row["run_id"] = child.run_id
                if combo.dataset.name not in cache:
                    data = load(combo.dataset.path, ReadOptions(**combo.dataset.read))
                    cache[combo.dataset.name] = (data, data_params(combo.dataset.path))
                data, info = cache[combo.dataset.name]
                result = train(data, combo.config, run=child, save=False, progress=progress, data_info=info)
            metrics = {} if result.evaluation is None else result.evaluation.metrics
            note = None if result.evaluation is None else result.evaluation.extra.get("note")
            row.update(metrics, status="FINISHED", fit_seconds=result.seconds["fit"])
            value, state = metrics.get(grid.metric), f"finished, no metrics: {note}" if note else "finished"
        except TrackingError:
            raise
        except Exception as exc:  # recorded FAILED by the child run; the grid goes on
            value, state = None, f"failed: {type(exc).__name__}: {exc}"
            first_failure = first_failure or f"{combo.name}: {exc}"
        rows.append(row)
        if on_combination is not None:
            on_combination(combo, state, value)
    result = _record_board(run, grid, rows)
    if rows and result.failed == len(rows):
        # Nothing to compare: an error (exit 2), not an empty leaderboard.
        raise RecsysError(f"all {len(rows)} combinations failed; the first, {first_failure}")
    return result


def _params_text(varied: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in varied.items())


def _record_board(run: Run, grid: Grid, rows: list[dict[str, Any]]) -> GridResult:
    table = board(rows, grid.metric)
    failed = sum(row["status"] != "FINISHED" for row in rows)
    run.log_table(table, "leaderboard.csv")
    run.log_text(to_markdown(table), "leaderboard.md")
    if len(table) and table.iloc[0]["status"] == "FINISHED":
        run.log_metrics({f"best_{grid.metric}": table.iloc[0][grid.metric]})
        run.set_tags({"recsys.best_run": table.iloc[0]["run_id"]})
    run.log_metrics({"failed_combinations": failed})
    return GridResult(run.run_id, table, failed)
