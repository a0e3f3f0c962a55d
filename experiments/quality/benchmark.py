"""The quality benchmark: recsys's defaults against implicit's ALS tuned on each data set.

One script, one config per data set (``configs/<name>.toml``: the files, the seeds), and
every stage's output in ``results/<data set>.<stage>.<date>.<commit>.json``; the README's
table is generated from the newest of each (``table``). Run from the repository root:

    python -m experiments.quality.benchmark reference --dataset amazon-book
    python -m experiments.quality.benchmark rules --dataset amazon-book
    python -m experiments.quality.benchmark lodo
    python -m experiments.quality.benchmark test --dataset amazon-book
    python -m experiments.quality.benchmark tune --dataset amazon-book --budget 300
    python -m experiments.quality.benchmark table

Protocol (the README says why):

- test split: the data set's own (amazon-book), else the per-user 80/20 holdout that
  ``recsys train`` makes with each seed; full ranking over every item, training items
  excluded; recall@20 (hits / relevant) and NDCG@20.
- validation split: a per-user 20% carved out of the first seed's training part, as
  ``recsys tune`` carves it. Every choice (the reference's settings, the rules' constants,
  the tuned configs) is made on it; test is scored only by ``test`` and ``tune``'s final
  refit, once per setting.
- reference: implicit's ``AlternatingLeastSquares`` called directly, tuned on validation by
  a grid then a coordinate search (``reference``); fit times on the same cores as ours.
- rules: the constants of the ``"auto"`` rules (``recsys/models/auto.py``) scored on
  validation over a grid (``rules``), and chosen leave-one-data-set-out (``lodo``): for each
  data set, the constants that do best in the worst case over the other three, then checked
  on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from experiments.common import (
    DATA_DIR,
    ImplicitALS,
    latest_result,
    machine_words,
    mean_std,
    publish_table,
    result_files,
    stamp,
    write_result,
)
from experiments.common import train_as_a_user as common_train_as_a_user
from recsys.data.interactions import Interactions
from recsys.evaluation import Validation
from recsys.evaluation.full_ranking import evaluate
from recsys.jobs import TrainConfig, load, split_data, validation_split
from recsys.models import auto, create_model
from recsys.models.als import confidence
from recsys.models.auto import DataShape
from recsys.models.base import Recommender

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATASETS = ("ml-100k", "ml-latest-small", "lastfm-2k", "amazon-book")
K = 20


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    name: str
    data: Path
    test: Path | None
    seeds: tuple[int, ...]


def read_config(name: str, data_dir: Path = DATA_DIR) -> Config:
    spec = tomllib.loads((HERE / "configs" / f"{name}.toml").read_text())
    data = Path(data_dir) / spec["data"]
    if not data.is_file():
        raise SystemExit(f"{data}: not found; give --data-dir (or set RECSYS_BENCHMARK_DATA) to the folder of the public data sets")
    test = Path(data_dir) / spec["test"] if "test" in spec else None
    return Config(name, data, test, tuple(spec["seeds"]))


_LOADED: dict[tuple[Path, Path | None], tuple[Interactions, Interactions | None]] = {}


def _read(config: Config) -> tuple[Interactions, Interactions | None]:
    key = (config.data, config.test)
    if key not in _LOADED:
        full = load(config.data)
        test = None if config.test is None else load(config.test).reindex(full.users, full.items)[0]
        _LOADED[key] = (full, test)
    return _LOADED[key]


def test_split(config: Config, seed: int) -> tuple[Interactions, Interactions]:
    """The training and test parts for ``seed``, exactly as ``recsys train`` makes them."""
    full, test = _read(config)
    if test is not None:
        return full, test
    return split_data(full, TrainConfig(seed=seed))


def validation_part(config: Config) -> tuple[Interactions, Interactions]:
    """The part every choice is fitted on, and the validation part it is scored on."""
    train, _ = test_split(config, config.seeds[0])
    return validation_split(train, 0.2, config.seeds[0])


# -- scoring ------------------------------------------------------------------------------
def scores(model: Recommender, data: Interactions) -> dict[str, float]:
    metrics = evaluate(model, data, ks=[K]).metrics
    return {"recall": metrics[f"recall@{K}"], "ndcg": metrics[f"ndcg@{K}"]}


class ScoreAt(Validation):
    """Scores the model at the given epochs: as implicit's per-iteration callback, or as the
    shared epoch loop's validation (which exports an iterative model's factors for it, every
    ``gcd(epochs)`` epochs). The training time it reports leaves the scoring out."""

    def __init__(self, data: Interactions, epochs: Iterable[int]) -> None:
        self.epochs = set(epochs)
        super().__init__(data, f"recall@{K}", every=math.gcd(*self.epochs))
        self.rows: list[dict[str, Any]] = []
        self.start, self.scoring, self.scored = time.perf_counter(), 0.0, 0

    def __call__(self, model: Recommender, epoch: int) -> None:
        if epoch not in self.epochs:
            return
        began = time.perf_counter()
        train_seconds = began - self.start - self.scoring
        self.rows.append({"epoch": epoch, **scores(model, self.data), "train_seconds": train_seconds})
        self.scoring += time.perf_counter() - began

    def score(self, model: Recommender) -> float:
        # The loop calls this every `every` epochs and at the last, which is a multiple of it
        # here (the largest of the epochs): the count of calls gives the epoch.
        self.scored += self.every
        self(model, self.scored)
        return self.rows[-1]["recall"] if self.rows and self.rows[-1]["epoch"] == self.scored else float("nan")


def quality(row: dict[str, float], reference: dict[str, float]) -> float:
    """The worse of recall and NDCG, each as a share of the reference's: the figure every
    choice here maximizes (a setting must hold on both metrics)."""
    return min(row["recall"] / reference["recall"], row["ndcg"] / reference["ndcg"])


# -- the reference: implicit's ALS tuned on validation --------------------------------------
REFERENCE_EPOCHS = (10, 15, 25)


def weightings(data: Interactions) -> list[str]:
    """The confidence weightings worth trying: binary or linear for ratings, binary or log for
    counts (binary only when every value is 1: the others only rescale alpha)."""
    if np.all(data.matrix.data == 1):
        return ["binary"]
    return ["binary", "linear"] if data.feedback == "rating" else ["binary", "log"]


def fit_reference(params: dict[str, Any], fit: Interactions, validation: Interactions) -> list[dict[str, Any]]:
    model = ImplicitALS(iterations=max(REFERENCE_EPOCHS), num_threads=0, **params)
    scorer = ScoreAt(validation, REFERENCE_EPOCHS)
    model.fit(fit, callback=scorer)
    return [{**params, **row} for row in scorer.rows]


def reference_search(fit: Interactions, validation: Interactions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """A grid at 128 factors, then the factors, then alpha and lambda coordinate-wise until the
    best stops moving. The grid is laid out relative to the data (alpha so that the observed
    confidences are 0.1%-10% of the unobserved weight, lambda a share of a user's mean
    confidence); the coordinate steps then move freely."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple] = set()

    def run(params: dict[str, Any]) -> None:
        key = tuple(sorted(params.items()))
        if key in seen:
            return
        seen.add(key)
        new = fit_reference(params, fit, validation)
        rows.extend(new)
        top = max(new, key=lambda r: r["recall"])
        log(f"  {params} -> recall {top['recall']:.4f} ndcg {top['ndcg']:.4f} (epoch {top['epoch']}, {top['train_seconds']:.1f}s)")

    def best() -> dict[str, Any]:
        ref = {"recall": max(r["recall"] for r in rows), "ndcg": max(r["ndcg"] for r in rows)}
        return max(rows, key=lambda r: quality(r, ref))

    for weighting in weightings(fit):
        density = DataShape.of(fit.matrix, fit.feedback, confidence(fit.matrix, fit.feedback, weighting, 1.0)).confidence_density
        for share, lam in itertools.product((0.001, 0.003, 0.01, 0.03, 0.1), (0.01, 0.1, 1.0)):
            alpha = share / density
            run({"factors": 128, "weighting": weighting, "alpha": _round(alpha), "regularization": _round(lam * share * fit.n_items)})
    top = best()
    for factors in (64, 256, 512):
        run({**_settings(top), "factors": factors})
    for _ in range(4):
        top = best()
        for name, step in (("alpha", 2.0), ("regularization", 3.0)):
            for scale in (1 / step, step):
                run({**_settings(top), name: _round(top[name] * scale)})
        if best() is top:
            break
    return rows


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("factors", "weighting", "alpha", "regularization")}


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def stage_reference(config: Config, log: Callable[[str], None]) -> None:
    fit, validation = validation_part(config)
    log(f"{config.name}: reference search on validation ({fit.nnz:,} pairs fitted, {validation.nnz:,} held out)")
    rows = reference_search(fit, validation, log)
    ref = {"recall": max(r["recall"] for r in rows), "ndcg": max(r["ndcg"] for r in rows)}
    pick = max(rows, key=lambda r: quality(r, ref))
    log(f"{config.name}: reference pick {pick}")
    write_result(RESULTS, f"{config.name}.reference", {"rows": rows, "pick": pick, "epochs": REFERENCE_EPOCHS})


# -- the rules' constants ------------------------------------------------------------------
RULE_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    # ALS: alpha = share / density, lambda = ridge * alpha * density * n_items (recsys.models.auto)
    "als": {"share": (0.003, 0.01, 0.03, 0.1), "ridge": (0.03, 0.1, 0.3, 1.0)},
    # iALS: alpha0 = ratio * density, lambda as given (frequency-scaled, nu = 1)
    "ials": {"ratio": (3.0, 10.0, 30.0), "regularization": (0.003, 0.01, 0.03)},
}
RULE_EPOCHS = {"als": (5, 10, 15, 25), "ials": (4, 8, 12, 16)}


def rule_params(model: str, data: Interactions, constants: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters the library's rules give ``data`` with these constants."""
    shape = DataShape.of(data.matrix, data.feedback, confidence(data.matrix, data.feedback, "auto", 1.0))
    if model == "als":
        alpha = auto.confidence_scale(shape, constants["share"])
        return {"alpha": alpha, "regularization": auto.ridge(shape, alpha, constants["ridge"])}
    return {"unobserved_weight": auto.unobserved_weight(shape, constants["ratio"]),
            "regularization": constants["regularization"]}


def stage_rules(config: Config, log: Callable[[str], None], model: str, grid: dict[str, tuple[Any, ...]],
                factors: Sequence[int], epochs: Sequence[int] | None = None) -> None:
    marks = tuple(epochs or RULE_EPOCHS[model])
    fit, validation = validation_part(config)
    rows = []
    names = sorted(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        constants = dict(zip(names, values))
        for f in factors:
            params = {**rule_params(model, fit, constants), "factors": f, "epochs": max(marks)}
            scorer = ScoreAt(validation, marks)
            create_model(model, **params).fit(fit, validation=scorer)
            rows += [{**constants, "factors": f, **row} for row in scorer.rows]
            top = max(scorer.rows, key=lambda r: r["recall"])
            log(f"  {model} {constants} {f} factors -> recall {top['recall']:.4f} ndcg {top['ndcg']:.4f} "
                f"(epoch {top['epoch']}, {top['train_seconds']:.1f}s)")
    name = f"{config.name}.rules-{model}"
    keys = sorted({k for r in rows for k in r} - {"recall", "ndcg", "train_seconds"})
    write_result(RESULTS, name, {"model": model, "rows": _merged(name, rows, keys)})


def rule_rows(name: str, model: str) -> list[dict[str, Any]]:
    """Every rules row of a data set and model, over all result files (a later file's row
    replaces an earlier one with the same constants)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for path in result_files(RESULTS, f"{name}.rules-{model}"):
        for row in json.loads(path.read_text())["rows"]:
            rows[candidate(row)] = row
    return list(rows.values())


def candidate(row: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in row.items() if k not in ("recall", "ndcg", "train_seconds", "stamp")))


def reference_scores(name: str) -> dict[str, float]:
    result = latest_result(RESULTS, f"{name}.reference")
    if result is None:
        raise SystemExit(f"no reference for {name}: run the reference stage first")
    return {"recall": result["pick"]["recall"], "ndcg": result["pick"]["ndcg"]}


def lodo(model: str, names: Sequence[str]) -> dict[str, Any]:
    """Leave one data set out: for each, the candidate (constants, factors, epochs) with the
    best worst-case quality over the others, and how it does on the one left out."""
    table = {}
    for name in names:
        ref = reference_scores(name)
        table[name] = {candidate(r): (quality(r, ref), r) for r in rule_rows(name, model)}
    common = set.intersection(*(set(t) for t in table.values()))
    if not common:
        raise SystemExit(f"no {model} candidate was scored on every data set")

    def cheapest_best(over: Sequence[str]) -> tuple:
        # The best worst case; among settings within 0.1% of it the best mean, and among
        # those (within 0.1% again) the cheapest: fewer factors, then fewer epochs.
        worst = {c: min(table[n][c][0] for n in over) for c in common}
        mean = {c: statistics.mean(table[n][c][0] for n in over) for c in common}
        top = max(worst.values())
        near = [c for c in common if worst[c] >= top - 1e-3]
        best_mean = max(mean[c] for c in near)
        near = [c for c in near if mean[c] >= best_mean - 1e-3]
        return min(near, key=lambda c: (dict(c)["factors"], dict(c)["epoch"], -worst[c]))

    folds = []
    for held_out in names:
        others = [n for n in names if n != held_out]
        pick = cheapest_best(others)
        best_here = max(common, key=lambda c: table[held_out][c][0])
        folds.append({
            "held_out": held_out, "pick": dict(pick),
            "chosen_on_others": min(table[n][pick][0] for n in others),
            "held_out_quality": table[held_out][pick][0],
            "held_out_row": table[held_out][pick][1],
            "held_out_best": table[held_out][best_here][0],
        })
    overall = cheapest_best(names)
    return {"model": model, "folds": folds, "pick": dict(overall),
            "pick_quality": {n: table[n][overall][0] for n in names}}


def stage_lodo(names: Sequence[str], log: Callable[[str], None]) -> None:
    for model in RULE_GRIDS:
        result = lodo(model, names)
        log(f"{model}: leave one data set out (quality = min of recall and NDCG as a share of the tuned reference, validation)")
        for fold in result["folds"]:
            log(f"  held out {fold['held_out']}: pick {fold['pick']} (worst on the others {fold['chosen_on_others']:.3f}) "
                f"-> {fold['held_out_quality']:.3f} there (its own best {fold['held_out_best']:.3f})")
        log(f"  on all four: {result['pick']} -> " + ", ".join(f"{n} {q:.3f}" for n, q in result["pick_quality"].items()))
        write_result(RESULTS, f"lodo-{model}", result)


# -- test: the reference, and recsys train as a user runs it --------------------------------
TEST_MODELS = ("als", "ials", "mf", "two-tower")


def fit_reference_for_test(config: Config, seed: int) -> dict[str, Any]:
    """The reference's validation pick, fitted on the seed's training part in one call to
    implicit (its own loop, as a user of implicit would run it) and scored on test."""
    pick = latest_result(RESULTS, f"{config.name}.reference")
    if pick is None:
        raise SystemExit(f"no reference for {config.name}: run the reference stage first")
    params = {**_settings(pick["pick"]), "iterations": pick["pick"]["epoch"]}
    train, test = test_split(config, seed)
    model = ImplicitALS(num_threads=0, random_state=seed, **params)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    return {"what": "reference", "seed": seed, "params": params, "fit_seconds": seconds, **scores(model, test)}


def train_as_a_user(config: Config, seed: int, model: str | None, params: dict[str, Any] | None = None,
                    what: str | None = None) -> dict[str, Any]:
    """:func:`experiments.common.train_as_a_user` on ``config``'s data (and test file)."""
    result, run = common_train_as_a_user(config.data, model, params, seed, k=K, test=config.test)
    return {"what": what or run["model"], "model": run["model"], "seed": seed,
            "fitted_params": run["fitted_params"], "auto": result.model.describe_auto(),
            "fit_seconds": run["fit_seconds"], "job_seconds": run["job_seconds"],
            "recall": run[f"recall@{K}"], "ndcg": run[f"ndcg@{K}"]}


def stage_test(config: Config, log: Callable[[str], None], models: Sequence[str], seeds: Sequence[int] | None,
               reference: bool = True) -> None:
    """The reference and ``recsys train``'s defaults on test, per seed; then each of
    ``models`` with its defaults (the default model itself is the "default" row)."""
    rows = []
    default = TrainConfig().model
    whats = [*(["reference", "default"] if reference else []), *(m for m in models if m != default)]
    for seed in seeds or config.seeds:
        for what in whats:
            if what == "reference":
                row = fit_reference_for_test(config, seed)
            else:
                row = train_as_a_user(config, seed, None if what == "default" else what, what=what)
            rows.append(row)
            log(f"  {config.name} seed {seed} {what}: recall {row['recall']:.4f} ndcg {row['ndcg']:.4f} "
                f"fit {row['fit_seconds']:.1f}s" + (f" (job {row['job_seconds']:.1f}s)" if "job_seconds" in row else ""))
    write_result(RESULTS, f"{config.name}.test", {"rows": _merged(f"{config.name}.test", rows, ("what", "seed")),
                                                  "default_model": default})


def _merged(name: str, rows: list[dict[str, Any]], key: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` added to those of the same commit and date already written (a run of other
    models or seeds adds to that day's file; the same model and seed is replaced)."""
    earlier = RESULTS / f"{name}.{stamp()}.json"
    kept = json.loads(earlier.read_text())["rows"] if earlier.is_file() else []
    # Each row keeps the commit that produced it: a day's file may hold several.
    rows = [{**r, "stamp": r.get("stamp", stamp())} for r in rows]
    merged = {tuple(r.get(k) for k in key): r for r in [*kept, *rows]}
    return list(merged.values())


# -- tune: recsys tune with a time budget, then its config on test ------------------------
def stage_tune(config: Config, log: Callable[[str], None], model: str, budget: str,
               seeds: Sequence[int] | None = None) -> None:
    """``recsys tune --time-budget BUDGET`` (validation only), then ``recsys train --config``
    with what it wrote, on every seed's test part."""
    from recsys.jobs import tune
    from recsys.jobs.space import parse_duration

    # The tuner carves its validation part from the first seed's training part, as above
    # (from the whole training file when the data set has its own test file: split "none").
    start = time.perf_counter()
    settings = TrainConfig(model=model, seed=config.seeds[0], ks=(K,), split="user" if config.test is None else "none")
    result = tune(config.data, settings, time_budget=budget, metric=f"recall@{K}")
    seconds = time.perf_counter() - start
    log(f"  {config.name} tune {model} {budget}: {len(result.trials)} trials in {seconds:.0f}s, "
        f"best validation recall {result.best_value:.4f} with {result.best_params}")
    rows = [train_as_a_user(config, seed, model, result.best_params, what=f"{model} tuned {budget}")
            for seed in seeds or config.seeds]
    for row in rows:
        log(f"    seed {row['seed']}: recall {row['recall']:.4f} ndcg {row['ndcg']:.4f} fit {row['fit_seconds']:.1f}s")
    write_result(RESULTS, f"{config.name}.tune-{model}-{budget}", {
        "budget_seconds": parse_duration(budget), "search_seconds": seconds, "trials": len(result.trials),
        "best_value": result.best_value, "best_params": result.best_params, "rows": rows,
        "trial_table": result.trials.to_dict(orient="records")})


# -- table: the README's tables from the newest results ----------------------------------
def _group(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["what"], []).append(row)
    return out


def quality_table(names: Sequence[str]) -> list[str]:
    """Per data set: the reference, recsys train's defaults, each model's defaults and the
    tuned configs on test; mean ± std over seeds; each as a share of the reference."""
    lines = ["| data set | what | recall@20 | NDCG@20 | share of the reference (recall / NDCG) | fit (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    machines, commits = set(), set()
    for name in names:
        result = latest_result(RESULTS, f"{name}.test")
        if result is None:
            continue
        machines.add(machine_words(result["machine"], load=False))
        commits.update(r.get("stamp", result["stamp"]).split(".", 1)[1] for r in result["rows"])
        groups = _group(result["rows"])
        tunes = [json.loads(path.read_text()) for path in RESULTS.glob(f"{name}.tune-*.json")]
        for tuned in sorted(tunes, key=lambda t: (t["budget_seconds"], t.get("written", ""))):
            commits.add(tuned["stamp"].split(".", 1)[1])
            groups.update(_group(tuned["rows"]))
        ref = groups["reference"]
        ref_recall = statistics.mean(r["recall"] for r in ref)
        ref_ndcg = statistics.mean(r["ndcg"] for r in ref)
        for what, rows in groups.items():
            label = _label(what, rows, result.get("default_model"))
            share = "" if what == "reference" else (
                f"{100 * statistics.mean(r['recall'] for r in rows) / ref_recall:.1f}% / "
                f"{100 * statistics.mean(r['ndcg'] for r in rows) / ref_ndcg:.1f}%")
            lines.append(f"| {name} | {label} | {mean_std([r['recall'] for r in rows])} | "
                         f"{mean_std([r['ndcg'] for r in rows])} | {share} | "
                         f"{mean_std([r['fit_seconds'] for r in rows], 1)} |")
    return [*lines, "", "Machine: " + "; ".join(sorted(machines)) + ". Commits: " + ", ".join(sorted(commits)) + "."]


def _label(what: str, rows: Sequence[dict[str, Any]], default_model: str | None) -> str:
    if what == "reference":
        p = rows[0]["params"]
        return (f"implicit's ALS tuned on validation ({p['factors']} factors, {p['weighting']}, "
                f"alpha {p['alpha']:g}, lambda {p['regularization']:g}, {p['iterations']} iterations)")
    if what == "default":
        return f"**`recsys train`, no model flags** ({default_model})"
    if " tuned " in what:
        model, _, budget = what.partition(" tuned ")
        return f"`recsys tune --model {model} --time-budget {budget}`, then `recsys train --config`"
    return f"`recsys train --model {what}`"


def lodo_table(names: Sequence[str]) -> list[str]:
    lines = ["| model | held out | constants chosen on the other three | worst of the three | on the held-out set | its own best |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model in RULE_GRIDS:
        result = latest_result(RESULTS, f"lodo-{model}")
        if result is None:
            continue
        for fold in result["folds"]:
            pick = ", ".join(f"{k} {v:g}" for k, v in fold["pick"].items())
            lines.append(f"| {model} | {fold['held_out']} | {pick} | {100 * fold['chosen_on_others']:.1f}% | "
                         f"{100 * fold['held_out_quality']:.1f}% | {100 * fold['held_out_best']:.1f}% |")
    return lines


def stage_table(names: Sequence[str], log: Callable[[str], None]) -> None:
    """This folder's README table and the index's (experiments/README.md), and results/table.md."""
    lines = [*quality_table(names), "", "Leave one data set out (validation; quality = the worse of "
             "recall@20 and NDCG@20 as a share of the tuned reference's):", "", *lodo_table(names)]
    text = publish_table("experiments.quality.benchmark", lines,
                         [(HERE / "README.md", ""), (HERE.parent / "README.md", "quality/benchmark")])
    (RESULTS / "table.md").write_text(text + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["reference", "rules", "lodo", "test", "tune", "table"])
    parser.add_argument("--dataset", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--model", choices=sorted(RULE_GRIDS), help="rules: the model whose rule constants to score")
    parser.add_argument("--grid", nargs="*", default=[], metavar="NAME=V1,V2",
                        help="rules: constants to score instead of the default grid's")
    parser.add_argument("--factors", nargs="+", type=int, default=[128], help="rules: factor counts to score")
    parser.add_argument("--epochs", nargs="+", type=int, help="rules: the epochs to score at (default per model)")
    parser.add_argument("--models", nargs="*", default=list(TEST_MODELS), help="test: models to train with their defaults")
    parser.add_argument("--budget", default="5m", help="tune: the time budget (recsys tune --time-budget)")
    parser.add_argument("--seeds", nargs="+", type=int, help="test, tune: the seeds (default: the config's)")
    parser.add_argument("--no-reference", action="store_true", help="test: only the models, not the reference and default")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    if args.stage == "lodo":
        stage_lodo(args.dataset, log)
        return
    if args.stage == "table":
        stage_table(args.dataset, log)
        return
    for name in args.dataset:
        config = read_config(name, args.data_dir)
        if args.stage == "reference":
            stage_reference(config, log)
        elif args.stage == "test":
            stage_test(config, log, args.models, args.seeds, reference=not args.no_reference)
        elif args.stage == "tune":
            stage_tune(config, log, args.model or "ials", args.budget, args.seeds)
        elif args.stage == "rules":
            grid = dict(RULE_GRIDS[args.model])
            for item in args.grid:
                key, _, values = item.partition("=")
                grid[key] = tuple(float(v) for v in values.split(","))
            stage_rules(config, log, args.model, grid, args.factors, args.epochs)


if __name__ == "__main__":
    main()
