"""Two-tower data preparation: encoded feature tables as tensors, and each user's items in
order of preference (newest first) as the user tower reads them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from recsys.data.features import EncodedFeatures
from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary


class FeatureRows:
    """One side's encoded feature tables as device tensors, gathered per batch."""

    def __init__(self, enc: EncodedFeatures, device: torch.device) -> None:
        self.categorical = torch.as_tensor(enc.categorical, device=device)
        self.multi = [torch.as_tensor(m, device=device) for m in enc.multi]
        self.numeric = torch.as_tensor(enc.numeric, device=device)

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        return self.categorical[index], [m[index] for m in self.multi], self.numeric[index]


def first_items(rows: np.ndarray, items: np.ndarray, n_rows: int, length: int) -> np.ndarray:
    """Each row's first ``length`` items (+1; 0 pads), from (row, item index) pairs grouped
    by row in order of preference. Returns int64 (n_rows, max(1, length))."""
    out = np.zeros((n_rows, max(1, length)), dtype=np.int64)
    if length <= 0 or len(rows) == 0:
        return out
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)  # rank within its row
    keep = position < length
    out[rows[keep], position[keep]] = np.asarray(items)[keep].astype(np.int64) + 1
    return out


def recent_pairs(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(row, item index) of every entry of ``data``, by user and newest first (by timestamp
    when known; otherwise in the matrix's order)."""
    rows = data.row_indices
    time = data.timestamps if data.timestamps is not None else np.zeros(len(rows), dtype=np.int64)
    order = np.lexsort((-time, rows))  # by user, newest first
    return rows[order], data.matrix.indices[order]


def recent_item_matrix(data: Interactions, length: int) -> np.ndarray:
    """Each user's ``length`` most recent items (+1; 0 pads), by timestamp when known.

    Returns int64 (n_users, max(1, length)).
    """
    return first_items(*recent_pairs(data), data.n_users, length)


def history_pairs(histories: Sequence[Sequence[Any]], items: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """(row, item index) of every item of ``histories`` that ``items`` knows, in their given order."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    flat = list(itertools.chain.from_iterable(histories))
    if not flat:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(histories)), lengths)
    idx = np.atleast_1d(items.index(flat))  # one lookup for all users
    known = idx >= 0
    rows, idx = rows[known], idx[known].astype(np.int64)
    # An item repeated in a history counts once, as in training (the matrix dedupes it).
    _, first = np.unique(rows * len(items) + idx, return_index=True)
    first.sort()
    return rows[first], idx[first]
