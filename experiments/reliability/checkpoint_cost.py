"""What checkpointing costs: seconds per checkpoint, bytes on disk, and the slowdown of training.

Usage: python experiments/reliability/checkpoint_cost.py [DATA] (default: ml-latest-small)

For each model, trains the same run three ways on the CPU: no checkpoints, a checkpoint
every epoch, and a checkpoint every 5 epochs, and times one save and one load on its own.
Writes a Markdown table to stdout. Timings depend on the machine and its load, printed
in the header.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from recsys.checkpoint import Checkpointing, load_checkpoint, save_checkpoint
from recsys.data.io import read_interactions
from recsys.models import create_model

DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data/ml-latest-small/ratings.csv")
RUNS = {
    "mf (bpr, d=64)": ("mf", {"factors": 64, "epochs": 10, "device": "cpu"}),
    "ials (d=64)": ("ials", {"factors": 64, "epochs": 10, "device": "cpu"}),
    "als (d=64)": ("als", {"factors": 64, "epochs": 10, "device": "cpu"}),
}


def timed_fit(name: str, params: dict, data, every: int | None, directory: Path) -> float:
    model = create_model(name, **params)
    options = {} if every is None else {"checkpointing": Checkpointing(directory, every=every)}
    start = time.perf_counter()
    model.fit(data, **options)
    return time.perf_counter() - start


def main() -> None:
    data = read_interactions(DATA)
    print(f"# Checkpoint cost on {DATA.name}: {data.n_users} users, {data.n_items} items, {data.nnz} entries\n")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; load average at start {os.getloadavg()}\n")
    print("| model | fit, no checkpoints (s) | every epoch (s) | every 5 epochs (s) | one save (s) | one load (s) | size (MB) |")
    print("|---|---|---|---|---|---|---|")
    for label, (name, params) in RUNS.items():
        tmp = Path(tempfile.mkdtemp())
        try:
            base = timed_fit(name, params, data, None, tmp / "c0")
            each = timed_fit(name, params, data, 1, tmp / "c1")
            five = timed_fit(name, params, data, 5, tmp / "c5")
            # One save and one load on their own: the checkpoint of the every-epoch run.
            start = time.perf_counter()
            ckpt = load_checkpoint(tmp / "c1")
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            save_checkpoint(tmp / "again", {k: v for k, v in ckpt.meta.items() if k not in ("random", "files")},
                            {k: v for k, v in ckpt.arrays.items() if not k.startswith("rng.")})
            save_s = time.perf_counter() - start
            size = sum(f.stat().st_size for f in (tmp / "c1").iterdir()) / 1e6
            print(f"| {label} | {base:.2f} | {each:.2f} | {five:.2f} | {save_s:.3f} | {load_s:.3f} | {size:.1f} |")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
