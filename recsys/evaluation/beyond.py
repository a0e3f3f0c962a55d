"""Beyond-accuracy figures of top-k lists: coverage, concentration, popularity, novelty, diversity.

Definitions, for the top-k lists of the evaluated users (padding, -1, ignored), with
``pop_i`` the number of training users of item ``i`` (``model.item_popularity``) and
``n`` the number of items in the catalogue:

- ``coverage@k``: distinct recommended items / ``n``.
- ``gini@k``: Gini index of how often each catalogue item is recommended (items never
  recommended count as 0). With the counts sorted ascending ``c_1 <= ... <= c_n``,
  ``G = sum_j (2j - n - 1) c_j / (n * sum_j c_j)``: 0 when every item is recommended
  equally often, ``1 - 1/n`` when one item takes every slot.
- ``popularity_percentile@k``: mean popularity percentile of recommended items, in
  [0, 1]. The percentile of item ``i`` is the mid-rank share
  ``(#{j: pop_j < pop_i} + 0.5 * #{j: pop_j = pop_i}) / n``; 1 is the head, 0 the tail.
- ``novelty@k``: mean self-information in bits, ``-log2(share_i)`` with
  ``share_i = max(pop_i, 1) / sum_j max(pop_j, 1)`` the item's share of the training
  interactions (an item without any counts as one, so the figure stays finite).
  Recommending only the most popular items gives the lowest novelty.
- ``diversity@k``: intra-list diversity, the mean over unordered pairs of a list's items
  of the cosine distance ``1 - cos(q_a, q_b)`` of their item factors (a zero vector has
  cosine 0 with everything); lists with fewer than two items are left out.

Per-list figures (popularity percentile, novelty, diversity) are averaged within each
list, then over users; coverage and Gini are aggregates over all lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.embeddings import unit_rows

BEYOND_METRICS: tuple[str, ...] = ("coverage", "gini", "popularity_percentile", "novelty", "diversity")
"""Beyond-accuracy figures, in the order they are reported (after the accuracy metrics)."""


def gini_index(counts: np.ndarray) -> float:
    """Gini index of non-negative ``counts`` (0: all equal; ``1 - 1/n``: one takes all)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(c)
    total = c.sum()
    if n == 0 or total == 0:
        return 0.0
    j = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * j - n - 1) * c).sum() / (n * total))


def popularity_percentiles(popularity: np.ndarray) -> np.ndarray:
    """Mid-rank popularity percentile of every item, shape (n_items,), in [0, 1]."""
    pop = np.asarray(popularity, dtype=np.float64)
    ordered = np.sort(pop)
    less = np.searchsorted(ordered, pop, side="left")
    equal = np.searchsorted(ordered, pop, side="right") - less
    return (less + 0.5 * equal) / max(len(pop), 1)


def self_information(popularity: np.ndarray) -> np.ndarray:
    """``-log2`` of each item's share of the training interactions (at least one each), bits."""
    pop = np.maximum(np.asarray(popularity, dtype=np.float64), 1.0)
    return -np.log2(pop / pop.sum())


def _row_means(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1)
    return np.divide(total, n, out=np.full(len(n), np.nan), where=n > 0)


def intra_list_diversity(top: np.ndarray, item_factors: np.ndarray, *, batch: int = 1024) -> np.ndarray:
    """Mean pairwise cosine distance of each list's items, shape (n_lists,); NaN under two items.

    ``top`` (n_lists, k) holds item indices, -1 for padding.
    """
    top = np.asarray(top, dtype=np.int64)
    unit = unit_rows(np.asarray(item_factors, dtype=np.float32))
    return _list_diversities(top, unit, [top.shape[1]], batch)[top.shape[1]]


def _list_diversities(top: np.ndarray, unit: np.ndarray, ks: Sequence[int], batch: int,
                      lengths2: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """:func:`intra_list_diversity` of each list's first ``k`` items for every ``k`` of
    ``ks``, over item factors already scaled to unit length (``lengths2``: their squared
    lengths, 1 or 0 for an item never learned). Each list's vector sum comes from a sparse
    product, the shorter lists' on the way to the longer ones' (a fifth of the time of
    gathering every list's vectors). A list of fewer than two items: NaN."""
    out = {k: np.full(len(top), np.nan) for k in ks}
    ks = sorted(k for k in set(ks) if k >= 2)
    if not ks or top.shape[1] < 2:
        return out
    if lengths2 is None:
        lengths2 = np.einsum("id,id->i", unit, unit)
    for start in range(0, len(top), batch):
        block = top[start:start + batch, :ks[-1]]
        valid = block >= 0
        squares = np.cumsum(lengths2[np.where(valid, block, 0)] * valid, axis=1)
        counts = np.cumsum(valid, axis=1)
        summed, done = np.zeros((len(block), unit.shape[1]), dtype=np.float64), 0
        for k in ks:
            upto = min(k, block.shape[1])  # lists shorter than k: all of them
            part, here = block[:, done:upto], valid[:, done:upto]
            indptr = np.concatenate([[0], np.cumsum(here.sum(axis=1))])
            members = sp.csr_matrix((np.ones(indptr[-1], dtype=np.float32), part[here], indptr),
                                    shape=(len(block), len(unit)))
            summed += members @ unit
            done = upto
            # Sum over ordered pairs a != b of cos(a, b): ||sum_a v_a||^2 - sum_a ||v_a||^2.
            pair_cos = np.einsum("bd,bd->b", summed, summed) - squares[:, upto - 1]
            m = counts[:, upto - 1].astype(np.float64)
            pairs = m * (m - 1)
            out[k][start:start + batch] = np.divide(pairs - pair_cos, pairs, out=np.full(len(block), np.nan),
                                                    where=pairs > 0)
    return out


class BeyondAccuracy:
    """The figures of :func:`beyond_accuracy`, accumulated block by block of top lists: memory
    is the catalogue's counts, never the users' lists (2M users' top-50 are 800 MB).

    >>> figures = BeyondAccuracy([2], np.array([3, 2, 1, 0]))
    >>> figures.add(np.array([[0, 1]])); figures.add(np.array([[0, 2]]))
    >>> figures.result()["coverage@2"]
    0.75
    """

    def __init__(self, ks: Sequence[int], item_popularity: np.ndarray, item_factors: np.ndarray | None = None,
                 *, batch: int = 1024) -> None:
        self.ks = sorted(set(int(k) for k in ks))
        self.n_items = len(item_popularity)
        self.batch = batch
        self._percentile = popularity_percentiles(item_popularity)
        self._info = self_information(item_popularity)
        with_factors = item_factors is not None and np.asarray(item_factors).shape[1] > 0
        self._unit = unit_rows(np.asarray(item_factors, dtype=np.float32)) if with_factors else None
        self._lengths2 = None if self._unit is None else np.einsum("id,id->i", self._unit, self._unit)
        self._counts = {k: np.zeros(self.n_items, dtype=np.int64) for k in self.ks}
        # Per k and per-list figure: (sum of the lists' means, lists with a mean).
        self._sums = {k: {name: [0.0, 0] for name in BEYOND_METRICS[2:]} for k in self.ks}

    def add(self, top: np.ndarray) -> None:
        """Count one block of top lists, shape (n_lists, K), K >= max(ks), -1 for padding."""
        top = np.asarray(top, dtype=np.int64)
        diversity = (None if self._unit is None
                     else _list_diversities(top, self._unit, self.ks, self.batch, self._lengths2))
        for k in self.ks:
            lists = top[:, :k]
            valid = lists >= 0
            self._counts[k] += np.bincount(lists[valid], minlength=self.n_items)
            safe = np.where(valid, lists, 0)
            means = {"popularity_percentile": _row_means(self._percentile[safe], valid),
                     "novelty": _row_means(self._info[safe], valid)}
            if diversity is not None:
                means["diversity"] = diversity[k]
            for name, values in means.items():
                kept = values[~np.isnan(values)]
                total = self._sums[k][name]
                total[0] += float(kept.sum())
                total[1] += len(kept)

    def result(self) -> dict[str, float]:
        """``{"coverage@10": ..., "gini@10": ..., ...}`` for each k, in :data:`BEYOND_METRICS` order."""
        out: dict[str, float] = {}
        for k in self.ks:
            counts = self._counts[k]
            figures = {
                "coverage": float(np.count_nonzero(counts) / self.n_items) if self.n_items else float("nan"),
                "gini": gini_index(counts),
            }
            for name, (total, n) in self._sums[k].items():
                if name != "diversity" or self._unit is not None:
                    figures[name] = total / n if n else float("nan")
            for name in BEYOND_METRICS:
                if name in figures:
                    out[f"{name}@{k}"] = figures[name]
        return out


def beyond_accuracy(
    top: np.ndarray,
    ks: Sequence[int],
    item_popularity: np.ndarray,
    item_factors: np.ndarray | None = None,
    *,
    batch: int = 1024,
) -> dict[str, float]:
    """Beyond-accuracy figures of top lists at each ``k`` (see the module's definitions).

    Parameters
    ----------
    top : int array (n_users, K), K >= max(ks)
        Item indices in rank order, -1 for padding.
    item_popularity : array (n_items,)
        Training users per item; its length is the catalogue size.
    item_factors : array (n_items, d), optional
        For ``diversity@k``; left out when None or of width 0.

    Returns
    -------
    ``{"coverage@10": ..., "gini@10": ..., ...}`` for each k, in :data:`BEYOND_METRICS` order.
    :class:`BeyondAccuracy` gives the same block by block.

    Examples
    --------
    >>> beyond_accuracy(np.array([[0, 1], [0, 2]]), [2], np.array([3, 2, 1, 0]))["coverage@2"]
    0.75
    """
    figures = BeyondAccuracy(ks, item_popularity, item_factors, batch=batch)
    figures.add(top)
    return figures.result()
