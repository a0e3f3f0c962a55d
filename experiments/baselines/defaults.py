"""Every model with its default settings on public data sets, and implicit's ALS called directly.

One script, one config (``configs/defaults.toml``: the data sets, the seed, the models);
each run writes ``results/defaults.<date>.<commit>.json`` and ``table`` puts the newest
into the README. Run from the repository root:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python -m experiments.baselines.defaults run [--dataset ml-100k] [--model als]
    python -m experiments.baselines.defaults table

Protocol: per-user 80/20 holdout with the config's seed; full ranking over every item,
training items excluded; recall@20 and NDCG@20; fit time, wall and CPU (this process,
every thread: on a shared machine the steadier figure). The implicit rows call
``implicit`` directly (one ``fit``, not through ``recsys``'s ``als`` wrapper): with
implicit's own defaults on the raw values (what a user of implicit gets out of the box),
and with the settings ``recsys``'s ``als`` resolves for the same data (which shows the
wrapper adds nothing and loses nothing).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common
from recsys.data.interactions import Interactions
from recsys.data.splits import split
from recsys.evaluation.full_ranking import evaluate
from recsys.models import ALS, create_model
from recsys.models.base import Recommender

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "defaults.toml"
K = 20
TORCH_MODELS = ("ials", "mf", "two-tower")


def row_key(row: dict[str, Any]) -> tuple[str, str]:
    return row["dataset"], row["label"]


def contenders(config: dict[str, Any], train: Interactions) -> list[tuple[str, Recommender]]:
    """The config's models, labelled, unfitted."""
    seed, threads = config["seed"], config["threads"]
    out = []
    for spec in config["models"]:
        params = dict(spec.get("params", {}))
        if spec["model"] in TORCH_MODELS:
            params["device"] = config["device"]
        if spec["model"] != "popular":
            params["random_state"] = seed
        out.append((spec["label"], create_model(spec["model"], **params)))
    for spec in config.get("implicit", []):
        if spec.get("same_as_recsys_als"):
            ours = ALS().resolved_params(train)
            params = {"factors": ours["factors"], "regularization": ours["regularization"], "alpha": ours["alpha"],
                      "weighting": ours["weighting"], "iterations": ours["epochs"]}
        else:
            params = dict(spec["params"])
        out.append((spec["label"], common.ImplicitALS(**params, num_threads=threads, random_state=seed)))
    return out


def stage_run(config: dict[str, Any], data_dir: Path, datasets: Sequence[str], labels: Sequence[str] | None) -> None:
    import torch

    torch.set_num_threads(config["threads"])
    rows = []
    for name in datasets:
        train, test = split(common.load_dataset(name, data_dir), "user", test_fraction=0.2, seed=config["seed"])
        for label, model in contenders(config, train):
            if labels and label not in labels:
                continue
            cpu = time.process_time()
            model.fit(train)
            cpu = time.process_time() - cpu
            metrics = evaluate(model, test, ks=[K]).metrics
            row = {"dataset": name, "label": label, "params": model.get_params(),
                   f"recall@{K}": metrics[f"recall@{K}"], f"ndcg@{K}": metrics[f"ndcg@{K}"],
                   "fit_seconds": model.fit_seconds, "cpu_seconds": cpu,
                   "device": str(getattr(model, "device", "cpu"))}
            rows.append(row)
            common.say(f"  {name} {label}: recall {row[f'recall@{K}']:.4f} ndcg {row[f'ndcg@{K}']:.4f} "
                f"fit {row['fit_seconds']:.2f}s ({cpu:.2f}s CPU)")
    common.write_rows(RESULTS, "defaults", {"k": K, "seed": config["seed"], "threads": config["threads"], "rows": rows},
                             row_key)


def table() -> list[str]:
    rows, results = common.merged_rows(RESULTS, "defaults", row_key)
    if not rows:
        return []
    cells = [(r["dataset"], r["label"], f"{r[f'recall@{K}']:.4f}", f"{r[f'ndcg@{K}']:.4f}", f"{r['fit_seconds']:.2f}",
              f"{r['cpu_seconds']:.2f}", r["device"]) for r in rows]
    setting = "; ".join(sorted({f"seed {r['seed']}, {r['threads']} thread(s) per model" for r in results}))
    return [f"Per-user 80/20 holdout, {setting}; {common.sources(RESULTS, results)}.", "",
            *common.markdown_table(["data set", "model", f"recall@{K}", f"NDCG@{K}", "fit wall (s)", "fit CPU (s)", "device"], cells)]


def stage_table() -> None:
    common.publish_table("experiments.baselines.defaults", table(), [(HERE / "README.md", "defaults"), (HERE.parent / "README.md", "baselines/defaults")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "table"])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    parser.add_argument("--dataset", nargs="+", help="run: only these of the config's data sets")
    parser.add_argument("--model", nargs="+", metavar="LABEL", help="run: only the models with these labels")
    args = parser.parse_args(argv)
    if args.stage == "table":
        stage_table()
        return
    config = common.read_config(args.config)
    stage_run(config, args.data_dir, args.dataset or config["datasets"], args.model)


if __name__ == "__main__":
    main()
