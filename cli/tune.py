"""``recsys tune``: search hyper-parameters on a validation split carved from train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from recsys_cli.common import (
    Format,
    ItemFeatures,
    ItemFeaturesSpec,
    MinItemCount,
    MinRating,
    MinUserCount,
    Quiet,
    UserFeatures,
    UserFeaturesSpec,
    command,
    note,
    print_json,
    with_read_options,
)
from recsys_cli.tracking import Experiment, Track, TrackingUri, run_note, tracker


@command
@with_read_options
def tune(
    data: Annotated[Path, typer.Option("--data", help="Interaction log.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to tune: ials, als, mf or two-tower (default: the config's, else ials).")] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Number of trials (default 30, or as many as fit with --time-budget).")] = None,
    metric: Annotated[str, typer.Option("--metric", help="Validation metric to maximize.")] = "recall@20",
    validation_fraction: Annotated[float, typer.Option("--validation-fraction", help="Per-user share of train held out for validation.")] = 0.2,
    space: Annotated[Path | None, typer.Option("--space", help="TOML search space: name = [choices] or name = {low=, high=, log=true}.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Base settings (split, seed, fixed hyper-parameters).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Fixed hyper-parameter KEY=VALUE (not searched).")] = None,
    split: Annotated[str | None, typer.Option(help="Split strategy, as for train (default user).")] = None,
    test_fraction: Annotated[float | None, typer.Option("--test-fraction", help="Test share set aside, as for train.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split and the sampler.")] = None,
    min_rating: MinRating = None,
    min_user_count: MinUserCount = None,
    min_item_count: MinItemCount = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    time_budget: Annotated[str | None, typer.Option("--time-budget", help="Wall time for the whole search, e.g. 90s, 5m, 1h: no trial starts that would likely end past it.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the best settings (default: tuned-<model>.toml).")] = None,
    user_features: UserFeatures = None,
    item_features: ItemFeatures = None,
    user_features_spec: UserFeaturesSpec = None,
    item_features_spec: ItemFeaturesSpec = None,
    fmt: Format = "table",
    quiet: Quiet = False,
    track: Track = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    read_options: Any = None,
) -> None:
    """Search hyper-parameters with Optuna on a validation split carved from the training part (the test part is never used), and write the best settings for `recsys train --config`."""
    runs = tracker(track, tracking_uri, experiment)  # MLflow loads in a process of its own meanwhile

    from recsys.jobs import FeatureTables
    from recsys.jobs import tune as run_tune
    from recsys.jobs.config import build_train_config, read_toml
    from recsys.jobs.space import parse_space

    settings = build_train_config(
        config_file=config, model=model, params=param or [], device=device,
        seed=seed, split=split, test_fraction=test_fraction,
        filters={"min_rating": min_rating, "min_user_count": min_user_count, "min_item_count": min_item_count},
    )
    search = None
    if space is not None:
        spec = read_toml(space)
        search = parse_space(spec.get("space", spec), settings.model)
    from recsys.jobs.settings import check_sources

    check_sources(data)  # before the run (and its store) is opened
    features = FeatureTables(user_features or None, item_features or None, user_features_spec, item_features_spec)
    with runs.run(f"tune-{settings.model}", kind="tune") as run:
        result = run_tune(
            data, settings, trials=trials, space=search, metric=metric, validation_fraction=validation_fraction,
            time_budget=time_budget, read_options=read_options, progress=not quiet, features=features, run=run,
            output=output or Path(f"tuned-{settings.model}.toml"),
        )
    path = result.config_path
    if fmt == "json":
        print_json({"best_params": result.best_params, "best_value": result.best_value, "metric": metric,
                    "trials": len(result.trials), "config": str(path), "run_id": result.run_id})
        return
    table = result.trials.sort_values(metric, ascending=False, na_position="last").head(10)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    note(f"best validation {metric} {result.best_value:.4f} with {result.best_params}", quiet)
    note(f"settings written to {path} (recsys train --config {path})", quiet)
    if result.run_id:
        note(run_note(result.run_id, runs), quiet)
