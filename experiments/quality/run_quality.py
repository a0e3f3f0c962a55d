"""Issue 6: our best dot-product models against implicit's ALS tuned on validation.

Protocol (see README.md beside this file):

- data: lastfm-2k (play counts) and ml-latest-small (ratings, treated as implicit:
  every rating is a positive); per-user 80/20 holdout; seeds 0-4; full ranking over every
  item, training items excluded; recall@20 (hits / relevant, as LightGCN reports it) and
  NDCG@20.
- tuning, once, on seed 0: a per-user 20% validation split carved out of seed 0's
  training part (``recsys.workflows.validation_split``); the test part is never looked at.
  The reference, implicit's ALS, and our iALS get the same procedure, a grid then local
  refinement (``REFERENCE_SEARCH``, ``IALS_SEARCH``); softmax MF gets an Optuna TPE search
  over ``MF_SPACE`` through ``recsys.tuning.tune``.
  The best settings are then fitted on each seed's whole training part and scored once
  on its test part.
- time to quality: our model is trained with an epoch callback that scores the test part
  after each epoch (the time spent in the callback is not counted); we report the training
  wall and CPU time at which it first reaches the reference's test recall@20 of the same seed,
  beside the reference's own fit time, both on the same number of threads.
- retrieval: the same iALS model's test recall@20 when the top-20 comes from
  ``recsys.retrieval.AnnoyIndex`` with its default settings instead of exact search.

Run (1 thread per model, as on this shared machine; README.md has the exact sequence)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python experiments/quality/run_quality.py    # stages ref, ials, test

Stages (``--stages ref ials mf test``) are cached in
``experiments/quality/results/<data set>.<stage>.json`` and skipped when present; ``--fresh``
redoes them, ``--fresh-test`` redoes the per-seed test runs. The table goes to
``results/table.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "baselines"))
from reference import DATA_DIR, ImplicitALS, load_dataset, machine_line

from recsys.data.interactions import Interactions
from recsys.data.splits import split
from recsys.evaluation.evaluate import evaluate
from recsys.models import create_model
from recsys.models.base import Recommender
from recsys.models.training import Validation, validation_score
from recsys.tuning import Dimension, tune
from recsys.workflows import TrainConfig, validation_split

HERE = Path(__file__).resolve().parent
QUALITY_SETS = ("lastfm-2k", "ml-latest-small")
K = 20

MF_SPACE: dict[str, Dimension] = {
    "factors": Dimension("categorical", choices=(64, 128)),
    "learning_rate": Dimension("float", 1e-3, 0.05, log=True),
    "regularization": Dimension("float", 1e-6, 1e-2, log=True),
    "epochs": Dimension("categorical", choices=(10, 20)),
    "negatives": Dimension("categorical", choices=(256, 1024)),
    "sampling": Dimension("categorical", choices=("uniform", "popularity")),
}
"""Softmax MF's TPE space (loss fixed to sampled softmax)."""


def ref_weightings(data: Interactions) -> list[str]:
    return ["binary"] if data.feedback == "rating" else ["log", "binary"]


def scores(model: Recommender, test: Interactions, **kw: Any) -> dict[str, float]:
    m = evaluate(model, test, ks=[K], **kw).metrics
    return {"recall": m[f"recall@{K}"], "ndcg": m[f"ndcg@{K}"]}


# -- tuning (seed 0, validation only) ------------------------------------------------------
@dataclass
class GridSearch:
    """A grid, then local refinement around the best point until it stops moving.

    Every combination is fitted once for ``max(checkpoints)`` epochs (iterations) on seed
    0's training part minus the validation part, and scored on the validation part at
    each checkpoint, so the epoch count is searched for free.
    """

    model: str  # "implicit-als" or "ials"
    grid: dict[str, list[Any]]
    checkpoints: list[int]
    refine_steps: list[tuple[str, float]]
    refine_checkpoints: list[int]
    epochs_name: str = "iterations"
    factor_range: tuple[int, int] = (32, 256)
    rounds: int = 4
    count_factors: list[int] | None = None  # a smaller factors list for count data (machine time)

    def weightings(self, data: Interactions) -> list[str]:
        return ["binary"] if data.feedback == "rating" else ["log", "binary"]

    def combos(self, data: Interactions) -> list[dict[str, Any]]:
        out = []
        for weighting in self.weightings(data):
            grid = dict(self.grid)
            if weighting == "binary" and data.feedback != "rating" and self.model == "implicit-als":
                grid["factors"] = BINARY_COUNT_FACTORS
            if data.feedback != "rating" and self.count_factors:
                grid["factors"] = self.count_factors
            for values in itertools.product(*grid.values()):
                out.append({**dict(zip(grid, values)), "weighting": weighting})
        return out

    def neighbours(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        best = max(rows, key=lambda r: r["val_recall"])
        base = {k: v for k, v in best.items() if k not in (self.epochs_name, "val_recall")}
        out = []
        for key, step in self.refine_steps:
            if key == "factors":
                value: Any = int(base[key] * step)
                if not self.factor_range[0] <= value <= self.factor_range[1]:
                    continue
            elif key == "regularization_exponent":
                value = round(base[key] + step, 6)
                if value < 0:
                    continue
            else:
                value = base[key] * step
            out.append({**base, key: value})
        done = {_key(r) for r in rows}
        return [c for c in out if _key(c) not in done]

    def build(self, params: dict[str, Any], epochs: int, threads: int, device: str) -> Recommender:
        if self.model == "implicit-als":
            return ImplicitALS(**params, iterations=epochs, num_threads=threads, random_state=0)
        return create_model(self.model, **params, epochs=epochs, device=device, random_state=0)

    def run(self, data: Interactions, rows: list[dict[str, Any]], threads: int, device: str, log: Any,
            save: Any) -> dict[str, Any]:
        fit_combos(self, data, self.combos(data), self.checkpoints, rows, threads, device, log, save)
        for n in range(self.rounds):
            combos = self.neighbours(rows)
            if not combos:
                break
            log(f"  refinement round {n + 1}: {len(combos)} neighbours of the best")
            fit_combos(self, data, combos, self.refine_checkpoints, rows, threads, device, log, save)
        best = max(rows, key=lambda r: r["val_recall"])
        return {k: v for k, v in best.items() if k != "val_recall"}


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(float(v), 6) if isinstance(v, (int, float)) else v)
                        for k, v in params.items() if k not in ("iterations", "epochs", "val_recall")))


class _Checkpoints:
    """Scores the validation part at the given epochs (iALS: callback; implicit: fit callback)."""

    def __init__(self, validation: Validation, checkpoints: list[int]) -> None:
        self.validation, self.checkpoints, self.found = validation, set(checkpoints), {}

    def __call__(self, model: Recommender, epoch: int) -> None:
        if epoch in self.checkpoints:
            self.found[epoch] = validation_score(model, self.validation)

    def on_epoch_end(self, model: Recommender, epoch: int, figures: dict[str, float]) -> bool:
        if epoch in self.checkpoints:
            model._export()  # the current factors, as the loop's own validation does
            self(model, epoch)
        return False


def fit_combos(search: GridSearch, data: Interactions, combos: list[dict[str, Any]], checkpoints: list[int],
               rows: list[dict[str, Any]], threads: int, device: str, log: Any, save: Any) -> None:
    """Fits every combination not yet in ``rows`` on seed 0's validation split (appending to ``rows``)."""
    train, _test = split(data, "user", test_fraction=0.2, seed=0)
    del _test  # never used for tuning
    fit_part, valid = validation_split(train, 0.2, 0)
    validation = Validation(valid, f"recall@{K}")
    done = {_key(r) for r in rows}
    for n, params in enumerate(combos, 1):
        if _key(params) in done:
            continue
        marks = _Checkpoints(validation, checkpoints)
        model = search.build(params, max(checkpoints), threads, device)
        if search.model == "implicit-als":
            model.fit(fit_part, callback=marks)
        else:
            model.fit(fit_part, callbacks=[marks])
        for epochs, value in sorted(marks.found.items()):
            rows.append({**params, search.epochs_name: epochs, "val_recall": value})
        done.add(_key(params))
        save()
        best = max(rows, key=lambda r: r["val_recall"])
        log(f"  {search.model} {n}/{len(combos)} {params}: {max(marks.found.values()):.4f} "
            f"(best so far {best['val_recall']:.4f})")


REFERENCE_SEARCH = GridSearch(
    model="implicit-als",
    grid={"factors": [32, 64, 128, 256], "regularization": [0.01, 0.1, 1.0, 10.0], "alpha": [1.0, 3.0, 10.0, 30.0]},
    checkpoints=[5, 10, 15, 30],
    refine_steps=[("regularization", 3.0), ("regularization", 1 / 3), ("alpha", 3.0), ("alpha", 1 / 3),
                  ("factors", 2), ("factors", 0.5)],
    refine_checkpoints=[5, 10, 15, 30, 50],
)
"""The reference's search: implicit's ALS (``alpha`` scales the confidence)."""

BINARY_COUNT_FACTORS = [32, 64]
"""Factors of the reference's binary-weighting half of the grid on counts (README: machine time)."""

IALS_SEARCH = GridSearch(
    model="ials",
    grid={"factors": [32, 64, 128, 256], "regularization": [0.003, 0.01, 0.03], "unobserved_weight": [0.03, 0.1, 0.3],
          "regularization_exponent": [1.0]},
    checkpoints=[4, 8, 16, 24],
    refine_steps=[("regularization", 2.0), ("regularization", 0.5), ("unobserved_weight", 2.0),
                  ("unobserved_weight", 0.5), ("factors", 2), ("factors", 0.5),
                  ("regularization_exponent", 0.25), ("regularization_exponent", -0.25)],
    refine_checkpoints=[4, 8, 16, 24, 32],
    epochs_name="epochs",
    count_factors=[32, 64, 128],
)
"""Our iALS's search (alpha stays 1: with the unobserved weight and lambda free it is redundant)."""


def tpe_search(data: Interactions, model: str, space: dict[str, Dimension], fixed: dict[str, Any],
               trials: int, log: Any) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    config = TrainConfig(model=model, params=fixed, split="user", test_fraction=0.2, seed=0)

    def on_trial(number: int, params: dict[str, Any], value: float | None, seconds: float, state: str) -> None:
        log(f"  {model} trial {number}: {value} in {seconds:.1f}s {params}")

    result = tune(data, config, trials=trials, space=space, metric=f"recall@{K}", validation_fraction=0.2,
                  on_trial=on_trial)
    best = {**fixed, **result.best_params}
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in result.trials.to_dict("records")]
    return best, result.best_value, rows


# -- time to quality and retrieval ---------------------------------------------------------
class TimeToQuality:
    """Scores the test part after each epoch; records training time (wall and CPU), callback excluded."""

    def __init__(self, test: Interactions, target: float) -> None:
        self.test, self.target = test, target
        self.start()
        self.curve: list[tuple[int, float, float, float]] = []  # (epoch, wall s, cpu s, recall)
        self.reached: tuple[int, float, float] | None = None  # (epoch, wall s, cpu s)

    def start(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.outside_wall = self.outside_cpu = 0.0  # spent in this callback (not training)

    def on_epoch_end(self, model: Recommender, epoch: int, figures: dict[str, float]) -> bool:
        w0, c0 = time.perf_counter(), time.process_time()
        wall, cpu = w0 - self.wall0 - self.outside_wall, c0 - self.cpu0 - self.outside_cpu
        model._export()  # the current factors, as the loop's own validation does
        value = validation_score(model, Validation(self.test, f"recall@{K}"))
        self.curve.append((epoch, wall, cpu, value))
        if self.reached is None and value >= self.target:
            self.reached = (epoch, wall, cpu)
        self.outside_wall += time.perf_counter() - w0
        self.outside_cpu += time.process_time() - c0
        return False


def timed_fit(model: Recommender, train: Interactions, **options: Any) -> float:
    """Fits ``model``; returns the CPU seconds of the fit (this process, all threads)."""
    c0 = time.process_time()
    model.fit(train, **options)
    return time.process_time() - c0


def annoy_scores(model: Recommender, test: Interactions, seed: int, search_k: int | None = None) -> dict[str, float]:
    """Test metrics with the top-20 from ``recsys.retrieval.AnnoyIndex`` (its defaults, one thread).

    ``search_k=None`` is the index's default; ``-1`` is Annoy's own (candidates x trees).
    ``overlap`` is the share of the exact top-20 the index found.
    """
    from recsys.retrieval.annoy_index import AnnoyIndex
    from recsys.retrieval.evaluation import evaluate_with_index

    t0 = time.perf_counter()
    index = AnnoyIndex.build(model, search_k=search_k, n_jobs=1, seed=seed)
    build = time.perf_counter() - t0
    m = evaluate_with_index(model, test, index, ks=[K])
    return {"recall": m.metrics[f"recall@{K}"], "ndcg": m.metrics[f"ndcg@{K}"], "overlap": m.metrics[f"overlap@{K}"],
            "build_seconds": build, "eval_seconds": m.extra["seconds"]["index"], "trees": index.trees}


# -- the run -------------------------------------------------------------------------------
def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs the asked stages; each stage's state lives in ``results/<name>.<stage>.json``."""
    folder = HERE / "results"
    folder.mkdir(exist_ok=True)
    state: dict[str, Any] = {}
    for stage in ("ref", "ials", "mf", "seeds"):
        path = folder / f"{name}.{stage}.json"
        if path.is_file() and not args.fresh:
            state[stage] = json.loads(path.read_text())

    def save(stage: str) -> None:
        path = folder / f"{name}.{stage}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state[stage], indent=1, default=float))
        tmp.replace(path)

    def log(msg: str) -> None:
        print(f"[{name}] {msg}", flush=True)

    data = load_dataset(name, args.data_dir)
    log(repr(data))
    fixed = {"device": args.device}
    for stage, search in (("ref", REFERENCE_SEARCH), ("ials", IALS_SEARCH)):
        if stage in args.stages and not state.get(stage, {}).get("refined"):
            st = state.setdefault(stage, {"grid": [], "seconds": 0.0})
            t0 = time.perf_counter()
            search.run(data, st["grid"], args.threads, args.device, log, lambda stage=stage: save(stage))
            st["seconds"] += time.perf_counter() - t0
            best = max(st["grid"], key=lambda r: r["val_recall"])
            st["best"] = {k: v for k, v in best.items() if k != "val_recall"}
            st["val_recall"] = best["val_recall"]
            st["refined"] = True
            save(stage)
    if "mf" in args.stages and "mf" not in state:
        t0 = time.perf_counter()
        best, value, rows = tpe_search(data, "mf", MF_SPACE, {**fixed, "loss": "softmax"}, args.mf_trials, log)
        state["mf"] = {"best": best, "val_recall": value, "trials": rows, "seconds": time.perf_counter() - t0}
        save("mf")
    if "test" not in args.stages:
        return state
    seeds = state.setdefault("seeds", {}).setdefault("runs", {})
    for seed in args.seeds:
        key = str(seed)
        if key in seeds and not args.fresh_test:
            continue
        if args.fresh_test or "machine" not in state["seeds"]:
            state["seeds"]["machine"] = machine_line(args.threads)
        train, test = split(data, "user", test_fraction=0.2, seed=seed)
        out: dict[str, Any] = {}
        ref = ImplicitALS(**state["ref"]["best"], num_threads=args.threads, random_state=seed)
        cpu = timed_fit(ref, train)
        out["ref"] = {**scores(ref, test), "fit_seconds": ref.fit_seconds, "fit_cpu_seconds": cpu}
        ials = create_model("ials", **{**state["ials"]["best"], "device": args.device, "random_state": seed})
        ttq = TimeToQuality(test, out["ref"]["recall"])
        ttq.start()
        cpu = timed_fit(ials, train, callbacks=[ttq])
        out["ials"] = {**scores(ials, test), "fit_seconds": ials.fit_seconds - ttq.outside_wall,
                       "fit_cpu_seconds": cpu - ttq.outside_cpu,
                       "device": str(getattr(ials, "device", "cpu")),
                       "reached": ttq.reached, "curve": ttq.curve}
        out["ials_annoy"] = annoy_scores(ials, test, seed)
        if seed == args.seeds[0]:  # the same forest with Annoy's own default search_k (one seed)
            out["ials_annoy_own"] = annoy_scores(ials, test, seed, search_k=-1)
        if "mf" in state:
            mf = create_model("mf", **{**state["mf"]["best"], "device": args.device, "random_state": seed})
            cpu = timed_fit(mf, train)
            out["mf"] = {**scores(mf, test), "fit_seconds": mf.fit_seconds, "fit_cpu_seconds": cpu}
        seeds[key] = out
        log(f"seed {seed}: " + ", ".join(f"{m} {v['recall']:.4f}/{v['ndcg']:.4f}" for m, v in out.items()))
        save("seeds")
    return state


def table(results: dict[str, dict[str, Any]], threads: int) -> str:
    machines = [f"- {name}: {state['seeds']['machine']}" for name, state in results.items() if "machine" in state.get("seeds", {})]
    lines = ["Machine when each data set's test runs started:", "", *machines, "",
             "| data set | model | recall@20 | NDCG@20 | fit wall (s) | fit CPU (s) | device | tuned settings |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    labels = {"ref": "implicit ALS (tuned grid) [reference]", "ials": "recsys iALS (tuned)",
              "ials_annoy": "recsys iALS, top-20 through Annoy", "mf": "recsys MF, sampled softmax (tuned)"}
    ttq_lines = ["", "Time to quality (wall / CPU seconds; one thread each):", "",
                 "| data set | seed | reference recall@20 | reference fit (s) | iALS reaches it at epoch | after (s) "
                 "| iALS full fit (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, state in results.items():
        seeds = state.get("seeds", {}).get("runs", {})
        if not seeds:
            continue
        for model, label in labels.items():
            rows = [s[model] for s in seeds.values() if model in s]
            if not rows:
                continue
            r = np.array([x["recall"] for x in rows])
            n = np.array([x["ndcg"] for x in rows])
            fit = np.array([x.get("fit_seconds", np.nan) for x in rows])
            fit_cpu = np.array([x.get("fit_cpu_seconds", np.nan) for x in rows])
            settings = state.get(model.split("_")[0], {}).get("best", {})
            settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in settings.items() if k != "device")
            fit_s = ("(same model) | (same model)" if model == "ials_annoy" else
                     f"{np.nanmean(fit):.2f} ± {np.nanstd(fit):.2f} | {np.nanmean(fit_cpu):.2f} ± {np.nanstd(fit_cpu):.2f}")
            device = rows[0].get("device", "cpu")
            lines.append(f"| {name} | {label} | {r.mean():.4f} ± {r.std():.4f} | {n.mean():.4f} ± {n.std():.4f} "
                         f"| {fit_s} | {device} | {settings} |")
        for seed, s in seeds.items():
            reached = s["ials"]["reached"]
            at = ("not reached", "-") if reached is None else (str(reached[0]), f"{reached[1]:.2f} / {reached[2]:.2f}")
            ref, ours = s["ref"], s["ials"]
            ttq_lines.append(f"| {name} | {seed} | {ref['recall']:.4f} | {ref['fit_seconds']:.2f} / {ref['fit_cpu_seconds']:.2f} "
                             f"| {at[0]} | {at[1]} | {ours['fit_seconds']:.2f} / {ours['fit_cpu_seconds']:.2f} |")
    diff_lines = ["", "Paired differences (ours minus reference, per seed; mean ± std over seeds):", ""]
    for name, state in results.items():
        seeds = state.get("seeds", {}).get("runs", {})
        for model in ("ials", "mf"):
            pairs = [(s[model], s["ref"]) for s in seeds.values() if model in s]
            if pairs:
                dr = np.array([a["recall"] - b["recall"] for a, b in pairs])
                dn = np.array([a["ndcg"] - b["ndcg"] for a, b in pairs])
                diff_lines.append(f"- {name}, {labels[model]}: recall@20 {dr.mean():+.4f} ± {dr.std():.4f}, "
                                  f"NDCG@20 {dn.mean():+.4f} ± {dn.std():.4f}")
        pairs = [(s["ials_annoy"], s["ials"]) for s in seeds.values()]
        if pairs:
            rel = np.array([(a["recall"] - b["recall"]) / b["recall"] for a, b in pairs])
            overlap = np.array([a["overlap"] for a, _ in pairs])
            diff_lines.append(f"- {name}, recsys AnnoyIndex with its defaults ({pairs[0][0]['trees']} trees) vs exact "
                              f"recall@20, relative: {100 * rel.mean():+.2f}% (worst seed {100 * rel.min():+.2f}%); "
                              f"overlap@20 with the exact top-20 {overlap.mean():.3f}")
        for seed, s in list(seeds.items())[:1]:
            if "ials_annoy_own" in s:
                a, b = s["ials_annoy_own"], s["ials"]
                diff_lines.append(f"  - seed {seed}, the same forest with Annoy's own default search_k (k x trees): "
                                  f"recall@20 {a['recall']:.4f} ({100 * (a['recall'] - b['recall']) / b['recall']:+.2f}%), "
                                  f"overlap@20 {a['overlap']:.3f}, "
                                  f"{a['eval_seconds']:.1f} s for all test users (index default: "
                                  f"{s['ials_annoy']['eval_seconds']:.1f} s)")
    return "\n".join(lines + ttq_lines + diff_lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(QUALITY_SETS), choices=QUALITY_SETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=30, help="TPE trials for iALS")
    parser.add_argument("--mf-trials", type=int, default=12, help="TPE trials for softmax MF")
    parser.add_argument("--stages", nargs="+", default=["ref", "ials", "test"],
                        choices=["ref", "ials", "mf", "test"], help="what to run (cached stages are skipped)")
    parser.add_argument("--threads", type=int, default=1, help="threads per model (torch and implicit)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--fresh", action="store_true", help="redo every stage (tuning included)")
    parser.add_argument("--fresh-test", action="store_true", help="redo the per-seed test runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: run_dataset(name, args) for name in args.datasets}
    if "test" in args.stages:
        text = table(results, args.threads)
        (HERE / "results" / "table.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
