"""mf and two-tower in one and in two processes: quality (recall@20, NDCG@20) and throughput.

One script, one config (``configs/torchrun.toml``: data sets, seeds, runs); each run writes
``results/torchrun.<date>.<commit>.json`` and ``table`` puts the rows into the README's
``torchrun`` table. Run from the repository root:

    python -m experiments.distributed.torchrun run [--label "mf, 2 processes"] [--data ml-100k]
    python -m experiments.distributed.torchrun table

Each run is :func:`recsys.jobs.train` with ``nproc`` processes on this machine (the path
``recsys train --nproc N`` takes; torchrun's processes run the same code), on the CPU
(gloo), per-user 80/20 split and model seeded by the seed. Throughput is training pairs
per second of fit (pairs x epochs / fit seconds), measured by rank 0.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "torchrun.toml"
NAME = "torchrun"


def row_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["data"], row["label"], row["seed"]


def measure(spec: dict[str, Any], data: str, path: Path, seed: int) -> dict[str, Any]:
    result, run = common.train_as_a_user(path, spec["model"], spec.get("params", {}), seed, nproc=spec["nproc"])
    params = result.model.get_params()
    fit = run["fit_seconds"]
    return {"data": data, "label": spec["label"], "model": spec["model"], "nproc": spec["nproc"], "seed": seed,
            "params": params, "train_entries": result.train.nnz, "fit_seconds": fit,
            "pairs_per_second": result.train.nnz * params["epochs"] / fit,
            "recall@20": run["recall@20"], "ndcg@20": run["ndcg@20"]}


def stage_run(config: dict[str, Any], data_dir: Path, labels: Sequence[str] | None, names: Sequence[str] | None) -> None:
    machine_before = common.machine()
    rows = []
    for spec in config["runs"]:
        if labels and spec["label"] not in labels:
            continue
        for data in spec.get("data", list(config["data"])):
            if names and data not in names:
                continue
            path = common.data_file(config["data"][data], data_dir)
            for seed in spec.get("seeds", config["seeds"]):
                rows.append(measure(spec, data, path, seed))
                r = rows[-1]
                common.say(f"  {data} | {r['label']} | seed {seed}: recall@20 {r['recall@20']:.4f} ndcg@20 "
                           f"{r['ndcg@20']:.4f} fit {r['fit_seconds']:.1f}s {r['pairs_per_second']:,.0f} pairs/s")
    common.write_rows(RESULTS, NAME, {"machine_before": machine_before, "rows": rows}, row_key)


def table() -> list[str]:
    rows, results = common.merged_rows(RESULTS, NAME, row_key)
    if not rows:
        return []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["data"], row["label"]), []).append(row)
    header = ["data", "run", "seeds", "recall@20", "NDCG@20", "fit (s)", "pairs/s"]
    cells = []
    for (data, label), runs in groups.items():
        cells.append((data, label, len(runs), common.mean_std([r["recall@20"] for r in runs]),
                      common.mean_std([r["ndcg@20"] for r in runs]),
                      f"{statistics.median(r['fit_seconds'] for r in runs):.1f}",
                      f"{statistics.median(r['pairs_per_second'] for r in runs):,.0f}"))
    return [f"Mean ± standard deviation over seeds (split and model), medians of time; CPU, gloo; "
            f"{common.sources(RESULTS, results)}.", "", *common.markdown_table(header, cells)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "table"])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    parser.add_argument("--label", nargs="+", help="run: only the runs with these labels")
    parser.add_argument("--data", nargs="+", help="run: only these data sets")
    args = parser.parse_args(argv)
    if args.stage == "table":
        common.publish_table(f"experiments.distributed.{NAME}", table(), [(HERE / "README.md", NAME)])
        return
    stage_run(common.read_config(args.config), args.data_dir, args.label, args.data)


if __name__ == "__main__":
    main()
