"""How a model answers queries for users: who is asked for, and where each one's query
vector comes from (the model, a history folded in, or the popular fallback).

:meth:`Recommender.recommend` and the batch job (:func:`recsys.retrieval.recommend_to_file`)
both answer through :func:`plan_users` and :func:`answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.data.interactions import Interactions

if TYPE_CHECKING:
    from recsys.models.base import FoldIn, Recommender


@dataclass
class UserPlan:
    """The requested users and, for each, where their query vector comes from.

    ``model_index``: row in the model (-1: unknown); ``folded_index``: row in ``folded``
    (-1: no usable history). A user with neither gets the popular fallback.
    """

    ids: np.ndarray
    model_index: np.ndarray
    folded_index: np.ndarray
    folded: FoldIn | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def fallback(self) -> np.ndarray:
        return (self.model_index < 0) & (self.folded_index < 0)


def plan_users(model: Recommender, users: Any = "all", history: Interactions | None = None) -> UserPlan:
    """Resolve ``users`` (``"all"``, ``None`` or a sequence of ids) against the model and a history.

    ``"all"`` is every user the model knows plus every user of ``history``; ``None`` is
    the history's users (or all, without a history). Users in ``history`` are folded in
    from it, whether or not the model knows them.
    """
    folded = None if history is None else model.fold_in(history)
    if users is None:
        users = "all" if folded is None else folded.users.ids
    if isinstance(users, str) and users == "all":
        ids = model.users.ids
        model_index = np.arange(len(ids), dtype=np.int64)
        if folded is not None:
            extra = folded.users.ids[~model.users.contains(folded.users.ids)]
            if len(extra):
                kind = object if (ids.dtype == object or extra.dtype == object) else np.int64
                ids = np.concatenate([ids.astype(kind), extra.astype(kind)])
                model_index = np.concatenate([model_index, np.full(len(extra), -1, np.int64)])
    else:
        ids = np.asarray(users)
        if ids.ndim != 1:
            raise ValueError("users must be 'all' or a one-dimensional sequence of ids")
        model_index = np.atleast_1d(model.users.index(ids)).astype(np.int64)
    folded_index = np.full(len(ids), -1, dtype=np.int64)
    if folded is not None and len(ids):
        folded_index = np.atleast_1d(folded.users.index(ids)).astype(np.int64)
        usable = folded.has_history()
        folded_index[(folded_index >= 0) & ~usable[np.maximum(folded_index, 0)]] = -1
    return UserPlan(ids, model_index, folded_index, folded)


def answer(
    model: Recommender,
    index: Any,
    plan: UserPlan,
    rows: np.ndarray,
    k: int,
    *,
    include_seen: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` item indices, scores and the fallback mask for ``plan``'s ``rows``.

    Returns ``(items (n, k), scores (n, k), fallback (n,))``; fallback rows hold the
    popular items with NaN scores; rows short of ``k`` items are padded with -1 / -inf.
    """
    index = model.exact_index() if index is None else index
    mi, fi = plan.model_index[rows], plan.folded_index[rows]
    n = len(mi)
    out_idx = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    folded = fi >= 0
    known = (mi >= 0) & ~folded
    fallback = ~(folded | known)
    if known.any():
        u = mi[known]
        vectors = model.embeddings().user_vectors[u]
        exclude = None if include_seen else model.seen[u]
        out_idx[known], out_scores[known] = index.search(vectors, k, exclude)
    if folded.any():
        assert plan.folded is not None
        f, m = fi[folded], mi[folded]
        exclude = None
        if not include_seen:
            exclude = plan.folded.seen[f]
            if (m >= 0).any():  # known users: their training items are seen as well
                trained = model.seen[np.maximum(m, 0)].multiply((m >= 0)[:, None].astype(np.float32)).tocsr()
                trained.eliminate_zeros()
                exclude = (exclude + trained).tocsr()
                exclude.data[:] = 1.0
        out_idx[folded], out_scores[folded] = index.search(plan.folded.vectors[f], k, exclude)
    if fallback.any():
        out_idx[fallback] = model.popular_items(k)
        out_scores[fallback] = np.nan
    return out_idx, out_scores, fallback
