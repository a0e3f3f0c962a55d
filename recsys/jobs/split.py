"""``recsys split`` as a function: train and test files for a log; tables written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recsys.artifacts import (
    OutputKind,
    atomic_directory,
    atomic_file,
    check_output,
    json_with_keys,
    write_json,
)
from recsys.data.interactions import Interactions
from recsys.data.io import write_interactions
from recsys.data.splits import SETTINGS, STRATEGIES, split
from recsys.errors import ConfigError
from recsys.jobs.settings import DataSource, ReadOptions, load, source_name

SPLIT_FILES = ("train.csv", "test.csv", "split.json")
SPLIT_DIRECTORY = OutputKind("split directory", directory=True, marker="split.json", names=frozenset(SPLIT_FILES),
                             recognise=json_with_keys(["strategy", "train_entries", "test_entries"]))


def split_file(
    data: DataSource,
    out_dir: str | os.PathLike,
    *,
    strategy: str = "user",
    test_fraction: float = 0.2,
    n: int = 1,
    seed: int = 0,
    read_options: ReadOptions | None = None,
) -> tuple[Path, Path, Interactions, Interactions]:
    """Split a log and write ``out_dir/train.csv``, ``out_dir/test.csv`` and ``split.json``.

    The directory is replaced as a whole, train and test together or not at all; one that
    holds other files is refused.
    """
    out = check_output(out_dir, SPLIT_DIRECTORY, inputs=[data])
    full = load(data, read_options)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown split {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    train_part, test_part = split(full, strategy, test_fraction=test_fraction, n=n, seed=seed)  # type: ignore[arg-type]
    settings = {"test_fraction": test_fraction, "n": n}
    record = {
        "source": source_name(data), "strategy": strategy, **{k: settings[k] for k in SETTINGS[strategy]},
        "seed": seed, "train_entries": train_part.nnz, "test_entries": test_part.nnz,
    }
    with atomic_directory(out, kind=SPLIT_DIRECTORY) as tmp:
        write_interactions(train_part, tmp / "train.csv", lock=False)
        write_interactions(test_part, tmp / "test.csv", lock=False)
        write_json(tmp / "split.json", record)
    return out / "train.csv", out / "test.csv", train_part, test_part


def write_table(frame: Any, path: str | os.PathLike, kind: OutputKind) -> Path:
    """Write a DataFrame as Parquet (``.parquet``) or CSV, atomically, over nothing but an
    earlier table of ``kind``."""
    path = Path(path)
    with atomic_file(path, kind=kind) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path
