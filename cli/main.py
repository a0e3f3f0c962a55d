"""The ``recsys`` command: one Typer app composed of the command modules."""

from __future__ import annotations

import gc
from typing import Annotated

import typer
from recsys_cli import datasets, embeddings, evaluate, experiment, retrieval, split, train, tune
from recsys_cli.common import State

app = typer.Typer(
    name="recsys",
    help="Recommender systems on learned embeddings: train, evaluate, recommend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        import recsys

        print(f"recsys {recsys.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", metavar="", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", metavar="", is_eager=True, callback=_version,
                                          help="Print recsys's version and exit.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=(
        "CPU threads to use (default: the CPUs this process may use, from its affinity and "
        "cgroup quota; also $RECSYS_THREADS)."))] = None,
) -> None:
    """Recommender systems on learned embeddings."""
    State.debug = debug
    if threads is not None:
        from recsys.device import set_threads

        set_threads(threads)


app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("split")(split.split)
app.command("tune")(tune.tune)
app.command("index")(retrieval.index)
app.command("recommend")(retrieval.recommend)
app.command("similar")(retrieval.similar)
app.add_typer(datasets.app, name="datasets")
app.add_typer(embeddings.app, name="embeddings")
app.add_typer(experiment.app, name="experiment")


def main() -> None:
    """The console script."""
    try:
        app()
    finally:
        # Objects moved to the permanent generation are not collected again at exit: the
        # interpreter's teardown of a process that imported torch drops from about half a
        # second to a tenth. Exit handlers, flushing and cleanup run as usual.
        gc.freeze()


if __name__ == "__main__":
    main()
