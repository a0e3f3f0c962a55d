"""``recsys experiment``: run a grid of experiments, show an experiment's leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from recsys_cli.common import Format, Quiet, command, note, print_json
from recsys_cli.tracking import TrackingUri

app = typer.Typer(help="Experiment grids recorded in MLflow: run one, show a leaderboard.", no_args_is_help=True)


def _print_board(board, fmt: str) -> None:
    if fmt == "json":
        print_json(board.reset_index().to_dict(orient="records"))
        return
    frame = board.copy()
    frame["run_id"] = frame["run_id"].str[:8]
    print(frame.to_string(float_format=lambda v: f"{v:.4f}", na_rep=""))


@app.command("run")
@command
def run(
    grid: Annotated[Path, typer.Argument(help="Grid file (TOML): data sets, splits, models, hyper-parameter grids.")],
    tracking_uri: TrackingUri = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", rich_help_panel="Tracking (MLflow)",
        help="MLflow experiment name (default: the grid file's `experiment`, else its file name).")] = None,
    fmt: Format = "table",
    quiet: Quiet = False,
) -> None:
    """Train and evaluate every combination of a grid file, each as a child run of one parent run; print the leaderboard."""
    from recsys.jobs import read_grid, run_grid
    from recsys.tracking import Tracker

    spec = read_grid(grid)
    tracker = Tracker(tracking_uri, experiment or spec.experiment)
    tracker.open()  # fail before the first combination if the store is unreachable
    note(f"{len(spec)} combinations, recorded in {tracker.uri} (experiment {tracker.experiment!r})", quiet)

    def report(combo, state: str, value: float | None) -> None:
        shown = f"{spec.metric} {value:.4f}" if value is not None else state
        note(f"  {combo.name}: {shown}", quiet and not state.startswith("failed"))  # failures always show

    name = f"grid-{spec.source.stem if spec.source else spec.experiment}"
    with tracker.run(name, kind="grid") as parent:
        result = run_grid(spec, parent, progress=False, on_combination=report)
    _print_board(result.leaderboard, fmt)
    failed = f"; {result.failed} failed" if result.failed else ""
    note(f"parent run {result.run_id}{failed}; leaderboard logged as leaderboard.csv and leaderboard.md", quiet)


@app.command("show")
@command
def show(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    metric: Annotated[str | None, typer.Option("--metric", help="Sort by this metric (default: the grid's own).")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="A grid's parent run (default: the latest grid).")] = None,
    tracking_uri: TrackingUri = None,
    fmt: Format = "table",
) -> None:
    """Print the leaderboard of an experiment's latest grid (or of its train runs) from the tracking store."""
    from recsys.tracking import Tracker, leaderboard

    tracker = Tracker(tracking_uri, name)
    _print_board(leaderboard(tracker, experiment=name, parent_run_id=run_id, metric=metric), fmt)
