"""``recsys datasets``: list and download public data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from recsys_cli.common import Format, Quiet, command, note, print_json

app = typer.Typer(help="Public data sets: list them, download them into the cache.", no_args_is_help=True)


@app.command("list")
@command
def list_datasets(fmt: Format = "table") -> None:
    """List the data sets that can be downloaded."""
    from recsys.data.datasets import DATASETS

    if fmt == "json":
        print_json({d.name: {"url": d.url, "description": d.description, "license": d.license} for d in DATASETS.values()})
        return
    for d in DATASETS.values():
        print(f"{d.name:<10} {d.description}")


@app.command("download")
@command
def download(
    name: Annotated[str, typer.Argument(help="ml-100k, ml-1m, ml-20m or lastfm-2k.")],
    cache: Annotated[Path | None, typer.Option("--cache", help="Cache folder (default: $RECSYS_DATA or ~/.cache/recsys).")] = None,
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
