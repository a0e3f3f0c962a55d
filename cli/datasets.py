"""``recsys datasets``: list and download public data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from recsys_cli.common import Format, Quiet, command, note, print_json

app = typer.Typer(help="Public data sets: list them, download them into the cache, or add a copy downloaded by hand.",
                  no_args_is_help=True)
Cache = Annotated[Path | None, typer.Option("--cache", help="Cache folder (default: $RECSYS_DATA or ~/.cache/recsys).")]


@app.command("list")
@command
def list_datasets(fmt: Format = "table") -> None:
    """List the data sets that can be downloaded."""
    from recsys.data.datasets import DATASETS

    if fmt == "json":
        print_json({d.name: {"url": d.url, "description": d.description, "license": d.license} for d in DATASETS.values()})
        return
    width = max(len(name) for name in DATASETS)
    for d in DATASETS.values():
        print(f"{d.name:<{width}}  {d.description}")


@app.command("download")
@command
def download(
    name: Annotated[str, typer.Argument(help="A name from `recsys datasets list`.")],
    cache: Cache = None,
    force: Annotated[bool, typer.Option("--force", metavar="", help="Download again even if cached.")] = False,
    quiet: Quiet = False,
) -> None:
    """Download a data set from its publisher, verify its checksum, unpack it; print its folder."""
    from recsys.data.datasets import DATASETS
    from recsys.data.datasets import download as fetch

    if name in DATASETS:
        note(f"{DATASETS[name].description}\nterms: {DATASETS[name].license}", quiet)
    folder = fetch(name, cache=cache, force=force, progress=not quiet)
    print(folder)


@app.command("add")
@command
def add(
    name: Annotated[str, typer.Argument(help="A name from `recsys datasets list`.")],
    path: Annotated[Path, typer.Argument(help="The archive downloaded by hand (or, for amazon-book, the folder of its files).")],
    cache: Cache = None,
    quiet: Quiet = False,
) -> None:
    """Add a copy downloaded by hand to the cache (checked like a download); print its folder."""
    from recsys.data.datasets import add as register

    folder = register(name, path, cache=cache)
    note(f"{name} added to the cache", quiet)
    print(folder)
