"""How a job describes its inputs and results to its :class:`~recsys.runs.Run`: the settings,
data files, feature tables, the evaluation, the diagnostic artifacts, a training run's outcome."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.artifacts import sha256_file
from recsys.data.interactions import Interactions
from recsys.evaluation.full_ranking import Evaluation
from recsys.jobs.config import settings_toml
from recsys.jobs.settings import DataSource, FeatureTables, TrainConfig
from recsys.models import create_model
from recsys.runs import Run

if TYPE_CHECKING:
    from recsys.jobs.training import TrainResult


def log_evaluation(run: Run, evaluation: Evaluation) -> None:
    """Final test metrics (``recall_at_20``...) and the metrics table as ``metrics.csv``.

    Why there are none (a model that cannot score cold items) is the ``recsys.note`` tag.
    """
    run.log_metrics(evaluation.metrics)
    if evaluation.extra.get("note"):
        run.set_tags({"recsys.note": str(evaluation.extra["note"])})
    run.log_metrics({"evaluated_users": evaluation.n_users, "skipped_users": evaluation.skipped_users})
    if evaluation.sampled_from is not None:
        run.log_metrics({"evaluation_sampled_from": evaluation.sampled_from})
        run.set_tags({"recsys.evaluation": f"a seeded sample of {evaluation.n_users} of "
                                           f"{evaluation.sampled_from} test users, full ranking"})
    table = evaluation.table()
    table.index.name = "metric"
    run.log_table(table, "metrics.csv")


def log_diagnostics(run: Run, model: Any, item_features: Any = None) -> None:
    """The item map (PNG) and cluster summary as ``diagnostics/`` artifacts of a run that
    keeps anything (nothing is computed for a null run).

    Coloured by the item table's genre/category column when one is given, else by
    popularity. A model whose embedding cannot be clustered (too few distinct directions)
    still finishes its run: the reason is recorded in the ``recsys.diagnostics`` tag.
    """
    if not run.recording:
        return
    from recsys.diagnostics import load_item_features, write_diagnostics
    from recsys.errors import RecsysError

    path = item_features[0] if isinstance(item_features, list | tuple) and item_features else item_features
    with tempfile.TemporaryDirectory(prefix="recsys-diagnostics-") as tmp:
        try:
            features = load_item_features(model, path) if path is not None else None
            written = write_diagnostics(model, tmp, features=features)
        except RecsysError as error:
            run.set_tags({"recsys.diagnostics": f"skipped: {error}"})
            return
        if written:
            run.log_directory(tmp, "diagnostics")


def data_params(source: Any, prefix: str = "data") -> dict[str, Any]:
    """Path, size and SHA-256 of a data file (an in-memory log: its source and fingerprint)."""
    if isinstance(source, Interactions):
        return {f"{prefix}_path": source.source, f"{prefix}_fingerprint": source.fingerprint(),
                f"{prefix}_entries": source.nnz}
    if "://" in os.fspath(source):  # a URI Spark read (hdfs://, s3a://): as given
        return {f"{prefix}_path": os.fspath(source)}
    path = Path(source)
    if not path.is_file():
        return {f"{prefix}_path": str(path)}
    return {f"{prefix}_path": str(path.resolve()), f"{prefix}_bytes": path.stat().st_size,
            f"{prefix}_sha256": sha256_file(path)}


def feature_params(features: Any) -> dict[str, Any]:
    """Path, size and SHA-256 of each feature table of a :class:`FeatureTables`, and the specs.

    ``user_features_path``, ``item_features_path`` (then ``item_features_1_path``... when a
    side has several tables), ``item_features_spec``; tables given as frames are not described.
    """
    params: dict[str, Any] = {}
    if features is None:
        return params
    for side, (tables, spec) in features.sides().items():
        tables = [tables] if isinstance(tables, str | os.PathLike) else tables
        if not isinstance(tables, list | tuple):
            continue
        for i, table in enumerate(tables):
            if isinstance(table, str | os.PathLike):
                params.update(data_params(table, f"{side}_features" + (f"_{i}" if i else "")))
        if isinstance(spec, str | os.PathLike):
            params[f"{side}_features_spec"] = os.fspath(spec)
    return params


def config_params(config: TrainConfig) -> dict[str, Any]:
    """Run settings and every hyper-parameter of the model (defaults filled in), as a run
    records them."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "params"}
    settings["ks"] = ",".join(map(str, config.ks))
    if not config.validation_fraction:
        for key in ("validation_metric", "patience"):
            settings.pop(key, None)
    hyper = create_model(config.model, **config.model_params()).get_params()
    return {**settings, **hyper}


def record_settings(run: Run, config: TrainConfig, data: DataSource, test: DataSource | None,
                     features: FeatureTables, data_info: Mapping[str, Any] | None) -> None:
    run.log_params(config_params(config))
    run.log_params(data_info if data_info is not None else data_params(data))
    if test is not None:
        run.log_params(data_params(test, "test"))
    run.log_params(feature_params(features))


def record_outcome(run: Run, result: TrainResult, features: FeatureTables) -> None:
    """Everything a finished run has to record besides the model."""
    model = result.model
    run.log_metrics({f"{k}_seconds": v for k, v in result.seconds.items()})
    run.log_metrics({"train_entries": result.train.nnz, "n_users": result.train.n_users,
                     "n_items": result.train.n_items})
    if result.test is not None:
        run.log_metrics({"test_entries": result.test.nnz})
    if model.best_epoch is not None:
        run.log_metrics({"best_epoch": model.best_epoch})
    run.set_tags({"recsys.device": model.training_device(), "recsys.model": model.name})
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
    log_diagnostics(run, model, features.items)
