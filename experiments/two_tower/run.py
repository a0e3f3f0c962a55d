"""Two-tower against MF, ALS and iALS on MovieLens: a warm split and a cold-item split.

    python experiments/two_tower/run.py [--data /work/shared/data] [--datasets ml-100k,ml-latest-small]

Warm split: per-user 80/20 holdout (seed 0), full-catalogue ranking, training items
excluded. Cold-item split: 20% of the items with interactions are held out with every
interaction; their test entries are ranked among the held-out items only. MF and ALS have
no embedding for an item they never saw interact, so the table says "cannot score"; the
random-ranking recall (k / number of cold items) is the floor; popularity has nothing to
rank cold items by (all have zero training interactions).

Writes results.md (the table) and results.json beside this script (--output changes the stem;
--two-tower-params sets two-tower settings over its defaults; ``--before-round-four`` puts
them over the defaults the model had before round four, which the older tables used). ``--split-seeds 0,1,2,3,4``
repeats everything on several splits and adds, per data set and split, each model's mean
± std over them and the two-tower model's paired gap to the best MF-family model (als, ials or
mf, by mean) on each split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from recsys.data.features import attach_features, read_features
from recsys.data.io import read_interactions
from recsys.data.splits import split
from recsys.evaluation import evaluate
from recsys.evaluation.cold import evaluate_cold_items
from recsys.models import create_model

HERE = Path(__file__).resolve().parent
K = 20

# The two-tower defaults before round four (README, "Round four"): the older tables and the
# validation candidates of tune_validation.py are over these.
BEFORE_ROUND_FOUR = {"factors": 64, "epochs": 10, "lr_schedule": "constant", "tower_bias": False, "logq": 1.0}

MODELS = {
    "two-tower": {},
    "mf": {"loss": "softmax", "epochs": 20},
    "als": {},
    "ials": {},
    "popular": {},
}


def datasets(root: Path) -> dict:
    return {
        "ml-100k": (root / "ml-100k" / "u.data", [root / "ml-100k" / "u.user"], [root / "ml-100k" / "u.item"]),
        "ml-latest-small": (root / "ml-latest-small" / "ratings.csv", [], [root / "ml-latest-small" / "movies.csv"]),
    }


def load(ratings: Path, user_files: list[Path], item_files: list[Path]):
    data = read_interactions(ratings)
    users = read_features(user_files[0], "user") if user_files else None
    items = read_features(item_files[0], "item") if item_files else None
    with_features, report = attach_features(data, users, items)
    return data, with_features, report


def fit(name: str, train, device: str):
    params = dict(MODELS[name])
    if name in ("two-tower", "mf", "ials"):
        params["device"] = device
    start = time.perf_counter()
    model = create_model(name, **params).fit(train)
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("RECSYS_SHARED_DATA", "/work/shared/data"))
    parser.add_argument("--datasets", default="ml-100k,ml-latest-small")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--two-tower-params", default="{}", help="JSON settings for two-tower over its defaults")
    parser.add_argument("--before-round-four", action="store_true",
                        help="two-tower settings over the defaults before round four (the older tables)")
    parser.add_argument("--output", default="results", help="stem of the .md and .json files written here")
    parser.add_argument("--split-seeds", default="0", help="seeds of the train/test splits, comma-separated")
    parser.add_argument("--splits", default="warm,cold-items")
    parser.add_argument("--reuse", help="results .json of an earlier run: its rows of the models not run now join the table")
    args = parser.parse_args()
    MODELS["two-tower"] = {**(BEFORE_ROUND_FOUR if args.before_round_four else {}), **json.loads(args.two_tower_params)}
    root = Path(args.data)
    rows = []
    if args.reuse:
        # The other models are deterministic on the same splits: their earlier rows stand.
        rows = [r for r in json.loads((HERE / args.reuse).read_text())["rows"] if r["model"] not in args.models.split(",")]
    header = (
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, device {args.device}; "
        f"load average at start {os.getloadavg()[0]:.1f} (a shared, busy machine: fit times are indicative)"
    )
    header += f"; two-tower settings over its defaults: {MODELS['two-tower']}"
    if args.reuse:
        header += f"; rows of the models other than {args.models} from {args.reuse}"
    print(header, flush=True)
    for ds in args.datasets.split(","):
        ratings, ufiles, ifiles = datasets(root)[ds]
        if not ratings.exists():
            raise SystemExit(f"{ratings}: missing; pass --data with the folder holding {ds}/")
        plain, featured, report = load(ratings, ufiles, ifiles)
        print(ds, plain, "features:", report, flush=True)
        for split_name, seed in [(s, int(seed)) for s in args.splits.split(",") for seed in args.split_seeds.split(",")]:
            strategy = "user" if split_name == "warm" else "cold-items"
            for name in args.models.split(","):
                # Feature tables only for the model that reads them; the others see the log.
                data = featured if name == "two-tower" else plain
                train, test = split(data, strategy, test_fraction=0.2, seed=seed)
                model, seconds = fit(name, train, args.device)
                if split_name == "warm":
                    ev = evaluate(model, test, ks=[K])
                    recall, ndcg, note = ev.metrics[f"recall@{K}"], ev.metrics[f"ndcg@{K}"], ""
                else:
                    ev = evaluate_cold_items(model, test, ks=[K])
                    if "note" in ev.extra:
                        recall = ndcg = None
                        note = "cannot score" if name != "popular" else "cannot score (no interactions to count)"
                    else:
                        recall, ndcg, note = ev.metrics[f"recall@{K}"], ev.metrics[f"ndcg@{K}"], ""
                    note += f" {ev.extra['cold_items']} cold items; random ranking recall@{K} = {K / ev.extra['cold_items']:.4f}"
                row = {"dataset": ds, "split": split_name, "seed": seed, "model": name, f"recall@{K}": recall, f"ndcg@{K}": ndcg,
                       "fit_s": round(seconds, 1), "load": round(os.getloadavg()[0], 1), "note": note.strip()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (HERE / f"{args.output}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    lines = [f"_{header}_", "", f"| data set | split | seed | model | recall@{K} | NDCG@{K} | fit (s) | load | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        fmt = lambda v: "cannot score" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {r['dataset']} | {r['split']} | {r['seed']} | {r['model']} | {fmt(r[f'recall@{K}'])} "
                     f"| {fmt(r[f'ndcg@{K}'])} | {r['fit_s']} | {r['load']} | {r['note']} |")
    if len({r["seed"] for r in rows}) > 1:
        lines += ["", *summary(rows)]
    (HERE / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def mean_std(values: list[float], fmt: str = ".4f") -> str:
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values) if len(values) > 1 else 0.0:{fmt.lstrip('+')}}"


def summary(rows: list[dict]) -> list[str]:
    """Mean ± std over split seeds per model, and two-tower's paired relative gap to the
    best MF-family model (by mean recall) on each seed."""
    metrics = (f"recall@{K}", f"ndcg@{K}")
    lines = [f"| data set | split | model | splits | recall@{K} | NDCG@{K} | gap to the best MF-family model "
             "(recall / NDCG; mean ± std of the per-split gaps) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in rows:
        if r[metrics[0]] is not None:
            groups.setdefault((r["dataset"], r["split"]), {}).setdefault(r["model"], {})[r["seed"]] = r
    for (ds, split_name), by_model in groups.items():
        family = [m for m in ("als", "ials", "mf") if m in by_model]
        best = max(family, key=lambda m: statistics.mean(r[metrics[0]] for r in by_model[m].values()), default=None)
        for model, by_seed in by_model.items():
            gap = ""
            if model == "two-tower" and best is not None:
                seeds = sorted(set(by_seed) & set(by_model[best]))
                gap = " / ".join(mean_std([100 * (by_seed[s][m] / by_model[best][s][m] - 1) for s in seeds], "+.1f") + "%"
                                 for m in metrics) + f" (vs {best})"
            cells = " | ".join(mean_std([r[m] for r in by_seed.values()]) for m in metrics)
            lines.append(f"| {ds} | {split_name} | {model} | {len(by_seed)} | {cells} | {gap} |")
    return lines


if __name__ == "__main__":
    main()
