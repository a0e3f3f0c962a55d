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

:func:`run_grid` records one parent run (``recsys.kind = grid``) and every combination
as a child run (recorded like ``recsys train``: parameters, per-epoch figures, test
metrics, the model). A combination that fails is recorded ``FAILED`` with its error and
the grid goes on. The leaderboard (sorted by ``metric``) is returned and logged on the
parent as ``leaderboard.csv`` and ``leaderboard.md``; :func:`leaderboard` rebuilds it from
the store (``recsys experiment show NAME``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import ConfigError, TrackingError
from recsys.tracking.tracker import Tracker, metric_key

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
        from recsys.workflows import TrainConfig

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
    config: Any  # TrainConfig
    varied: dict[str, Any]

    @property
    def name(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.varied.items())
        return f"{self.dataset.name} {self.split.strategy} {self.config.model} {params}".strip()


def read_grid(path: str | Path) -> Grid:
    """Parse and check a grid file (paths of data sets are relative to the file)."""
    from recsys.config import read_toml
    from recsys.evaluation.evaluate import DEFAULT_KS
    from recsys.models import MODELS
    from recsys.workflows import ReadOptions

    path = Path(path)
    spec = read_toml(path)
    where = str(path)
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    datasets = []
    for entry in _tables(spec, "datasets", where):
        if "path" not in entry:
            raise ConfigError(f"{where}: every [[datasets]] entry needs a path")
        data_path = Path(os.path.expandvars(str(entry["path"]))).expanduser()
        if "$" in str(data_path):
            raise ConfigError(f"{where}: data set path {entry['path']!r} names an unset environment variable")
        if not data_path.is_absolute():
            data_path = (path.parent / data_path).resolve()
        if not data_path.is_file():
            raise ConfigError(f"{where}: data set {entry['path']!r}: no such file ({data_path})")
        read = dict(entry.get("read", {}))
        try:
            ReadOptions(**read)
        except TypeError as exc:
            raise ConfigError(f"{where}: data set {entry['path']!r}: bad read options ({exc})") from None
        datasets.append(Dataset(str(entry.get("name", data_path.stem)), data_path, read))
    splits = []
    for entry in spec.get("splits", [{}]):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: every [[splits]] entry is a table, got {entry!r}")
        bad = sorted(set(entry) - _SPLIT_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown split keys {', '.join(bad)}; known: {', '.join(sorted(_SPLIT_KEYS))}")
        splits.append(SplitSpec(**entry))
    models = []
    for entry in _tables(spec, "models", where):
        name = entry.get("model")
        if name not in MODELS:
            raise ConfigError(f"{where}: unknown model {name!r}; choose one of {', '.join(MODELS)}")
        grid = {k: v if isinstance(v, list) else [v] for k, v in dict(entry.get("grid", {})).items()}
        params = dict(entry.get("params", {}))
        known = set(MODELS[name].param_names())
        bad = sorted((set(grid) | set(params)) - known)
        if bad:
            raise ConfigError(f"{where}: model {name!r} has no hyper-parameter {', '.join(bad)}; it takes {', '.join(sorted(known))}")
        if any(not v for v in grid.values()):
            raise ConfigError(f"{where}: a grid of model {name!r} lists no values")
        models.append(ModelGrid(name, params, grid))
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
    grid = Grid(
        experiment=str(spec.get("experiment", path.stem)), metric=metric, ks=ks, datasets=datasets,
        splits=splits, models=models, validation_fraction=spec.get("validation_fraction"),
        log_models=bool(spec.get("log_models", True)), source=path,
    )
    for combo in grid.combinations():
        try:
            combo.config.check()  # a bad split or setting stops here, not once per combination
        except ConfigError as exc:
            raise ConfigError(f"{where}: {combo.name}: {exc}") from None
    return grid


def _tables(spec: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    entries = spec.get(key)
    if not entries or not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: needs at least one [[{key}]] table")
    return entries


@dataclass
class GridResult:
    """The parent run's id and the leaderboard of its combinations."""

    run_id: str
    leaderboard: pd.DataFrame
    failed: int


def run_grid(grid: Grid, tracker: Tracker, *, progress: bool = False,
             on_combination: Callable[[Combination, str, float | None], None] | None = None) -> GridResult:
    """Train and evaluate every combination of ``grid`` as child runs of one parent run."""
    from recsys.tracking.jobs import data_params, train
    from recsys.workflows import ReadOptions, load

    if not tracker.enabled:
        raise ConfigError("an experiment grid is recorded in MLflow; it cannot run with tracking off")
    tracker = Tracker(tracker.uri, tracker.experiment, log_models=grid.log_models, timeout=tracker.timeout)
    name = f"grid-{grid.source.stem if grid.source else grid.experiment}"
    failed = 0
    with tracker.run(name, kind="grid") as parent:
        parent.log_params({"metric": grid.metric, "ks": ",".join(map(str, grid.ks)), "combinations": len(grid),
                           "grid_file": str(grid.source) if grid.source else None})
        if grid.source is not None:
            parent.log_text(grid.source.read_text(encoding="utf-8"), grid.source.name)
        cache: dict[str, Any] = {}
        for combo in grid.combinations():
            tags = {"recsys.dataset": combo.dataset.name, "recsys.split": combo.split.describe(),
                    "recsys.combination": combo.name,
                    "recsys.params": " ".join(f"{k}={v}" for k, v in combo.varied.items())}
            try:
                if combo.dataset.name not in cache:
                    data = load(combo.dataset.path, ReadOptions(**combo.dataset.read))
                    cache[combo.dataset.name] = (data, data_params(combo.dataset.path))
                data, info = cache[combo.dataset.name]
                result = train(data, combo.config, tracker=tracker, run_name=combo.name, tags=tags,
                               nested=True, save=False, progress=progress, data_info=info)
                value = None if result.evaluation is None else result.evaluation.metrics.get(grid.metric)
                note = None if result.evaluation is None else result.evaluation.extra.get("note")
                state = f"finished, no metrics: {note}" if note else "finished"
            except TrackingError:
                raise
            except Exception as exc:  # recorded FAILED by the child run; the grid goes on
                failed += 1
                value, state = None, f"failed: {type(exc).__name__}: {exc}"
            if on_combination is not None:
                on_combination(combo, state, value)
        board = leaderboard(tracker, parent_run_id=parent.run_id, metric=grid.metric)
        parent.log_table(board, "leaderboard.csv")
        parent.log_text(to_markdown(board), "leaderboard.md")
        best = board.iloc[0] if len(board) and board.iloc[0]["status"] == "FINISHED" else None
        if best is not None:
            parent.log_metrics({f"best_{grid.metric}": best[grid.metric]})
            parent.set_tags({"recsys.best_run": best["run_id"]})
        parent.log_metrics({"failed_combinations": failed})
    return GridResult(parent.run_id, board, failed)


def leaderboard(tracker: Tracker, *, experiment: str | None = None, parent_run_id: str | None = None,
                metric: str | None = None, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The runs of a grid (its latest one in ``experiment`` unless ``parent_run_id``), best first.

    Without any grid in the experiment, its ``recsys train`` runs are ranked instead.
    Failed runs come last with empty metrics.
    """
    client = tracker.client()
    if parent_run_id is None:
        name = experiment or tracker.experiment
        found = client.get_experiment_by_name(name)
        if found is None:
            raise TrackingError(f"no experiment {name!r} in {tracker.uri}")
        ids = [found.experiment_id]
        parents = client.search_runs(ids, "tags.`recsys.kind` = 'grid'", order_by=["attributes.start_time DESC"],
                                     max_results=1)
        if parents:
            parent_run_id = parents[0].info.run_id
            runs = client.search_runs(ids, f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000)
        else:
            runs = client.search_runs(ids, "tags.`recsys.kind` = 'train'", max_results=10000)
    else:
        parent = client.get_run(parent_run_id)
        ids = [parent.info.experiment_id]
        runs = client.search_runs(ids, f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000)
    if metric is None:
        metric = client.get_run(parent_run_id).data.params.get("metric", "ndcg@10") if parent_run_id else "ndcg@10"
    return _board(runs, metric, columns)


def _board(runs: Sequence[Any], metric: str, columns: Sequence[str]) -> pd.DataFrame:
    shown = [metric, *[c for c in columns if c != metric]]
    if not columns:
        k = metric.split("@")[1] if "@" in metric else "10"
        shown += [m for m in (f"recall@{k}", f"ndcg@{k}", f"map@{k}", f"coverage@{k}") if m != metric]
    rows = []
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        model = params.get("model", tags.get("recsys.model", ""))
        setting = tags.get("recsys.params") or " ".join(
            f"{k}={params[k]}" for k in ("factors", "regularization", "epochs", "loss") if params.get(k) not in (None, "None"))
        row = {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "dataset": tags.get("recsys.dataset", Path(params.get("data_path", "")).name),
            "split": tags.get("recsys.split", params.get("split", "")),
            "model": model,
            "params": setting,
        }
        for name in shown:
            row[name] = metrics.get(metric_key(name), math.nan)
        row["fit_seconds"] = metrics.get("fit_seconds", math.nan)
        rows.append(row)
    columns_out = ["run_id", "status", "dataset", "split", "model", "params", *shown, "fit_seconds"]
    board = pd.DataFrame(rows, columns=columns_out)
    board = board.sort_values(metric, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    board.index = board.index + 1
    board.index.name = "rank"
    return board


def to_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table (run ids shortened to 8 characters)."""
    frame = board.copy()
    frame["run_id"] = frame["run_id"].str[:8]
    header = "| rank | " + " | ".join(frame.columns) + " |"
    lines = [header, "|" + "---|" * (len(frame.columns) + 1)]
    for rank, row in frame.iterrows():
        cells = [_cell(v) for v in row.tolist()]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)
