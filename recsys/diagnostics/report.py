"""Diagnostics written as files: what a training run logs as artifacts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.artifacts import atomic_file, write_json
from recsys.diagnostics.clusters import cluster_items
from recsys.diagnostics.maps import Method, embedding_map
from recsys.diagnostics.metadata import align_items, read_item_features, title_column
from recsys.embeddings import Embeddings, EmbeddingSource
from recsys.errors import ConfigError

MAP_FILE = "embedding_map.png"
CLUSTERS_FILE = "clusters.json"


def load_item_features(model: EmbeddingSource, path: str | os.PathLike | None, *, id_column: str | None = None) -> pd.DataFrame | None:
    """The item table at ``path`` lined up with the model's items (None without a path)."""
    if path is None:
        return None
    model = Embeddings.of(model)
    return align_items(read_item_features(path), model.item_ids(range(model.n_items)), id_column=id_column, source=str(path))


def load_item_titles(model: EmbeddingSource, path: str | os.PathLike, *, id_column: str | None = None) -> np.ndarray:
    """The title (or name) of each of the model's items from the item table at ``path``;
    None where the table has no row for an item."""
    frame = load_item_features(model, path, id_column=id_column)
    assert frame is not None
    column = title_column(frame)
    if column is None:
        raise ConfigError(f"{path}: the item table has no title or name column; it has "
                          f"{', '.join(map(str, frame.columns))}")
    return np.asarray([None if pd.isna(v) else str(v) for v in frame[column]], dtype=object)


def write_diagnostics(
    model: EmbeddingSource,
    directory: str | os.PathLike,
    *,
    features: pd.DataFrame | None = None,
    color: str | None = None,
    method: Method = "pca",
    k: int | None = None,
    random_state: int = 0,
) -> dict[str, Path]:
    """Write the item map (``embedding_map.png``) and cluster summary (``clusters.json``).

    ``color`` defaults to a ``genres``/``genre``/``category`` column of ``features`` when
    there is one, else popularity. Returns ``{"map": path, "clusters": path}``; each file
    is written atomically; a model without a learned embedding (``popular``, one number
    per item) gets nothing and ``{}``. Meant for run artifacts, e.g. with MLflow:
    ``mlflow.log_artifacts(directory, "diagnostics")``.
    """
    if Embeddings.of(model).item_embeddings.shape[1] < 2:  # popular: no embedding to look at
        return {}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if color is None:
        color = next((c for c in ("genres", "genre", "category") if features is not None and c in features.columns), "popularity")
    emap = embedding_map(model, method=method, color=color, features=features, k=k, random_state=random_state)
    paths = {"map": emap.save(directory / MAP_FILE)}
    report = cluster_items(model, k, features=features, random_state=random_state)
    summary: dict[str, Any] = report.to_dict()
    with atomic_file(directory / CLUSTERS_FILE) as tmp:
        write_json(tmp, summary)
    paths["clusters"] = directory / CLUSTERS_FILE
    return paths
