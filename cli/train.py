"""``recsys train``: fit a model on an interaction log, evaluate it, save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from recsys_cli.common import (
    Engine,
    Format,
    ItemFeatures,
    ItemFeaturesSpec,
    Ks,
    MinItemCount,
    MinRating,
    MinUserCount,
    Quiet,
    SparkConf,
    SparkMaster,
    UserFeatures,
    UserFeaturesSpec,
    command,
    metrics_table,
    note,
    parse_ks,
    print_json,
    with_read_options,
)
from recsys_cli.tracking import Experiment, Track, TrackingUri, run_note, tracker

_MODEL = "Model and hyper-parameters"
_SPLIT = "Evaluation"
_CKPT = "Checkpoints"
_SCALE = "Scaling out"


@command
@with_read_options
def train(
    data: Annotated[str | None, typer.Option("--data", help="Interaction log: CSV, TSV, ::-separated or Parquet, gzip or not (with --engine spark: any path Spark reads, a directory of parts, hdfs://, s3a://).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model: ials, als, mf, bpmf, two-tower or popular (default ials).", rich_help_panel=_MODEL)] = None,
    factors: Annotated[int | None, typer.Option(help="Embedding dimension.", rich_help_panel=_MODEL)] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.", rich_help_panel=_MODEL)] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", help="Step size (mf, two-tower).", rich_help_panel=_MODEL)] = None,
    regularization: Annotated[float | None, typer.Option(help="L2 regularization.", rich_help_panel=_MODEL)] = None,
    loss: Annotated[str | None, typer.Option(help="mf loss: softmax, bpr or mse.", rich_help_panel=_MODEL)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Any other hyper-parameter as KEY=VALUE (repeatable), e.g. -p alpha=4.", rich_help_panel=_MODEL)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file of settings (flags given here win).", rich_help_panel=_MODEL)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (auto: $RECSYS_DEVICE, else a GPU if present).", rich_help_panel=_MODEL)] = "auto",
    seed: Annotated[int | None, typer.Option(help="Seed of the split and the model (default 0).", rich_help_panel=_MODEL)] = None,
    split: Annotated[str | None, typer.Option(help="user (per-user 80/20), random, temporal, last-n, leave-one-out, cold-items (a share of items held out whole), or none (train on all).", rich_help_panel=_SPLIT)] = None,
    test_fraction: Annotated[float | None, typer.Option("--test-fraction", help="Held-out share for user, random and temporal splits, of the items for cold-items (default 0.2).", rich_help_panel=_SPLIT)] = None,
    split_n: Annotated[int | None, typer.Option("--split-n", help="Entries per user held out by last-n (default 1).", rich_help_panel=_SPLIT)] = None,
    test: Annotated[str | None, typer.Option("--test", help="Evaluate on this file instead of splitting.", rich_help_panel=_SPLIT)] = None,
    k: Ks = None,
    validation_fraction: Annotated[float | None, typer.Option("--validation-fraction", help="Carve a per-user validation split from train: per-epoch recall, early stopping.", rich_help_panel=_SPLIT)] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after this many epochs without validation gain.", rich_help_panel=_SPLIT)] = None,
    eval_users: Annotated[int | None, typer.Option("--eval-users", help="Evaluate a seeded sample of this many test users (each still ranks every item; default: all). For logs of millions of users.", rich_help_panel=_SPLIT)] = None,
    min_rating: MinRating = None,
    min_user_count: MinUserCount = None,
    min_item_count: MinItemCount = None,
    user_features: UserFeatures = None,
    item_features: ItemFeatures = None,
    user_features_spec: UserFeaturesSpec = None,
    item_features_spec: ItemFeaturesSpec = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Model directory to write (default: models/<model>-<time>).")] = None,
    index: Annotated[bool, typer.Option("--index/--no-index", metavar="", help="Build the Annoy index into the model directory.")] = True,
    trees: Annotated[int | None, typer.Option("--trees", help="Annoy trees (default 20).")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Save a checkpoint every N epochs (iterative models). SIGINT/SIGTERM always save one.", rich_help_panel=_CKPT)] = 0,
    checkpoint_dir: Annotated[Path | None, typer.Option("--checkpoint-dir", help="Checkpoint directory (default: the model directory + .checkpoint).", rich_help_panel=_CKPT)] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run saved in this checkpoint directory, with its settings.", rich_help_panel=_CKPT)] = None,
    nproc: Annotated[int | None, typer.Option("--nproc", help="Train data-parallel in N processes on this machine (mf, two-tower; gloo on the CPU, NCCL on GPUs, one GPU each): each a shard of the pairs, the effective batch N x batch_size. Across machines, start the command with torchrun instead.", rich_help_panel=_SCALE)] = None,
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
    """Train a model on an interaction log, evaluate it on held-out data, and save it.

    With no options but --data: implicit-feedback iALS with defaults chosen for the data's shape, a per-user 80/20 holdout, recall, NDCG and the other metrics at 10, 20 and 50, and the model saved under models/."""
    from recsys.distributed import launched

    launch = launched()
    if launch is not None and launch.rank > 0:
        track, quiet = False, True  # under torchrun rank 0 alone tracks and prints
    runs = tracker(track, tracking_uri, experiment)  # MLflow loads in a process of its own meanwhile

    from recsys.checkpoint import read_checkpoint_meta
    from recsys.errors import ConfigError
    from recsys.jobs import FeatureTables
    from recsys.jobs import train as run_train
    from recsys.jobs.config import build_train_config
    from recsys.jobs.training import NO_DATA
    from recsys.retrieval.annoy_index import DEFAULT_TREES
    from recsys.spark import engine_settings

    spark = engine_settings(engine, spark_master, spark_conf or [])
    if data is None and resume is None:
        # Refused before a run is opened: a mistake in the command leaves no FAILED run behind.
        raise ConfigError(NO_DATA)
    from recsys.jobs.settings import check_sources

    check_sources(data, test)  # before the run (and its store) is opened
    features = FeatureTables(user_features or None, item_features or None, user_features_spec, item_features_spec)
    options = {"test": test, "output": output, "features": features, "progress": not quiet, "nproc": nproc,
               "index_trees": (trees if trees is not None else DEFAULT_TREES) if index else None, "checkpoint_every": checkpoint_every}
    if resume is not None:
        given = {"--model": model, "--factors": factors, "--epochs": epochs, "--learning-rate": learning_rate,
                 "--regularization": regularization, "--loss": loss, "--param": param, "--config": config,
                 "--seed": seed, "--split": split, "--test-fraction": test_fraction, "--split-n": split_n,
                 "--validation-fraction": validation_fraction, "--patience": patience, "--eval-users": eval_users,
                 "--min-rating": min_rating,
                 "--min-user-count": min_user_count, "--min-item-count": min_item_count}
        given.update({"--device": None if device == "auto" else device, "--k": k})
        clash = [flag for flag, value in given.items() if value is not None and value != []]
        if clash:
            raise ConfigError(f"--resume continues with the checkpoint's settings; drop {', '.join(clash)}")
        stored = read_checkpoint_meta(resume)  # a missing or damaged checkpoint stops here
        note(f"resume   {resume}: {stored.get('model')} after epoch {stored.get('epoch')} of {stored.get('epochs')}", quiet)
        # Feature files given again replace the stored paths (a moved file); absent ones are the stored ones.
        with runs.run(f"train-{stored.get('model')}", kind="train") as run:
            result = run_train(data, None, resume=resume, run=run, **options)
    else:
        settings = build_train_config(
            config_file=config, model=model,
            hyper={"factors": factors, "epochs": epochs, "learning_rate": learning_rate,
                   "regularization": regularization, "loss": loss},
            params=param or [], device=device, seed=seed, split=split, test_fraction=test_fraction,
            split_n=split_n, ks=None if k is None else parse_ks(k), validation_fraction=validation_fraction, patience=patience,
            eval_users=eval_users,
            filters={"min_rating": min_rating, "min_user_count": min_user_count, "min_item_count": min_item_count},
            engine=engine,
        )
        with runs.run(f"train-{settings.model}", kind="train") as run:
            result = run_train(data, settings, read_options=read_options, checkpoint_dir=checkpoint_dir,
                               checkpoint_on_signal=True, run=run, spark=spark, **options)
    if result.rank > 0:
        return
    _report(result, fmt, quiet)
    if fmt != "json" and result.run_id:
        note(run_note(result.run_id, runs), quiet)


def _report(result, fmt: Literal["table", "json"], quiet: bool) -> None:
    from recsys.jobs.training import describe_data

    model = result.model
    if fmt == "json":
        print_json({
            "model": model.name,
            "params": model.get_params(),
            "fitted_params": model.fitted_params,
            "data_shape": model.data_shape,
            "model_dir": str(result.model_dir) if result.model_dir else None,
            "train_entries": result.train.nnz,
            "test_entries": None if result.test is None else result.test.nnz,
            "seconds": result.seconds,
            "metrics": None if result.evaluation is None else result.evaluation.metrics,
            **({"evaluation": {"n_users": result.evaluation.n_users, "sampled_from": result.evaluation.sampled_from}}
               if result.evaluation is not None else {}),
            **({"cold_items": result.evaluation.extra} if result.evaluation is not None and result.evaluation.extra else {}),
            "run_id": result.run_id,
            "processes": result.processes,
        })
        return
    data = result.train
    users, items = result.read_shape or data.shape
    note(f"data     {data.source}: {users:,} users, {items:,} items; {describe_data(result)}", quiet)
    if result.filtered is not None:
        note(f"filter   {result.filtered.describe(result.config.filters())}", quiet)
    test = result.test.nnz if result.test is not None else 0
    note(f"train    {result.train.nnz:,} entries ({data.n_users:,} users, {data.n_items:,} items); test {test:,} entries",
         quiet)
    if result.features is not None:
        for side in ("user", "item"):
            if side in result.features.cold:
                note(f"features {side}s: {result.features.cold[side]} cold (features, no interactions), "
                     f"{result.features.missing[side]} without a feature row", quiet)
    note(f"model    {model!r} fitted in {result.seconds['fit']:.2f}s", quiet)
    if result.processes:
        each = model.get_params().get("batch_size")
        note(f"parallel {result.processes['processes']} processes ({result.processes['backend']}), each a shard of the "
             f"pairs; effective batch {result.processes['processes']} x {each}", quiet)
    chosen = model.describe_auto()
    if chosen:
        note(f"auto     {chosen}", quiet)
    if result.evaluation is not None and "cold_items" in result.evaluation.extra:
        extra = result.evaluation.extra
        note(f"cold     {extra['cold_items']} held-out items, ranked among themselves", quiet)
        if "note" in extra:
            print(f"cold-item metrics: none; {extra['note']}")
    if result.evaluation is not None and result.evaluation.metrics:
        ev = result.evaluation
        skipped = f", {ev.skipped_users} without training history skipped" if ev.skipped_users else ""
        dropped = (f"; {ev.dropped_entries} test entries of users or items without training entries dropped"
                   + (" from the ranking (RMSE covers them)" if "rmse" in ev.metrics else "")
                   if ev.dropped_entries else "")
        who = (f"a seeded sample of {ev.n_users:,} of {ev.sampled_from:,} users (--eval-users)" if ev.sampled_from
               else f"{ev.n_users} users")
        note(f"metrics  {who}, full ranking, training items excluded{skipped}{dropped}", quiet)
        print(metrics_table(ev))
    if result.model_dir is not None:
        note(f"saved    {result.model_dir}", quiet)
