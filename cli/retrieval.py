"""``recsys index``, ``recsys recommend``, ``recsys similar``: retrieval from a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from recsys_cli.common import (
    Engine,
    Format,
    Quiet,
    SparkConf,
    SparkMaster,
    command,
    note,
    print_json,
    with_read_options,
)
from recsys_cli.tracking import Experiment, Track, TrackingUri, run_note, tracker

from recsys.errors import ConfigError

# For people reading the output: the item table's title (or name) column beside the ids.
Titles = Annotated[Path | None, typer.Option("--item-features", help="Item table (CSV, TSV, Parquet, or MovieLens u.item / movies.csv) whose title or name column is added to the output.")]
TitleIdCol = Annotated[str | None, typer.Option("--item-id-col", help="Id column of the --item-features table (default: item_id/item/movieId/id, else the best match).")]
Model = Annotated[str, typer.Option("--model", help="Saved model directory, or an MLflow model URI such as runs:/<run id>/model.")]
Retrieval = Annotated[
    Literal["exact", "annoy"],
    typer.Option("--retrieval", help="exact: score every item (the yardstick); annoy: the model's saved Annoy index."),
]
SearchK = Annotated[
    int | None,
    typer.Option("--search-k", help="Annoy candidates inspected per query (default: as saved, else four times the catalogue up to 50,000; -1: Annoy's own candidates x trees)."),
]
Jobs = Annotated[int, typer.Option("--jobs", help="Threads for Annoy (-1: every CPU this process may use).")]
Trees = Annotated[int | None, typer.Option("--trees", help="Annoy trees per forest (more: better recall, bigger index).")]


def _load(model: str, tracking_uri: str | None = None) -> tuple[Any, Path]:
    from recsys.models import load_model
    from recsys.tracking import resolve_model_dir

    directory = resolve_model_dir(model, tracking_uri)  # runs:/ and models:/ URIs are downloaded
    return load_model(directory), directory


@command
def index(
    model: Model,
    trees: Trees = None,
    search_k: SearchK = None,
    jobs: Jobs = -1,
    seed: Annotated[int, typer.Option(help="Seed of the trees.")] = 0,
    fmt: Format = "table",
    quiet: Quiet = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Build (or rebuild) the Annoy index of a saved model, inside its directory (index/)."""
    from recsys.retrieval.annoy_index import DEFAULT_TREES, INDEX_DIR, build_index
    from recsys.tracking.serving import is_model_uri

    if is_model_uri(model):
        # The index goes inside the model directory: a downloaded copy is not the user's to keep.
        raise ConfigError(f"{model}: recsys index writes into a model directory; train with the index (the "
                          "default), or index a local copy of the model")
    loaded, directory = _load(model, tracking_uri)
    built = build_index(loaded, directory, trees=trees if trees is not None else DEFAULT_TREES, search_k=search_k, n_jobs=jobs, seed=seed)
    meta = {k: v for k, v in built.meta.items() if k != "files"}
    meta["bytes"] = sum(f["bytes"] for f in built.meta["files"].values())
    meta["path"] = str(directory / INDEX_DIR)
    if fmt == "json":
        print_json(meta)
        return
    note(
        f"index    {meta['path']}: {meta['n_items']} items, {meta['trees']} trees, "
        f"{meta['bytes'] / 2**20:.1f} MiB, built in {meta['build_seconds']:.2f}s",
        quiet,
    )


@command
@with_read_options
def recommend(
    model: Model,
    out: Annotated[str, typer.Option("--out", "-o", help="Output file: .parquet or .csv (columns user, item, rank, score, fallback); - for CSV on standard output. With --engine spark: a directory of Parquet parts (any path Spark writes).")],
    users: Annotated[str | None, typer.Option("--users", help="'all', a file of user ids (one per line, or a 'user' column), or ID,ID,... (default: all; with --history, the history's users).")] = None,
    k: Annotated[int, typer.Option("--k", help="Items per user.")] = 10,
    retrieval: Retrieval = "exact",
    include_seen: Annotated[bool, typer.Option("--include-seen", metavar="", help="Also recommend items the user already has.")] = False,
    history: Annotated[Path | None, typer.Option("--history", help="Interactions of new (or returning) users, folded in without retraining.")] = None,
    user_features: Annotated[list[Path] | None, typer.Option("--user-features", help="Feature table(s) of new users (two-tower): embedded from their features and any --history, without retraining.")] = None,
    user_features_spec: Annotated[str | None, typer.Option("--user-features-spec", help="Column types of --user-features (as for train).")] = None,
    search_k: SearchK = None,
    jobs: Jobs = -1,
    batch_users: Annotated[int, typer.Option("--batch-users", help="Users per chunk written.")] = 4096,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda for exact retrieval.")] = "auto",
    item_features: Titles = None,
    item_id_col: TitleIdCol = None,
    engine: Engine = "local",
    spark_master: SparkMaster = None,
    spark_conf: SparkConf = None,
    fmt: Format = "table",
    quiet: Quiet = False,
    track: Track = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    read_options: Any = None,
) -> None:
    """Top-k items for many users, written to a file atomically as it goes (with --engine spark: scored on Spark's executors, written as a directory of Parquet parts).

    Users the model does not know (and who have no --history) get the most popular items, marked fallback=true with a NaN score, and are counted."""
    runs = tracker(track, tracking_uri, experiment)  # MLflow loads in a process of its own meanwhile

    from recsys.jobs import FeatureTables
    from recsys.jobs import recommend as run_recommend
    from recsys.retrieval.batch import parse_users
    from recsys.spark import engine_settings
    from recsys.tracking import resolve_model_dir

    spark = engine_settings(engine, spark_master, spark_conf or [])
    if str(out) == "-" and fmt == "json":
        raise ConfigError("--out - writes the table to standard output; drop --format json")
    directory = resolve_model_dir(model, tracking_uri)  # runs:/ and models:/ URIs are downloaded
    with runs.run("recommend", kind="recommend") as run:
        result = run_recommend(
            directory, out, parse_users(users), k, history=history, read_options=read_options,
            features=FeatureTables(users=user_features or None, user_spec=user_features_spec),
            run=run, model_source=model, retrieval=retrieval, include_seen=include_seen,
            batch_users=batch_users, search_k=search_k, n_jobs=jobs, device=device, progress=not quiet,
            item_table=item_features, item_id_column=item_id_col, spark=spark,
        )
    if fmt == "json":
        print_json(result.to_dict())
        return
    where = "standard output" if str(result.path) == "-" else result.path
    note(f"wrote    {result.rows:,} rows for {result.users:,} users to {where} "
         f"({result.retrieval}, k={result.k}, {result.seconds:.2f}s)", quiet)
    if result.folded_users:
        dropped = (f"; {result.dropped_history_entries} history entries with unknown items dropped"
                   if result.dropped_history_entries else "")
        sources = [str(path) for path in [history, *(user_features or [])] if path is not None]
        note(f"history  {result.folded_users} users folded in from {', '.join(sources)}{dropped}", quiet)
    if result.fallback_users:
        # Not silenced by --quiet: it changes what the file means.
        who = "user" if result.fallback_users == 1 else "users"
        note(f"fallback {result.fallback_users:,} {who} unknown to the model got the most popular items "
             "(rows marked fallback=true, score NaN)", False)
    if result.run_id:
        note(run_note(result.run_id, runs), quiet)


@command
def similar(
    model: Model,
    item: Annotated[str, typer.Option("--item", help="Item id, or ID,ID,...")],
    k: Annotated[int, typer.Option("--k", help="Similar items per item.")] = 10,
    retrieval: Annotated[
        Literal["auto", "exact", "annoy"],
        typer.Option("--retrieval", help="auto: the saved Annoy index when there is one, else exact."),
    ] = "auto",
    search_k: SearchK = None,
    item_features: Titles = None,
    item_id_col: TitleIdCol = None,
    fmt: Format = "table",
    quiet: Quiet = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Items most similar to the given ones, by cosine of the item factors."""
    from recsys.diagnostics.report import load_item_titles
    from recsys.retrieval.batch import open_retrieval, similar_table

    loaded, directory = _load(model, tracking_uri)
    titles = None if item_features is None else load_item_titles(loaded, item_features, id_column=item_id_col)
    searcher = open_retrieval(loaded, retrieval, directory, search_k=search_k)
    retrieval = searcher.name
    queries = [part.strip() for part in item.split(",") if part.strip()]
    rows, unknown = similar_table(loaded, queries, k, searcher, item_titles=titles)
    if fmt == "json":
        print_json({"retrieval": retrieval, "similar": rows, "unknown_items": unknown})
    else:
        named = titles is not None
        print("item\trank\tsimilar\tsimilarity" + ("\ttitle\tsimilar_title" if named else ""))
        for row in rows:
            extra = f"\t{row['title']}\t{row['similar_title']}" if named else ""
            print(f"{row['item']}\t{row['rank']}\t{row['similar']}\t{row['similarity']:.4f}{extra}")
        note(f"({retrieval} retrieval, cosine of item factors)", quiet)
    if unknown:
        note(f"unknown items (not in the model): {', '.join(map(str, unknown))}", False)
