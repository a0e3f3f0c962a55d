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


@command
@with_read_options
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Saved model directory.")],
    data: Annotated[Path, typer.Option("--data", help="Test interactions (held-out entries are the relevant items).")],
    train: Annotated[Path | None, typer.Option("--train", help="Training interactions to exclude from rankings (default: the model's own training data).")] = None,
    k: Ks = "10,20,50",
    per_user: Annotated[Path | None, typer.Option("--per-user", help="Write each user's metrics to this CSV or Parquet file.")] = None,
    retrieval: Annotated[Literal["exact", "annoy"], typer.Option("--retrieval", help="annoy: rank through the model's Annoy index and report overlap@k with the exact top-k.")] = "exact",
    search_k: Annotated[int | None, typer.Option("--search-k", help="Annoy candidates inspected per query (default: as saved; -1: Annoy's own).")] = None,
    fmt: Format = "table",
    quiet: Quiet = False,
    read_options: Any = None,
) -> None:
    """Rank the full catalogue for every test user, excluding their training items, and report recall, NDCG, precision, MAP, MRR, hit rate and coverage at each k."""
    from recsys.workflows import evaluate_model, write_table

    result = evaluate_model(
        model, data, train=train, ks=parse_ks(k), read_options=read_options,
        per_user=per_user is not None, progress=not quiet, retrieval=retrieval, search_k=search_k,
    )
    if per_user is not None and result.per_user is not None:
        write_table(result.per_user, per_user)
    if fmt == "json":
        print_json(result.metrics)
        return
    skipped = f", {result.skipped_users} without training history skipped" if result.skipped_users else ""
    dropped = f"; {result.dropped_entries} test entries with ids unknown to the model dropped" if result.dropped_entries else ""
    note(f"{result.n_users} users, full ranking ({result.retrieval}), training items excluded{skipped}{dropped}", quiet)
    print(metrics_table(result))
    if per_user is not None:
        note(f"per-user metrics written to {per_user}", quiet)
