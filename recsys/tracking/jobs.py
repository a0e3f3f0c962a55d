"""The jobs of :mod:`recsys.workflows` and :mod:`recsys.tuning`, recorded as MLflow runs.

Each function takes the same arguments as the job it wraps plus a :class:`Tracker`
(``None`` or a disabled tracker: the job runs untracked) and returns the job's own result.

A training run records every hyper-parameter (the model's defaults included), the data
file's path, size and SHA-256, the split and its seed, per-epoch figures (``loss``,
``val_recall_at_20``...) as metric history, the final test metrics, fit time and
device; tags ``recsys.version`` and ``recsys.git_commit``; artifacts ``config.toml``
(the resolved settings), ``metrics.csv``, ``recsys_model/`` (the model directory) and
the servable pyfunc model ``model``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recsys.artifacts import sha256_file
from recsys.data.interactions import Interactions
from recsys.tracking.tracker import NullRun, TrackedRun, Tracker, end_active_run

Run = TrackedRun | NullRun


def data_params(source: Any, prefix: str = "data") -> dict[str, Any]:
    """Path, size and SHA-256 of a data file (an in-memory log: its source and fingerprint)."""
    if isinstance(source, Interactions):
        return {f"{prefix}_path": source.source, f"{prefix}_fingerprint": source.fingerprint(),
                f"{prefix}_entries": source.nnz}
    path = Path(source)
    if not path.is_file():
        return {f"{prefix}_path": str(path)}
    return {f"{prefix}_path": str(path.resolve()), f"{prefix}_bytes": path.stat().st_size,
            f"{prefix}_sha256": sha256_file(path)}


def feature_params(options: Mapping[str, Any]) -> dict[str, Any]:
    """Path, size and SHA-256 of each feature table given to a train job, and the column specs.

    ``user_features_path``, ``item_features_path`` (then ``item_features_1_path``... when a
    side has several tables), ``item_features_spec``; tables given as frames are not described.
    """
    params: dict[str, Any] = {}
    for side in ("user", "item"):
        tables = options.get(f"{side}_features")
        if tables is None:
            continue
        if isinstance(tables, (str, os.PathLike)):
            tables = [tables]
        if not isinstance(tables, (list, tuple)):
            continue
        for i, table in enumerate(tables):
            if isinstance(table, (str, os.PathLike)):
                params.update(data_params(table, f"{side}_features" + (f"_{i}" if i else "")))
        spec = options.get(f"{side}_features_spec")
        if isinstance(spec, (str, os.PathLike)):
            params[f"{side}_features_spec"] = os.fspath(spec)
    return params


def config_params(config: Any) -> dict[str, Any]:
    """Run settings and every hyper-parameter of the model (defaults filled in)."""
    from recsys.models import create_model

    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "params"}
    settings["ks"] = ",".join(map(str, config.ks))
    if not config.validation_fraction:
        for key in ("validation_metric", "patience"):
            settings.pop(key, None)
    hyper = create_model(config.model, **config.model_params()).get_params()
    return {**settings, **hyper}


def device_of(model: Any) -> str:
    """The device the model was fitted on, in words (``cpu``, ``cuda:0``)."""
    device = getattr(model, "device", None)
    if device is None and "use_gpu" in model.get_params():
        device = "cuda" if model.get_params()["use_gpu"] else "cpu"
    if device in (None, "auto"):
        if model.name == "popular":
            return "cpu"
        from recsys.device import resolve_device

        device = resolve_device("auto")
    return str(device)


def log_training(run: Run, result: Any, *, log_model: bool = True, item_features: Any = None) -> None:
    """Everything a finished :func:`recsys.workflows.train` has to record."""
    from recsys.config import settings_toml

    model = result.model
    run.log_metrics({f"{k}_seconds": v for k, v in result.seconds.items()})
    run.log_metrics({"train_entries": result.train.nnz, "n_users": result.train.n_users,
                     "n_items": result.train.n_items})
    if result.test is not None:
        run.log_metrics({"test_entries": result.test.nnz})
    if getattr(model, "best_epoch", None) is not None:
        run.log_metrics({"best_epoch": model.best_epoch})
    run.set_tags({"recsys.device": device_of(model), "recsys.model": model.name})
    chosen = model.describe_auto()
    if chosen:
        # The values "auto" chose for this data (the params logged at the start say "auto").
        given = model.get_params()
        run.log_params({f"fitted.{k}": v for k, v in model.fitted_params.items() if v != given[k]})
        run.set_tags({"recsys.auto": chosen})
    resolved = dataclasses.replace(result.config, params=model.fitted_params)
    run.log_text(settings_toml(resolved, "# resolved settings of this run (recsys train --config)\n"), "config.toml")
    if result.evaluation is not None:
        log_evaluation(run, result.evaluation)
    if result.model_dir is not None and log_model:
        run.log_directory(result.model_dir, "recsys_model")
        run.log_model(result.model_dir)
    if isinstance(run, TrackedRun):
        log_diagnostics(run, model, item_features)


def log_diagnostics(run: Run, model: Any, item_features: Any = None) -> None:
    """The item map (PNG) and cluster summary as ``diagnostics/`` artifacts.

    Coloured by the item table's genre/category column when one is given, else by
    popularity. A model whose embedding cannot be clustered (too few distinct directions)
    still finishes its run: the reason is recorded in the ``recsys.diagnostics`` tag.
    """
    from recsys.diagnostics import load_item_features, write_diagnostics
    from recsys.errors import RecsysError

    path = item_features[0] if isinstance(item_features, (list, tuple)) and item_features else item_features
    with tempfile.TemporaryDirectory(prefix="recsys-diagnostics-") as tmp:
        try:
            features = load_item_features(model, path) if path is not None else None
            written = write_diagnostics(model, tmp, features=features)
        except RecsysError as error:
            run.set_tags({"recsys.diagnostics": f"skipped: {error}"})
            return
        if written:
            run.log_directory(tmp, "diagnostics")


def log_evaluation(run: Run, evaluation: Any) -> None:
    """Final test metrics (``recall_at_20``...) and the metrics table as ``metrics.csv``.

    Why there are none (a model that cannot score cold items) is the ``recsys.note`` tag.
    """
    run.log_metrics(evaluation.metrics)
    if evaluation.extra.get("note"):
        run.set_tags({"recsys.note": str(evaluation.extra["note"])})
    run.log_metrics({"evaluated_users": evaluation.n_users, "skipped_users": evaluation.skipped_users})
    table = evaluation.table()
    table.index.name = "metric"
    run.log_table(table, "metrics.csv")


def train(data: Any, config: Any = None, *, tracker: Tracker | None = None, run_name: str | None = None,
          tags: Mapping[str, str] | None = None, nested: bool = False,
          data_info: Mapping[str, Any] | None = None, **train_options: Any) -> Any:
    """:func:`recsys.workflows.train`, recorded as a run (returns its :class:`TrainResult`).

    The store is checked before the data is read. With ``save=False`` and model logging
    on, the model is saved to a temporary directory just long enough to be logged.
    ``data_info`` replaces the recorded description of ``data`` (a log read once and
    trained on many times: its file's path, size and hash).
    """
    from recsys import workflows

    if train_options.get("resume") is not None:
        # A resumed run records the checkpoint's own data and settings.
        data, config, test, read_options, output, every = workflows.resume_settings(
            train_options["resume"], data, config, train_options.get("test"), train_options.get("read_options"),
            train_options.get("output"), train_options.get("checkpoint_every", 0))
        train_options.update(test=test, read_options=read_options, output=output, checkpoint_every=every)
        names = ("user_features", "item_features", "user_features_spec", "item_features_spec")
        train_options.update(workflows.resume_features(train_options["resume"],
                                                       {n: train_options.get(n) for n in names}))
    config = config or workflows.TrainConfig()
    config.check()
    tracker = tracker or Tracker.disabled()
    with tracker.run(run_name or f"train-{config.model}", kind="train", tags=tags, nested=nested) as run:
        run.log_params(config_params(config))
        run.log_params(data_info if data_info is not None else data_params(data))
        if train_options.get("test") is not None:
            run.log_params(data_params(train_options["test"], "test"))
        run.log_params(feature_params(train_options))
        callbacks = [*train_options.pop("callbacks", ()), run.callback()]
        temporary = None
        if tracker.enabled and tracker.log_models and not train_options.get("save", True):
            temporary = tempfile.TemporaryDirectory(prefix="recsys-model-")
            train_options.update(save=True, output=Path(temporary.name) / "model")
        try:
            result = workflows.train(data, config, callbacks=callbacks, **train_options)
            log_training(run, result, log_model=tracker.log_models,
                         item_features=train_options.get("item_features"))
        finally:
            if temporary is not None:
                temporary.cleanup()
        if temporary is not None:
            result.model_dir = None
        result.run_id = run.run_id
    return result


def evaluate_model(model: Any, test: Any, *, tracker: Tracker | None = None, run_name: str | None = None,
                   **options: Any) -> Any:
    """:func:`recsys.workflows.evaluate_model`, recorded as a run.

    ``model`` may be a model, a directory or an MLflow URI (``runs:/<id>/model``).
    """
    from recsys import workflows
    from recsys.artifacts import read_json
    from recsys.models.base import Recommender
    from recsys.tracking.serving import resolve_model_dir

    tracker = tracker or Tracker.disabled()
    with tracker.run(run_name or "evaluate", kind="evaluate") as run:
        if isinstance(model, Recommender):
            run.log_params({"model": model.name, **model.get_params()})
        else:
            source = os.fspath(model)
            # A local directory (an MLflow URI downloaded), so a saved Annoy index is found.
            model = resolve_model_dir(source, tracker.uri)  # --tracking-uri counts with --no-track too
            meta = read_json(Path(model) / "model.json") if (Path(model) / "model.json").is_file() else {}
            run.log_params({"model": meta.get("model"), "model_source": source, **meta.get("params", {})})
        run.log_params(data_params(test))
        if options.get("train") is not None:
            run.log_params(data_params(options["train"], "train"))
        run.log_params({k: options[k] for k in ("retrieval", "search_k", "cold_items") if options.get(k)})
        run.log_params({"ks": ",".join(map(str, options.get("ks", ())))} if options.get("ks") else {})
        evaluation = workflows.evaluate_model(model, test, **options)
        log_evaluation(run, evaluation)
        evaluation.extra["run_id"] = run.run_id
    return evaluation


def recommend_to_file(model: Any, out: Any, users: Any = None, k: int = 10, *, tracker: Tracker | None = None,
                      model_source: str | None = None, run_name: str | None = None,
                      user_features: Any = None, user_features_spec: Any = None, **options: Any) -> Any:
    """:func:`recsys.retrieval.batch.recommend_to_file`, recorded as a run.

    Records the model and its source (a directory or ``runs:/...``), ``k``, the retrieval
    settings and the output path as parameters; users, rows, fallback users and seconds
    as metrics. The output file itself is not copied into the store. ``user_features``
    (the new users' feature tables, already attached to ``history``) are only recorded.
    """
    from recsys.retrieval.batch import recommend_to_file as write

    tracker = tracker or Tracker.disabled()
    with tracker.run(run_name or "recommend", kind="recommend") as run:
        requested = "all" if users is None or isinstance(users, str) else f"{len(users)} given"
        run.log_params({"model": model.name, "model_source": model_source, "k": k, "users": requested,
                        "output": os.fspath(out),
                        **{key: options[key] for key in ("retrieval", "search_k", "include_seen")
                           if options.get(key) is not None}})
        if options.get("history") is not None:
            history = data_params(options["history"], "history")
            run.log_params({k: v for k, v in history.items() if v is not None})
        run.log_params(feature_params({"user_features": user_features, "user_features_spec": user_features_spec}))
        result = write(model, out, users, k, **options)
        run.log_metrics({name: value for name, value in result.to_dict().items()
                         if name not in ("k", "path", "retrieval")})
    result.run_id = run.run_id  # type: ignore[attr-defined]
    return result


def tune(data: Any, config: Any, *, tracker: Tracker | None = None, run_name: str | None = None,
         **options: Any) -> Any:
    """:func:`recsys.tuning.tune` as a parent run with every trial as a child run.

    The parent records the fixed settings, the search space, the best value and settings
    (``best.<name>`` parameters, ``best_config.toml``) and the trials table ``trials.csv``.
    """
    from recsys import tuning
    from recsys.config import settings_toml

    tracker = tracker or Tracker.disabled()
    metric = options.get("metric", "recall@20")
    with tracker.run(run_name or f"tune-{config.model}", kind="tune") as run:
        run.log_params({**config_params(config), "metric": metric,
                        "validation_fraction": options.get("validation_fraction", 0.2)})
        run.log_params({k: options[k] for k in ("trials", "time_budget") if options.get(k) is not None})
        run.log_params(data_params(data))
        space = options.get("space") or tuning.SEARCH_SPACES.get(config.model, {})
        run.log_text("\n".join(tuning.describe_space(space)) + "\n", "search_space.txt")
        previous = options.pop("on_trial", None)

        def on_trial(number: int, params: dict[str, Any], value: float | None, seconds: float, state: str) -> None:
            log_trial(run, number, params, value, seconds, state, metric)
            if previous is not None:
                previous(number, params, value, seconds, state)

        result = tuning.tune(data, config, on_trial=on_trial, **options)
        run.log_params(result.best_params, prefix="best.")
        run.log_metrics({f"best_{metric}": result.best_value, "tune_seconds": result.seconds})
        run.log_table(result.trials, "trials.csv")
        run.log_text(settings_toml(result.config), "best_config.toml")
    result.run_id = run.run_id  # type: ignore[attr-defined]
    return result


def log_trial(run: Run, number: int, params: Mapping[str, Any], value: float | None, seconds: float,
              state: str, metric: str) -> None:
    """One tuning trial as a child run (``FAILED`` when the trial failed)."""
    if isinstance(run, NullRun):
        return
    import mlflow

    child = mlflow.start_run(run_name=f"trial-{number}", nested=True, experiment_id=run.tracker.experiment_id,
                             tags={"mlflow.parentRunId": run.run_id, "recsys.kind": "trial"})
    mlflow.log_params({**{k: str(v) for k, v in params.items()}, "trial": str(number)}, run_id=child.info.run_id)
    metrics = {"seconds": seconds}
    if value is not None:
        metrics[f"val_{metric}"] = value
    TrackedRun(child.info.run_id, run.tracker).log_metrics(metrics)
    end_active_run("FINISHED" if state == "complete" else "FAILED")


__all__: Sequence[str] = ["config_params", "data_params", "evaluate_model", "log_training", "recommend_to_file",
                          "train", "tune"]
