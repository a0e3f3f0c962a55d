"""Offline evaluation through an approximate index, next to the exact top-k it approximates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.embeddings import Embeddings, EmbeddingSource
from recsys.evaluation.full_ranking import DEFAULT_KS, Evaluation, evaluate


def overlap_at(approx: np.ndarray, exact: np.ndarray, k: int) -> np.ndarray:
    """Per row, the share of the exact top-``k`` that the approximate top-``k`` found.

    Both (B, >=k) item indices, -1 for padding; rows with no exact items count as 1.
    """
    a, e = approx[:, :k], exact[:, :k]
    found = ((a[:, :, None] == e[:, None, :]) & (e[:, None, :] >= 0)).any(1).sum(1)
    size = (e >= 0).sum(1)
    return np.where(size > 0, found / np.maximum(size, 1), 1.0)


def evaluate_with_index(
    model: EmbeddingSource,
    test: Interactions,
    index: Any,  # any retrieval with search(vectors, k, exclude): an AnnoyIndex, say
    *,
    train: Interactions | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    per_user: bool = False,
    batch_users: int = 2048,
    progress: bool = False,
) -> Evaluation:
    """:func:`recsys.evaluation.evaluate` with ``index`` retrieving the candidates.

    The metrics are those of the index's lists; ``overlap@k`` (the share of the exact
    top-k the index found, averaged over the evaluated users) shows what the
    approximation costs. ``extra["seconds"]`` holds the time spent in each retrieval.
    """
    import time

    model = Embeddings.of(model)
    exact = model.exact_index()
    overlaps: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    seconds = {"index": 0.0, "exact": 0.0}

    def search(users: np.ndarray, k: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        vectors = model.user_vectors[users]
        start = time.perf_counter()
        found, scores = index.search(vectors, k, exclude)
        seconds["index"] += time.perf_counter() - start
        start = time.perf_counter()
        truth, _ = exact.search(vectors, k, exclude)
        seconds["exact"] += time.perf_counter() - start
        for cut in overlaps:
            overlaps[cut].append(overlap_at(found, truth, cut))
        return found, scores

    result = evaluate(
        model, test, train=train, ks=ks, search=search, retrieval=getattr(index, "name", "index"),
        per_user=per_user, batch_users=batch_users, progress=progress,
    )
    for cut, parts in sorted(overlaps.items()):
        values = np.concatenate(parts) if parts else np.zeros(0)
        result.metrics[f"overlap@{cut}"] = float(values.mean()) if len(values) else float("nan")
    result.extra["table_metrics"] = ("overlap",)
    result.extra["seconds"] = seconds
    return result
