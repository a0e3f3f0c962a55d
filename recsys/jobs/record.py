"""How a job describes its inputs and results to its :class:`~recsys.runs.Run`: data files,
feature tables, the model's device, the evaluation, the diagnostic artifacts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from recsys.artifacts import sha256_file
from recsys.data.interactions import Interactions
from recsys.evaluation.evaluate import Evaluation
from recsys.models.base import Recommender
from recsys.runs import Run


def device_of(model: Recommender) -> str:
    """The device the model was fitted on, in words (``cpu``, ``cuda:0``)."""
    return model.training_device()


def log_evaluation(run: Run, evaluation: Evaluation) -> None:
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


def log_diagnostics(run: Run, model: Any, item_features: Any = None) -> None:
    """The item map (PNG) and cluster summary as ``diagnostics/`` artifacts of a run that
    keeps anything (nothing is computed for a null run).

    Coloured by the item table's genre/category column when one is given, else by
    popularity. A model whose embedding cannot be clustered (too few distinct directions)
    still finishes its run: the reason is recorded in the ``recsys.diagnostics`` tag.
    """
    if run.run_id is None:
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
