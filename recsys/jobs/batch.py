"""``recsys recommend`` as a function: top-k for many users from a saved model, to a file."""

from __future__ import annotations

import os
from typing import Any

from recsys.artifacts import check_output
from recsys.data.interactions import Interactions
from recsys.diagnostics.report import load_item_titles
from recsys.errors import ConfigError
from recsys.jobs.record import data_params, feature_params
from recsys.jobs.settings import DataSource, FeatureTables, ReadOptions, load
from recsys.models.base import Recommender
from recsys.retrieval.batch import RECOMMENDATIONS, STDOUT, RecommendResult, recommend_to_file
from recsys.runs import NULL_RUN, Run
from recsys.spark.session import SparkSettings


def recommend(
    model: Recommender | str | os.PathLike,
    out: str | os.PathLike,
    users: Any = None,
    k: int = 10,
    *,
    history: DataSource | None = None,
    features: FeatureTables | None = None,
    read_options: ReadOptions | None = None,
    run: Run = NULL_RUN,
    model_source: str | None = None,
    item_table: str | os.PathLike | None = None,
    item_id_column: str | None = None,
    spark: SparkSettings | None = None,
    **options: Any,
) -> RecommendResult:
    """Write the top-``k`` items of ``users`` to ``out`` (:func:`recsys.retrieval.recommend_to_file`),
    reporting to ``run``.

    ``model`` is a model or a saved directory (whose Annoy index ``retrieval="annoy"``
    reads). New or returning users are folded in from ``history`` (an interaction file)
    and, for models that read them, from the user feature tables of ``features``
    (``FeatureTables(users=..., user_spec=...)``), without retraining. ``options`` go to
    :func:`~recsys.retrieval.recommend_to_file` (``retrieval``, ``include_seen``,
    ``search_k``, ``batch_users``, ``n_jobs``, ``device``, ``progress``). ``item_table``: an
    item table whose title (or name) column is added to the output (``item_id_column`` names
    its id column when it is not found by name).

    ``spark`` (:class:`recsys.spark.SparkSettings`) scores on Spark's executors and writes a
    directory of Parquet parts (:func:`recsys.spark.batch.recommend_on_spark`): exact
    retrieval, no history or feature tables.
    """
    features = features or FeatureTables()
    if spark is not None:
        _check_spark_options(history, features, item_table, options)
    elif os.fspath(out) != STDOUT:
        check_output(out, RECOMMENDATIONS, inputs=[model, history, features.users, item_table])
    model_dir = None
    if not isinstance(model, Recommender):
        model_dir = model
        model = Recommender.load(model)
    history_data = new_user_history(model, history, features, read_options)
    requested = "all" if users is None or isinstance(users, str) else f"{len(users)} given"
    run.log_params({"model": model.name, "model_source": model_source or (os.fspath(model_dir) if model_dir else None),
                    "k": k, "users": requested, "output": os.fspath(out),
                    **{key: options[key] for key in ("retrieval", "search_k", "include_seen")
                       if options.get(key) is not None}})
    if history is not None:
        run.log_params({k: v for k, v in data_params(history, "history").items() if v is not None})
    run.log_params(feature_params(features))
    if spark is not None:
        from recsys.spark.batch import recommend_on_spark

        run.log_params(spark.describe())
        result = recommend_on_spark(model, out, users, k, spark, include_seen=bool(options.get("include_seen")),
                                    progress=bool(options.get("progress")))
    else:
        if item_table is not None:
            options["item_titles"] = load_item_titles(model, item_table, id_column=item_id_column)
        result = recommend_to_file(model, out, users, k, model_dir=model_dir, history=history_data, **options)
    run.log_metrics({name: value for name, value in result.to_dict().items() if name not in ("k", "path", "retrieval")})
    result.run_id = run.run_id
    return result


def new_user_history(model: Recommender, history: DataSource | None, features: FeatureTables,
                     read_options: ReadOptions | None) -> Interactions | None:
    """The interactions to fold users in from: ``history`` read, with the users of the user
    feature tables added as users with features (and no entries, unless the history has some)."""
    history_data = None if history is None else load(history, read_options)
    if features.users is None:
        return history_data
    if not model.uses_features:
        raise ConfigError(f"model {model.name!r} does not use user features; drop --user-features")
    from recsys.data.features import load_features, with_new_users

    frame = load_features(features.users, "user", features.user_spec, (read_options or ReadOptions()).encoding)
    tables = features.users if isinstance(features.users, list | tuple) else [features.users]
    model.check_user_features(list(frame.columns), ", ".join(map(str, tables)))
    return with_new_users(history_data, frame, model.items)


def _check_spark_options(history: DataSource | None, features: FeatureTables, item_table: Any,
                         options: dict[str, Any]) -> None:
    """Refuse, before any work, what the Spark batch job does not do."""
    given = {"--history": history is not None, "--user-features": features.users is not None,
             "--item-features": item_table is not None,
             "--retrieval annoy": options.get("retrieval") not in (None, "exact"),
             # Local scoring's knobs: Spark's executors score on their CPUs in their own blocks.
             "--device": options.get("device") not in (None, "auto"),
             "--jobs": options.get("n_jobs") not in (None, -1),
             "--search-k": options.get("search_k") is not None}
    unsupported = [flag for flag, on in given.items() if on]
    if unsupported:
        raise ConfigError(f"--engine spark scores known users exactly (unknown ones get the popular items); "
                          f"drop {', '.join(unsupported)} or use --engine local")
