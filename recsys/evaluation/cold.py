"""Cold-item evaluation: how well a model ranks items it never saw interact.

After a cold-item split (:func:`recsys.data.splits.cold_item_split`) the held-out items
have no training entries. Each test user's held-out items are ranked among the cold items
only (the candidates are the items without training interactions that have test entries),
the protocol of cold-start studies such as DropoutNet. A model that embeds items only from
their interactions (MF, ALS) has nothing to rank them by: the evaluation says so instead
of reporting a number.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.embeddings import Embeddings, EmbeddingSource, ExactIndex
from recsys.errors import InputError
from recsys.evaluation.full_ranking import (
    DEFAULT_KS,
    Evaluation,
    _report_order,
    _validate_ks,
    evaluate_search,
)

CANNOT_SCORE = "cannot score items without interactions (it learns item embeddings only from interactions)"


def cold_item_indices(model: EmbeddingSource, test: Interactions) -> np.ndarray:
    """Indices (in the model's vocabulary) of test items with no training interactions."""
    model = Embeddings.of(model)
    test, _ = test.reindex(model.users, model.items)
    in_test = test.item_counts() > 0
    return np.flatnonzero(in_test & (model.item_popularity == 0))


def evaluate_cold_items(
    model: EmbeddingSource,
    test: Interactions,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = False,
) -> Evaluation:
    """Recall, NDCG and the rest on the cold items of ``test``, ranked among themselves.

    Returns an :class:`Evaluation` whose ``extra`` holds ``cold_items`` (the candidate
    count) and, for a model that cannot score cold items, ``note`` with empty metrics.
    """
    model = Embeddings.of(model)
    ks = _validate_ks(ks)
    start = time.perf_counter()
    test, dropped = test.reindex(model.users, model.items)
    cold = cold_item_indices(model, test)
    if len(cold) == 0:
        raise InputError("the test data has no items that the model knows without training interactions "
                         "(cold items come from --split cold-items or an item feature table)", path=test.source)
    extra = {"cold_items": len(cold), "candidates": "cold items only"}
    if not model.scores_cold_items:
        return Evaluation({}, ks, 0, dropped_entries=dropped, extra={**extra, "note": f"{model.name}: {CANNOT_SCORE}"})
    keep = np.zeros(model.n_items, dtype=bool)
    keep[cold] = True
    mask = keep[test.matrix.indices]
    on_cold = test.select(mask).matrix
    # Columns renumbered to the cold candidates: the search sees only them.
    remap = np.full(len(keep), -1, dtype=np.int64)
    remap[cold] = np.arange(len(cold))
    relevant = sp.csr_matrix((on_cold.data, remap[on_cold.indices], on_cold.indptr), shape=(on_cold.shape[0], len(cold)))
    user_vectors = model.user_vectors
    index = ExactIndex(model.item_vectors[cold], "cpu")

    def search(users: np.ndarray, k: int, _exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        return index.search(user_vectors[users], k)

    values, users = evaluate_search(search, relevant, model.seen, ks, progress=progress)
    metrics = {name: float(v.mean()) if len(v) else float("nan") for name, v in values.items()}
    n_test = np.diff(relevant.indptr)
    skipped = int(((n_test > 0) & (np.diff(model.seen.indptr) == 0)).sum())
    return Evaluation(
        metrics={name: metrics[name] for name in _report_order(metrics, ks)},
        ks=ks,
        n_users=len(users),
        skipped_users=skipped,
        dropped_entries=dropped + int((~mask).sum()),
        seconds=time.perf_counter() - start,
        extra=extra,
    )
