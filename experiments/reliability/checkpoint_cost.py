"""What checkpointing costs: seconds per checkpoint, bytes on disk, and the slowdown of training.

One script, one config (``configs/checkpoint-cost.toml``: the data file, the intervals, the
models); each run writes ``results/checkpoint-cost.<date>.<commit>.json`` and ``table`` puts
the newest into the README. Run from the repository root:

    OMP_NUM_THREADS=1 python -m experiments.reliability.checkpoint_cost run [--model "als (d=64)"]
    python -m experiments.reliability.checkpoint_cost table

For each model, trains the same run on the CPU without checkpoints and with a checkpoint
every N epochs for each interval of the config, then times one save and one load of a
checkpoint on their own. Timings depend on the machine and its load, recorded with them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common
from recsys.checkpoint import Checkpointing, load_checkpoint, save_checkpoint
from recsys.data.interactions import Interactions
from recsys.data.io import read_interactions
from recsys.models import create_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "checkpoint-cost.toml"


def row_key(row: dict[str, Any]) -> str:
    return row["label"]


def timed_fit(model: str, params: dict[str, Any], data: Interactions, checkpointing: Checkpointing | None) -> float:
    estimator = create_model(model, **params)
    options = {} if checkpointing is None else {"checkpointing": checkpointing}
    start = time.perf_counter()
    estimator.fit(data, **options)
    return time.perf_counter() - start


def measure(spec: dict[str, Any], data: Interactions, every: Sequence[int]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    try:
        row: dict[str, Any] = {"label": spec["label"], "model": spec["model"], "params": spec.get("params", {})}
        row["fit_seconds"] = timed_fit(spec["model"], row["params"], data, None)
        row["fit_seconds_every"] = {str(n): timed_fit(spec["model"], row["params"], data, Checkpointing(tmp / f"c{n}", every=n))
                                    for n in every}
        # One save and one load on their own: the checkpoint of the first interval's run.
        directory = tmp / f"c{every[0]}"
        start = time.perf_counter()
        ckpt = load_checkpoint(directory)
        row["load_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        save_checkpoint(tmp / "again", {k: v for k, v in ckpt.meta.items() if k not in ("random", "files")},
                        {k: v for k, v in ckpt.arrays.items() if not k.startswith("rng.")})
        row["save_seconds"] = time.perf_counter() - start
        row["size_mb"] = sum(f.stat().st_size for f in directory.iterdir()) / 1e6
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stage_run(config: dict[str, Any], data_dir: Path, labels: Sequence[str] | None) -> None:
    import torch

    torch.set_num_threads(config["threads"])
    path = common.data_file(config["data"], data_dir)
    data = read_interactions(path)
    common.say(f"{path.name}: {data.n_users} users, {data.n_items} items, {data.nnz} entries")
    machine_before = common.machine()
    rows = []
    for spec in config["models"]:
        if labels and spec["label"] not in labels:
            continue
        rows.append(measure(spec, data, config["every"]))
        common.say(f"  {rows[-1]}")
    common.write_rows(RESULTS, "checkpoint-cost", {
        "data": {"file": config["data"], "users": data.n_users, "items": data.n_items, "entries": data.nnz},
        "threads": config["threads"], "every": config["every"], "machine_before": machine_before, "rows": rows},
        row_key)


def table() -> list[str]:
    rows, results = common.merged_rows(RESULTS, "checkpoint-cost", row_key)
    if not rows:
        return []
    every = sorted({n for r in rows for n in r["fit_seconds_every"]}, key=int)
    header = ["model", "fit, no checkpoints (s)",
              *("every epoch (s)" if n == "1" else f"every {n} epochs (s)" for n in every),
              "one save (s)", "one load (s)", "size (MB)"]
    cells = [(r["label"], f"{r['fit_seconds']:.2f}", *(_seconds(r["fit_seconds_every"].get(n)) for n in every),
              f"{r['save_seconds']:.3f}", f"{r['load_seconds']:.3f}", f"{r['size_mb']:.1f}") for r in rows]
    data = "; ".join(sorted({f"{r['data']['file']} ({r['data']['users']:,} users, {r['data']['items']:,} items, "
                             f"{r['data']['entries']:,} entries)" for r in results}))
    return [f"{data}, {', '.join(sorted({str(r['threads']) for r in results}))} torch thread(s); "
            f"{common.sources(RESULTS, results)}.", "", *common.markdown_table(header, cells)]


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "table"])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    parser.add_argument("--model", nargs="+", metavar="LABEL", help="run: only the models with these labels")
    args = parser.parse_args(argv)
    if args.stage == "table":
        common.publish_table("experiments.reliability.checkpoint_cost", table(), [(HERE / "README.md", "")])
        return
    stage_run(common.read_config(args.config), args.data_dir, args.model)


if __name__ == "__main__":
    main()
