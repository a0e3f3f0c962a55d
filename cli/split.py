"""``recsys split``: write train and test files for a log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from recsys_cli.common import (
    Encoding,
    FeedbackOpt,
    Format,
    Header,
    ItemCol,
    Quiet,
    RatingCol,
    Sep,
    SkipBadRows,
    TimestampCol,
    UserCol,
    WeightCol,
    command,
    note,
    print_json,
    read_options,
)


@command
def split(
    data: Annotated[Path, typer.Option("--data", help="Interaction log to split.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Directory for train.csv, test.csv and split.json (replaced as a whole).")],
    strategy: Annotated[str, typer.Option("--strategy", help="user (per-user fraction), random, temporal (global cutoff), last-n (per user), leave-one-out.")] = "user",
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out share (user, random, temporal).")] = 0.2,
    n: Annotated[int, typer.Option("--n", help="Entries per user held out by last-n.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the random choices.")] = 0,
    fmt: Format = "table",
    quiet: Quiet = False,
    user_col: UserCol = None,
    item_col: ItemCol = None,
    rating_col: RatingCol = None,
    weight_col: WeightCol = None,
    timestamp_col: TimestampCol = None,
    sep: Sep = None,
    header: Header = None,
    feedback: FeedbackOpt = None,
    encoding: Encoding = "utf-8",
    skip_bad_rows: SkipBadRows = False,
) -> None:
    """Split an interaction log into DIR/train.csv and DIR/test.csv
    (header user,item,rating|weight[,timestamp]), seeded and reproducible."""
    from recsys.workflows import split_file

    options = read_options(user_col, item_col, rating_col, weight_col, timestamp_col, sep, header, feedback, encoding, skip_bad_rows)
    train_path, test_path, train, test = split_file(
        data, out_dir, strategy=strategy, test_fraction=test_fraction, n=n, seed=seed, read_options=options
    )
    if fmt == "json":
        print_json({"train": str(train_path), "test": str(test_path), "train_entries": train.nnz, "test_entries": test.nnz})
        return
    note(f"{strategy} split of {data} (seed {seed})", quiet)
    print(f"train  {train_path}  {train.nnz} entries")
    print(f"test   {test_path}  {test.nnz} entries")
