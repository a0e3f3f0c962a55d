"""Two-tower against MF, ALS and iALS on MovieLens: a warm and a cold-item split, and the
validation search behind the two-tower defaults.

One script, one config (``configs/movielens.toml``: the data sets and feature tables, the
seeds, the models, the validation candidates); ``test`` writes ``results/<split>.<date>.<commit>.json``
(``warm``, ``cold-items``), ``validation`` writes ``results/validation.<date>.<commit>.json``
(``validation-cold-items`` with ``--split cold-items``),
and ``table`` puts the newest rows into the README. Run from the repository root:

    OMP_NUM_THREADS=1 python -m experiments.two_tower.benchmark test [--dataset ml-100k] [--model two-tower]
    OMP_NUM_THREADS=1 python -m experiments.two_tower.benchmark validation [--split cold-items] [--candidate NAME]
    python -m experiments.two_tower.benchmark table

Protocol:

- warm split: per-user 80/20 holdout with each split seed, full-catalogue ranking, training
  items excluded; recall@20 and NDCG@20.
- cold-item split: 20% of the items with interactions held out with every interaction; their
  test entries ranked among the held-out items only. MF and ALS have no embedding for an item
  they never saw interact and popularity has nothing to count, so they "cannot score"; the
  random-ranking recall (k / number of cold items) is the floor.
- only the two-tower model is given the feature tables; the others see the log.
- the table gives each model's mean ± std over the split seeds, and the two-tower model's gap
  to the best MF-family model (als, ials or mf, by mean recall) computed on each split and
  averaged.
- validation: the test part of the first split is dropped unseen; ``recsys.jobs.validation_split``
  carves 20% of each user's training interactions out (``--split cold-items``: 20% of the
  training items); each candidate is fitted on the rest, with the feature tables, once per
  model seed, and scored on validation. The rows of a run replace earlier rows of the same
  data set, split, candidate and seed; the rest stand.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common
from recsys.data.features import attach_features, read_features
from recsys.data.interactions import Interactions
from recsys.data.io import read_interactions
from recsys.data.splits import split
from recsys.evaluation import evaluate
from recsys.evaluation.cold import evaluate_cold_items
from recsys.jobs import validation_split
from recsys.models import create_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "movielens.toml"
K = 20
MF_FAMILY = ("als", "ials", "mf")
TORCH_MODELS = ("two-tower", "mf", "ials")
STRATEGY = {"warm": "user", "cold-items": "cold-items"}


def test_key(row: dict[str, Any]) -> tuple:
    return row["dataset"], row["seed"], row["model"]


def validation_name(split_name: str) -> str:
    """The result name of a validation run: ``validation`` (warm) or ``validation-cold-items``."""
    return "validation" if split_name == "warm" else f"validation-{split_name}"


def validation_key(row: dict[str, Any]) -> tuple:
    # Rows of the first searches keep the seed in their params only (random_state, 0 when absent).
    return row["dataset"], row["setting"], row.get("seed", row["params"].get("random_state", 0))


# -- data ---------------------------------------------------------------------------------
def load(spec: dict[str, str], data_dir: Path) -> tuple[Interactions, Interactions]:
    """The log as it is, and with the feature tables attached (for the two-tower model)."""
    data = read_interactions(common.data_file(spec["data"], data_dir))
    users = read_features(common.data_file(spec["user_features"], data_dir), "user") if "user_features" in spec else None
    items = read_features(common.data_file(spec["item_features"], data_dir), "item") if "item_features" in spec else None
    featured, report = attach_features(data, users, items)
    common.say(f"{spec['data']}: {data}; features: {report}")
    return data, featured


def fit(model: str, params: dict[str, Any], train: Interactions, device: str) -> tuple[Any, float]:
    params = {**params, "device": device} if model in TORCH_MODELS else dict(params)
    start = time.perf_counter()
    estimator = create_model(model, **params).fit(train)
    return estimator, time.perf_counter() - start


def score(model: Any, test: Interactions, split_name: str) -> dict[str, Any]:
    """recall@K and NDCG@K (None where the model cannot score cold items), and the cold-item count."""
    if split_name == "warm":
        metrics = evaluate(model, test, ks=[K]).metrics
        return {f"recall@{K}": metrics[f"recall@{K}"], f"ndcg@{K}": metrics[f"ndcg@{K}"], "note": ""}
    ev = evaluate_cold_items(model, test, ks=[K])
    cold = ev.extra["cold_items"]
    floor = f"{cold} cold items; random ranking recall@{K} = {K / cold:.4f}"
    if "note" in ev.extra:
        return {f"recall@{K}": None, f"ndcg@{K}": None, "cold_items": cold, "note": f"cannot score {floor}"}
    return {f"recall@{K}": ev.metrics[f"recall@{K}"], f"ndcg@{K}": ev.metrics[f"ndcg@{K}"], "cold_items": cold, "note": floor}


# -- test: every model with its defaults on every split -------------------------------------
def stage_test(config: dict[str, Any], data_dir: Path, datasets: Sequence[str], models: Sequence[str] | None) -> None:
    test = config["test"]
    for split_name in test["splits"]:
        chosen = [m for m in test["models"] if split_name == "warm" or m in test["cold_models"]]
        chosen = [m for m in chosen if not models or m in models]
        rows = []
        for name in datasets:
            plain, featured = load(config["datasets"][name], data_dir)
            for seed in test["split_seeds"]:
                for model in chosen:
                    data = featured if model == "two-tower" else plain
                    train, held_out = split(data, STRATEGY[split_name], test_fraction=0.2, seed=seed)
                    estimator, seconds = fit(model, test["models"][model], train, test["device"])
                    row = {"dataset": name, "split": split_name, "seed": seed, "model": model,
                           "params": test["models"][model], **score(estimator, held_out, split_name),
                           "fit_s": round(seconds, 1), "load": round(os.getloadavg()[0], 1)}
                    rows.append(row)
                    common.say(f"  {name} {split_name} seed {seed} {model}: recall {row[f'recall@{K}']} "
                               f"ndcg {row[f'ndcg@{K}']} fit {row['fit_s']}s")
        common.write_rows(RESULTS, split_name, {
            "device": test["device"], "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}, test_key)


# -- validation: two-tower candidates on a split carved from training ------------------------
def stage_validation(config: dict[str, Any], data_dir: Path, datasets: Sequence[str], split_name: str,
                     names: Sequence[str] | None) -> None:
    spec = config["validation"]
    candidates = [c for c in spec["candidates"] if not names or c["name"] in names]
    rows = []
    for name in datasets:
        _plain, featured = load(config["datasets"][name], data_dir)
        train, _test = split(featured, STRATEGY[split_name], test_fraction=0.2, seed=spec["split_seed"])
        del _test  # set aside: nothing below may see it
        if split_name == "warm":
            fit_part, valid = validation_split(train, 0.2, spec["split_seed"])
        else:  # cold items carved from the training items of the cold-item split
            fit_part, valid = split(train, "cold-items", test_fraction=0.2, seed=spec["split_seed"] + 1)
        runs = [("two-tower", c["name"], seed, {**c["params"], "random_state": seed})
                for c in candidates for seed in spec["model_seeds"]]
        runs += [(ref, f"{ref} (defaults, reference)", 0, {}) for ref in spec["references"] if not names]
        for model, setting, seed, params in runs:
            estimator, seconds = fit(model, params, fit_part, spec["device"])
            row = {"dataset": name, "split": split_name, "setting": setting, "seed": seed, "params": params,
                   **score(estimator, valid, split_name), "fit_s": round(seconds, 1), "load": round(os.getloadavg()[0], 1)}
            rows.append(row)
            common.say(f"  {name} {split_name} {setting} seed {seed}: recall {row[f'recall@{K}']} ndcg {row[f'ndcg@{K}']}")
    common.write_rows(RESULTS, validation_name(split_name), {"split_seed": spec["split_seed"], "rows": rows},
                            validation_key)


# -- table: the README's tables from the newest rows ---------------------------------------
def _pair(rows: Sequence[dict[str, Any]]) -> str:
    return " / ".join(common.mean_std([r[m] for r in rows]) for m in (f"recall@{K}", f"ndcg@{K}"))


def _gap(mine: dict[int, dict[str, Any]], best: dict[int, dict[str, Any]]) -> str:
    """Mean ± std over the shared split seeds of the relative gap, recall / NDCG."""
    seeds = sorted(set(mine) & set(best))
    parts = []
    for m in (f"recall@{K}", f"ndcg@{K}"):
        gaps = [100 * (mine[s][m] / best[s][m] - 1) for s in seeds]
        spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        parts.append(f"{statistics.mean(gaps):+.1f} ± {spread:.1f}%")
    return " / ".join(parts)


def _cold_items(row: dict[str, Any]) -> int | None:
    if "cold_items" in row:
        return row["cold_items"]
    found = re.search(r"(\d+) cold items", row.get("note", ""))
    return int(found.group(1)) if found else None


def test_table(datasets: Sequence[str]) -> list[str]:
    rows, results = [], []
    for split_name in STRATEGY:
        found, used = common.merged_rows(RESULTS, split_name, test_key)
        rows += found
        results += used
    cells = []
    for name in datasets:
        for split_name in STRATEGY:
            scored: dict[str, dict[int, dict[str, Any]]] = {}
            unscored: list[str] = []
            cold: set[int] = set()
            for r in rows:
                if r["dataset"] != name or r["split"] != split_name:
                    continue
                if r[f"recall@{K}"] is None:
                    unscored.append(r["model"])
                else:
                    scored.setdefault(r["model"], {})[r["seed"]] = r
                if split_name == "cold-items" and _cold_items(r):
                    cold.add(_cold_items(r))
            mean = {m: statistics.mean(r[f"recall@{K}"] for r in by_seed.values()) for m, by_seed in scored.items()}
            family = [m for m in MF_FAMILY if m in scored]
            best = max(family, key=mean.__getitem__, default=None)
            order = sorted(scored, key=lambda m: (m != "two-tower", m != best, -mean[m]))
            for model in order:
                by_seed = scored[model]
                if model == "two-tower" and best is not None:
                    note = _gap(by_seed, scored[best])
                elif model == "two-tower" and cold:
                    floor = ", ".join(f"{K / n:.3f}" for n in sorted(cold))
                    cannot = ", ".join(sorted(set(unscored)))
                    note = f"random ranking: {floor} recall@{K} ({', '.join(map(str, sorted(cold)))} cold items)" + (
                        f"; {cannot} cannot score them" if cannot else "")
                else:
                    note = ""
                label = f"{model} (best MF-family)" if model == best else model
                cells.append((name, split_name, label, *_pair(list(by_seed.values())).split(" / "), note))
    seeds = sorted({r["seed"] for r in rows})
    header = ["data set", "split", "model", f"recall@{K}", f"NDCG@{K}", "gap to the best MF-family model (recall / NDCG)"]
    return [f"Split seeds {', '.join(map(str, seeds))}; mean ± std over the splits; "
            f"{common.sources(RESULTS, results)}.", "", *common.markdown_table(header, cells)]


def validation_table(config: dict[str, Any], datasets: Sequence[str], split_name: str = "warm") -> list[str]:
    rows, results = common.merged_rows(RESULTS, validation_name(split_name), validation_key)
    spec = config["validation"]
    settings = [(c["name"], c["label"]) for c in spec["candidates"]]
    settings += [(f"{ref} (defaults, reference)", f"`{ref}` with its defaults (reference)") for ref in spec["references"]]
    cells = []
    for setting, label in settings:
        found = [[r for r in rows if r["dataset"] == name and r["setting"] == setting] for name in datasets]
        if any(found):
            cells.append((label, *(_pair(f) if f else "" for f in found)))
    return [f"recall@{K} / NDCG@{K} on the {split_name} validation split, mean ± std over model seeds "
            f"{', '.join(map(str, spec['model_seeds']))}; {common.sources(RESULTS, results)}.", "",
            *common.markdown_table(["setting", *datasets], cells)]


def stage_table(config: dict[str, Any]) -> None:
    datasets = list(config["datasets"])
    module = "experiments.two_tower.benchmark"
    test = test_table(datasets)
    common.publish_table(module, test, [(HERE / "README.md", "test"), (HERE.parent / "README.md", "two_tower/test")])
    common.publish_table(module, validation_table(config, datasets), [(HERE / "README.md", "validation")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["test", "validation", "table"])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    parser.add_argument("--dataset", nargs="+", help="test, validation: only these of the config's data sets")
    parser.add_argument("--model", nargs="+", help="test: only these of the config's models")
    parser.add_argument("--candidate", nargs="+", metavar="NAME", help="validation: only these candidates (no references)")
    parser.add_argument("--split", default="warm", choices=list(STRATEGY), help="validation: the split to carve")
    args = parser.parse_args(argv)
    config = common.read_config(args.config)
    datasets = args.dataset or list(config["datasets"])
    if args.stage == "test":
        stage_test(config, args.data_dir, datasets, args.model)
    elif args.stage == "validation":
        stage_validation(config, args.data_dir, datasets, args.split, args.candidate)
    else:
        stage_table(config)


if __name__ == "__main__":
    main()
