"""Options every tracked command shares: --track/--no-track, --tracking-uri, --experiment."""

from __future__ import annotations

from typing import Annotated

import typer

_PANEL = "Tracking (MLflow)"

Track = Annotated[bool | None, typer.Option(
    "--track/--no-track", show_default=False, rich_help_panel=_PANEL,
    metavar="", help="Record the run in MLflow (default: on, unless $RECSYS_NO_TRACK=1).")]
TrackingUri = Annotated[str | None, typer.Option(
    "--tracking-uri", rich_help_panel=_PANEL,
    help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")]
Experiment = Annotated[str | None, typer.Option(
    "--experiment", rich_help_panel=_PANEL, help="MLflow experiment name (default: recsys).")]


def tracker(track: bool | None, uri: str | None, experiment: str | None):
    """The :class:`recsys.tracking.Tracker` the flags ask for, its recording process already
    started (:meth:`~recsys.tracking.Tracker.prepare`): call it before the command's own imports."""
    from recsys.tracking import Tracker

    runs = Tracker.from_options(track, uri, experiment)
    runs.prepare()
    return runs


def run_note(run_id: str | None, tracker) -> str | None:
    """One line telling where the run was recorded, or None when it was not."""
    if run_id is None:
        return None
    return f"run      {run_id} in {tracker.uri} (experiment {tracker.experiment!r})"
