"""Ranking metrics from a hit matrix, vectorized over users.

Definitions (binary relevance; ``hits[u, r]`` is true when the item at rank ``r + 1`` of
user ``u``'s list is relevant, ``R_u`` is the number of relevant items of ``u``):

- ``recall@k``    = (hits in top k) / R_u, as LightGCN and Mult-VAE report it (not
  divided by min(k, R_u)).
- ``precision@k`` = (hits in top k) / k.
- ``ndcg@k``      = DCG@k / IDCG@k with DCG@k = sum_r hits[r] / log2(r + 2) and IDCG@k the
  DCG of a list with min(k, R_u) hits on top.
- ``map@k``       = (1 / min(k, R_u)) * sum_{r<k} hits[r] * precision@(r + 1).
- ``mrr@k``       = 1 / (rank of the first hit) if there is one in the top k, else 0.
- ``hit_rate@k``  = 1 if any hit in the top k, else 0.
- ``coverage@k``  = (distinct items in all users' top-k lists) / (items in the catalogue);
  an aggregate, not a per-user mean (computed with the other beyond-accuracy figures,
  Gini, popularity percentile, novelty and diversity, in :mod:`recsys.evaluation.beyond`).

Each per-user metric is averaged over the evaluated users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (10, 20, 50)
"""The cut-offs every evaluation reports unless told otherwise."""

PER_USER_METRICS: tuple[str, ...] = ("recall", "ndcg", "precision", "map", "mrr", "hit_rate")
"""Metrics averaged over users, in the order they are reported (recall first)."""


def user_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user metric values: ``{"recall@10": array (B,), ...}`` for every metric and k.

    Parameters
    ----------
    hits : bool array, shape (B, K) with K >= max(ks)
    n_relevant : int array, shape (B,), each >= 1
    """
    hits = np.asarray(hits, dtype=bool)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    max_k = hits.shape[1]
    if max(ks) > max_k:
        raise ValueError(f"hits has {max_k} columns, fewer than k={max(ks)}")
    h = hits.astype(np.float64)
    cum_hits = np.cumsum(h, axis=1)
    ranks = np.arange(1, max_k + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    dcg = np.cumsum(h * discounts, axis=1)
    ideal = np.cumsum(discounts)
    precision_at_rank = cum_hits / ranks
    ap_terms = np.cumsum(h * precision_at_rank, axis=1)
    any_hit = hits.any(axis=1)
    first_hit = np.where(any_hit, hits.argmax(axis=1) + 1, max_k + 1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        n_hits = cum_hits[:, k - 1]
        ideal_hits = np.minimum(n_relevant, k).astype(np.int64)
        out[f"recall@{k}"] = n_hits / n_relevant
        out[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[ideal_hits - 1]
        out[f"precision@{k}"] = n_hits / k
        out[f"map@{k}"] = ap_terms[:, k - 1] / ideal_hits
        out[f"mrr@{k}"] = np.where(first_hit <= k, 1.0 / first_hit, 0.0)
        out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
    return out


def metric_names(ks: Sequence[int]) -> list[str]:
    """Reported metric names, recall first, for each k in order."""
    return [f"{m}@{k}" for m in PER_USER_METRICS for k in ks]
