"""``recsys evaluate``: metrics of a saved model on a test file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from recsys_cli.common import (
    Format,
    Ks,
    Quiet,
    command,
    metrics_table,
    note,
    parse_ks,
    print_json,
    with_read_options,
)
from recsys_cli.tracking import Experiment, Track, TrackingUri, run_note, tracker


@command
@with_read_options
def evaluate(
    model: Annotated[str, typer.Option("--model", help="Saved model directory, or an MLflow model URI such as runs:/<run id>/model.")],
    data: Annotated[Path, typer.Option("--data", help="Test interactions (held-out entries are the relevant items).")],
    train: Annotated[Path | None, typer.Option("--train", help="Training interactions to exclude from rankings (default: the model's own training data).")] = None,
    k: Ks = None,
    per_user: Annotated[Path | None, typer.Option("--per-user", help="Write each user's metrics to this CSV or Parquet file.")] = None,
    retrieval: Annotated[Literal["exact", "annoy"], typer.Option("--retrieval", help="annoy: rank through the model's Annoy index and report overlap@k with the exact top-k.")] = "exact",
    search_k: Annotated[int | None, typer.Option("--search-k", help="Annoy candidates inspected per query (default: as saved; -1: Annoy's own).")] = None,
    cold_items: Annotated[bool, typer.Option("--cold-items", metavar="", help="Rank the test's items without training interactions among themselves (as train --split cold-items).")] = False,
    fmt: Format = "table",
    quiet: Quiet = False,
    track: Track = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    read_options: Any = None,
) -> None:
    """Rank the full catalogue for every test user, excluding their training items, and report recall, NDCG, precision, MAP, MRR, hit rate, and coverage, Gini, popularity percentile, novelty and diversity at each k."""
    runs = tracker(track, tracking_uri, experiment)  # MLflow loads in a process of its own meanwhile

    from recsys.jobs import evaluate_model
    from recsys.jobs.settings import check_sources
    from recsys.tracking import resolve_model_dir

    check_sources(data, train)  # before the run (and its store) is opened
    with runs.run("evaluate", kind="evaluate") as run:
        # An MLflow model URI is downloaded (--tracking-uri counts with --no-track too).
        directory = resolve_model_dir(model, runs.uri)
        result = evaluate_model(
            directory, data, train=train, ks=parse_ks(k or "10,20,50"), read_options=read_options,
            per_user=per_user if per_user is not None else False, progress=not quiet, retrieval=retrieval, search_k=search_k,
            cold_items=cold_items, run=run, model_source=model,
        )
    cold = {k: v for k, v in result.extra.items() if k != "run_id"} if cold_items else {}
    if fmt == "json":
        print_json({**result.metrics, "users": result.n_users, "skipped_users": result.skipped_users,
                    "dropped_entries": result.dropped_entries, **({"cold_items": cold} if cold else {}),
                    "run_id": result.extra.get("run_id")})
        return
    if "note" in cold:
        print(f"cold-item metrics: none; {cold['note']}")
    elif cold:
        note(f"cold     {cold['cold_items']} items without training interactions, ranked among themselves", quiet)
    skipped = f", {result.skipped_users} without training history skipped" if result.skipped_users else ""
    dropped = (f"; {result.dropped_entries} test entries of users or items unknown to the model dropped"
               + (" from the ranking (RMSE covers them)" if "rmse" in result.metrics else "")
               if result.dropped_entries else "")
    if result.metrics:
        ranking = "cold items only" if cold else f"full ranking ({result.retrieval})"
        note(f"{result.n_users} users, {ranking}, training items excluded{skipped}{dropped}", quiet)
        print(metrics_table(result))
    if per_user is not None:
        note(f"per-user metrics written to {per_user}", quiet)
    if result.extra.get("run_id"):
        note(run_note(result.extra["run_id"], runs), quiet)
