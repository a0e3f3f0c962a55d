"""``recsys split``: write train and test files for a log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from recsys_cli.common import Format, Quiet, command, note, print_json, with_read_options


@command
@with_read_options
def split(
    data: Annotated[Path, typer.Option("--data", help="Interaction log to split.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Directory for train.csv, test.csv and split.json (replaced as a whole).")],
    strategy: Annotated[str, typer.Option("--strategy", help="user (per-user fraction), random, temporal (global cutoff), last-n (per user), leave-one-out, cold-items (a share of items held out with all their entries).")] = "user",
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out share (user, random, temporal; of the items for cold-items).")] = 0.2,
    n: Annotated[int, typer.Option("--n", help="Entries per user held out by last-n.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the random choices.")] = 0,
    fmt: Format = "table",
    quiet: Quiet = False,
    read_options: Any = None,
) -> None:
    """Split an interaction log into DIR/train.csv and DIR/test.csv (header user,item,rating|weight[,timestamp]), seeded and reproducible."""
    from recsys.jobs import split_file

    train_path, test_path, train, test = split_file(
        data, out_dir, strategy=strategy, test_fraction=test_fraction, n=n, seed=seed, read_options=read_options
    )
    if fmt == "json":
        print_json({"train": str(train_path), "test": str(test_path), "train_entries": train.nnz, "test_entries": test.nnz})
        return
    note(f"{strategy} split of {data} (seed {seed})", quiet)
    print(f"train  {train_path}  {train.nnz} entries")
    print(f"test   {test_path}  {test.nnz} entries")
