"""Issue 2: every model with its default settings on ml-100k and lastfm-2k, and implicit's ALS.

Per-user 80/20 holdout, seed 0; full ranking over every item, training items excluded;
recall@20 and NDCG@20; fit time, wall and CPU (this process; the machine is shared,
so CPU seconds are the steadier figure). Two reference rows call ``implicit`` directly (not through
``recsys``'s ``als`` wrapper): once with implicit's own defaults on the raw values (what a
user of implicit gets out of the box), once with the same settings as ``recsys``'s ``als``
defaults (which shows the wrapper adds nothing and loses nothing).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python -m experiments.baselines.run_baselines
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from experiments.common import DATA_DIR, ImplicitALS, load_dataset, machine_line
from recsys.data.splits import split
from recsys.evaluation.evaluate import evaluate
from recsys.models import ALS, create_model

HERE = Path(__file__).resolve().parent
K = 20

MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("popular", "popular", {}),
    ("als", "als", {}),
    ("ials", "ials", {}),
    ("mf (BPR)", "mf", {"loss": "bpr"}),
    ("mf (sampled softmax)", "mf", {"loss": "softmax"}),
]


def implicit_rows() -> list[tuple[str, dict[str, Any]]]:
    ours = ALS()
    return [
        ("implicit ALS, called directly, implicit's defaults on raw values",
         {"factors": 100, "regularization": 0.01, "alpha": 1.0, "weighting": "linear", "iterations": 15}),
        ("implicit ALS, called directly, recsys als's default settings",
         {"factors": ours.factors, "regularization": ours.regularization, "alpha": ours.alpha,
          "weighting": ours.weighting, "iterations": ours.epochs}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "lastfm-2k"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"Machine: {machine_line(args.threads)}", "",
             "| data set | model | recall@20 | NDCG@20 | fit wall (s) | fit CPU (s) | device |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.datasets:
        data = load_dataset(name, args.data_dir)
        train, test = split(data, "user", test_fraction=0.2, seed=args.seed)
        runs: list[tuple[str, Any]] = []
        for label, model, params in MODELS:
            if model in ("ials", "mf"):
                params = {**params, "device": args.device}
            runs.append((label, create_model(model, **params, **({"random_state": args.seed} if model != "popular" else {}))))
        for label, params in implicit_rows():
            runs.append((label, ImplicitALS(**params, num_threads=args.threads, random_state=args.seed)))
        for label, model in runs:
            cpu = time.process_time()
            model.fit(train)
            cpu = time.process_time() - cpu
            m = evaluate(model, test, ks=[K]).metrics
            device = str(getattr(model, "device", "cpu"))
            line = f"| {name} | {label} | {m[f'recall@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | {model.fit_seconds:.2f} | {cpu:.2f} | {device} |"
            print(line, flush=True)
            lines.append(line)
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
