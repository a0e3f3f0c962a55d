"""Choose two-tower settings on a validation split carved from train (no test data seen).

    python experiments/two_tower/tune_validation.py [--data /work/shared/data]

For each data set: the same per-user 80/20 train/test split as run.py (seed 0); the test
part is dropped at once; ``recsys.workflows.validation_split`` carves 20% of each user's
training interactions out as validation (seed 1). Each candidate setting is fitted on the
rest, with the feature tables, and scored on validation (recall@20, NDCG@20). Writes
tune_validation.json beside this script (--output to change; rows written as they finish).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from recsys.workflows import validation_split
from run import BEFORE_ROUND_FOUR, datasets, load  # same data sets and feature tables as run.py

from recsys.data.splits import split
from recsys.evaluation import evaluate
from recsys.evaluation.cold import evaluate_cold_items
from recsys.models import create_model

HERE = Path(__file__).resolve().parent
K = 20

# Every candidate is over the defaults the model had before round four (run.BEFORE_ROUND_FOUR;
# the constructor's defaults have moved since), so that these rows stay reproducible.
ROUND_FOUR = {"epochs": 20, "lr_schedule": "cosine"}
WITH_BIAS = {**ROUND_FOUR, "tower_bias": True}

CANDIDATES = {
    "default (10 epochs)": {},
    "15 epochs": {"epochs": 15},
    "20 epochs": {"epochs": 20},
    "15 epochs + 128 factors": {"epochs": 15, "factors": 128},
    "15 epochs + 32 factors": {"epochs": 15, "factors": 32},
    "temperature 0.05": {"temperature": 0.05},
    "temperature 0.2": {"temperature": 0.2},
    "id dropout 0": {"id_dropout": 0.0},
    "learning rate 0.01": {"learning_rate": 0.01},
    "id dropout 0.1": {"id_dropout": 0.1},
    "id dropout 0 + 15 epochs": {"id_dropout": 0.0, "epochs": 15},
    "id dropout 0 + 15 epochs + 32 factors": {"id_dropout": 0.0, "epochs": 15, "factors": 32},
    # round four: a decaying learning rate, longer history, ...
    "cosine lr": {"lr_schedule": "cosine"},
    "recent 200": {"recent": 200},
    "recent 100": {"recent": 100},
    "dot product": {"similarity": "dot"},
    "batch 4096": {"batch_size": 4096},
    "batch 256": {"batch_size": 256},
    "linear towers": {"hidden": 0},
    "15 epochs + cosine lr": {"epochs": 15, "lr_schedule": "cosine"},
    "cosine lr + learning rate 0.01": {"lr_schedule": "cosine", "learning_rate": 0.01},
    "recent 200 + 15 epochs + cosine lr": {"recent": 200, "epochs": 15, "lr_schedule": "cosine"},
    "20 epochs + cosine lr": {"epochs": 20, "lr_schedule": "cosine"},
    "no logQ": {"logq": False},
    # then over 20 epochs with cosine decay: the tower bias, and the logQ strength with it
    "tower bias": WITH_BIAS,
    "tower bias + 128 factors": {**WITH_BIAS, "factors": 128},
    "tower bias + temperature 0.05": {**WITH_BIAS, "temperature": 0.05},
    "tower bias + learning rate 0.005": {**WITH_BIAS, "learning_rate": 0.005},
    "tower bias + 30 epochs": {**WITH_BIAS, "epochs": 30},
    "logQ x 0.5": {**WITH_BIAS, "logq": 0.5},
    "logQ x 0.75": {**WITH_BIAS, "logq": 0.75},
    "logQ x 1.25": {**WITH_BIAS, "logq": 1.25},
    "logQ x 1.5": {**WITH_BIAS, "logq": 1.5},
    "logQ x 2": {**WITH_BIAS, "logq": 2.0},
    "logQ x 3": {**WITH_BIAS, "logq": 3.0},
    "current defaults": {**WITH_BIAS, "logq": 1.5, "factors": 128},
    "logQ x 1.5 + 128 factors": {**WITH_BIAS, "logq": 1.5, "factors": 128},
    "20 epochs + cosine lr + 128 factors": {"epochs": 20, "lr_schedule": "cosine", "factors": 128},
    "20 epochs + cosine lr + hidden 512": {"epochs": 20, "lr_schedule": "cosine", "hidden": 512},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("RECSYS_SHARED_DATA", "/work/shared/data"))
    parser.add_argument("--datasets", default="ml-100k,ml-latest-small")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--split", default="warm", choices=["warm", "cold-items"])
    parser.add_argument("--output", default="tune_validation.json")
    parser.add_argument("--append", action="store_true", help="add rows to an existing output file")
    parser.add_argument("--reference", default="als", help="models scored on the same validation split (defaults)")
    parser.add_argument("--model-seeds", default="0", help="two-tower random_state values, each fitted (comma-separated)")
    args = parser.parse_args()
    out = HERE / args.output
    rows = json.loads(out.read_text()) if out.exists() and args.append else []
    for ds in args.datasets.split(","):
        ratings, ufiles, ifiles = datasets(Path(args.data))[ds]
        _plain, featured, _report = load(ratings, ufiles, ifiles)
        if args.split == "warm":
            train, _test = split(featured, "user", test_fraction=0.2, seed=0)
            del _test  # set aside: nothing below may see it
            fit_part, valid = validation_split(train, 0.2, 0)
            score = evaluate
        else:  # cold items carved from the training items of run.py's cold-item split
            train, _test = split(featured, "cold-items", test_fraction=0.2, seed=0)
            del _test
            fit_part, valid = split(train, "cold-items", test_fraction=0.2, seed=1)
            score = evaluate_cold_items
        seeds = [int(x) for x in args.model_seeds.split(",")]
        runs = [("two-tower", name, {**CANDIDATES[name], **({"random_state": seed} if seed else {})})
                for name in args.candidates.split(",") if name for seed in seeds]
        runs += [(ref, f"{ref} (defaults, reference)", {}) for ref in args.reference.split(",") if ref]
        for model_name, name, params in runs:
            t0 = time.perf_counter()
            # Only the two-tower model reads the feature tables; the others ignore them.
            extra = {"device": "cpu", **BEFORE_ROUND_FOUR} if model_name == "two-tower" else {}
            model = create_model(model_name, **{**extra, **params}).fit(fit_part)
            ev = score(model, valid, ks=[K])
            row = {"dataset": ds, "split": args.split, "setting": name, "params": params,
                   f"recall@{K}": ev.metrics[f"recall@{K}"], f"ndcg@{K}": ev.metrics[f"ndcg@{K}"],
                   "fit_s": round(time.perf_counter() - t0, 1), "load": round(os.getloadavg()[0], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
