"""The one currency: an interaction log as a users-by-items CSR matrix with its id maps."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.vocabulary import Vocabulary
from recsys.errors import InputError

Feedback = Literal["rating", "count"]
"""What the matrix values mean.

``rating``: explicit scores; a repeated (user, item) pair keeps its latest value (by
timestamp when there are timestamps, else the last row in the file).
``count``: implicit strength (plays, clicks, purchases, or 1 per row when the log has no
value column); a repeated pair sums.
"""


def _index_dtype(n: int) -> type[np.integer]:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


@dataclass(frozen=True, eq=False)
class Interactions:
    """An interaction log: ``matrix[u, i]`` is user ``u``'s rating of or weight on item ``i``.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, shape (n_users, n_items), float32
        Canonical CSR (sorted indices, no duplicate entries).
    users, items : Vocabulary
        External ids of rows and columns.
    timestamps : ndarray of int64, shape (nnz,), optional
        Aligned with ``matrix.data``: the time of each (user, item) entry.
    feedback : {"rating", "count"}
        What the values mean (see :data:`Feedback`).
    user_features, item_features : DataFrame, optional
        Side information, one row per vocabulary index (row ``i`` describes id ``ids[i]``).
    source : str, optional
        Where the data came from (a path), for messages and tracking.
    """

    matrix: sp.csr_matrix
    users: Vocabulary
    items: Vocabulary
    timestamps: np.ndarray | None = None
    feedback: Feedback = "count"
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    source: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = self.matrix
        if not sp.isspmatrix_csr(m):
            raise TypeError("matrix must be a scipy.sparse.csr_matrix")
        if m.shape != (len(self.users), len(self.items)):
            raise ValueError(
                f"matrix shape {m.shape} does not match {len(self.users)} users "
                f"and {len(self.items)} items"
            )
        if self.timestamps is not None and len(self.timestamps) != m.nnz:
            raise ValueError("timestamps must align with matrix.data")
        if self.feedback not in ("rating", "count"):
            raise ValueError(f"feedback must be 'rating' or 'count', not {self.feedback!r}")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        user_ids: Any,
        item_ids: Any,
        values: Any = None,
        timestamps: Any = None,
        *,
        feedback: Feedback | None = None,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
        source: str | None = None,
    ) -> Interactions:
        """Build from parallel arrays of external ids (one entry per logged event).

        ``values`` defaults to 1 per row (``feedback="count"``). Repeated pairs are combined
        by the rule of ``feedback``. With ``users``/``items`` given, ids are mapped into
        those vocabularies and rows with unknown ids raise :class:`InputError`; use
        :meth:`reindex` to drop them instead.
        """
        user_ids = np.asarray(user_ids)
        item_ids = np.asarray(item_ids)
        if user_ids.shape != item_ids.shape or user_ids.ndim != 1:
            raise ValueError("user_ids and item_ids must be 1-d arrays of the same length")
        if feedback is None:
            feedback = "count" if values is None else "rating"
        users, user_index = _encode(user_ids, users, "user")
        items, item_index = _encode(item_ids, items, "item")
        vals = (
            np.ones(len(user_index), dtype=np.float32)
            if values is None
            else np.asarray(values, dtype=np.float32)
        )
        ts = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        matrix, ts = build_csr(user_index, item_index, vals, ts, (len(users), len(items)), feedback)
        return cls(matrix, users, items, ts, feedback, source=source)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        user: str = "user",
        item: str = "item",
        value: str | None = None,
        timestamp: str | None = None,
        *,
        feedback: Feedback | None = None,
    ) -> Interactions:
        """Build from a DataFrame with the named columns (see :meth:`from_arrays`)."""
        return cls.from_arrays(
            frame[user].to_numpy(),
            frame[item].to_numpy(),
            None if value is None else frame[value].to_numpy(),
            None if timestamp is None else frame[timestamp].to_numpy(),
            feedback=feedback,
        )

    # -- shape ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    def __len__(self) -> int:
        return self.matrix.nnz

    def __repr__(self) -> str:
        ts = ", timestamps" if self.timestamps is not None else ""
        return (
            f"Interactions({self.n_users} users x {self.n_items} items, {self.nnz} "
            f"{self.feedback} entries{ts})"
        )

    @property
    def row_indices(self) -> np.ndarray:
        """The user index of every stored entry, aligned with ``matrix.data``."""
        if "rows" not in self._cache:
            counts = np.diff(self.matrix.indptr)
            self._cache["rows"] = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        return self._cache["rows"]

    def user_counts(self) -> np.ndarray:
        """Number of items of each user, shape (n_users,)."""
        return np.diff(self.matrix.indptr).astype(np.int64)

    def item_counts(self) -> np.ndarray:
        """Number of users of each item, shape (n_items,)."""
        return np.bincount(self.matrix.indices, minlength=self.n_items).astype(np.int64)

    # -- derived data sets ----------------------------------------------------------------
    def select(self, mask: np.ndarray) -> Interactions:
        """The entries where ``mask`` (shape (nnz,)) is true, with the same vocabularies."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.nnz,):
            raise ValueError(f"mask must have shape ({self.nnz},)")
        m = self.matrix
        indptr = np.zeros(self.n_users + 1, dtype=m.indptr.dtype)
        np.cumsum(np.bincount(self.row_indices[mask], minlength=self.n_users), out=indptr[1:])
        matrix = sp.csr_matrix(
            (m.data[mask], m.indices[mask], indptr), shape=m.shape, copy=False
        )
        matrix.has_sorted_indices = True
        ts = None if self.timestamps is None else self.timestamps[mask]
        return replace(self, matrix=matrix, timestamps=ts, _cache={})

    def reindex(self, users: Vocabulary, items: Vocabulary) -> tuple[Interactions, int]:
        """Map onto other vocabularies (a model's); returns the result and the rows dropped.

        Entries whose user or item is unknown to the new vocabularies are dropped and
        counted, never silently mis-mapped.
        """
        if users == self.users and items == self.items:
            return self, 0
        new_user = users.index(self.users.ids)
        new_item = items.index(self.items.ids)
        u = new_user[self.row_indices]
        i = new_item[self.matrix.indices]
        keep = (u >= 0) & (i >= 0)
        ts = None if self.timestamps is None else self.timestamps[keep]
        if _increasing(new_user) and _increasing(new_item):
            # A subset in the same order (a split's training ids): the kept entries are in
            # canonical order already and no pair repeats, so no sort (at 80M entries, seconds and GBs).
            matrix = _csr_in_order(u[keep], i[keep], self.matrix.data[keep], (len(users), len(items)))
        else:
            matrix, ts = build_csr(
                u[keep], i[keep], self.matrix.data[keep], ts, (len(users), len(items)), self.feedback
            )
        out = replace(
            self,
            matrix=matrix,
            users=users,
            items=items,
            timestamps=ts,
            user_features=None,
            item_features=None,
            _cache={},
        )
        return out, int((~keep).sum())

    def to_frame(self) -> pd.DataFrame:
        """Entries as a DataFrame in external ids: user, item, rating|weight[, timestamp]."""
        value_name = "rating" if self.feedback == "rating" else "weight"
        frame = pd.DataFrame(
            {
                "user": self.users.ids[self.row_indices],
                "item": self.items.ids[self.matrix.indices],
                value_name: self.matrix.data,
            }
        )
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        return frame

    def fingerprint(self) -> str:
        """A content hash of matrix, timestamps and id maps (hex, 16 characters)."""
        if "fingerprint" not in self._cache:
            h = hashlib.sha256()
            h.update(np.asarray(self.shape, dtype=np.int64).tobytes())
            for arr in (self.matrix.indptr, self.matrix.indices, self.matrix.data):
                h.update(np.ascontiguousarray(arr).tobytes())
            if self.timestamps is not None:
                h.update(self.timestamps.tobytes())
            for vocab in (self.users, self.items):
                for arr in vocab.to_arrays("v").values():
                    h.update(np.ascontiguousarray(arr).tobytes())
            self._cache["fingerprint"] = h.hexdigest()[:16]
        return self._cache["fingerprint"]


def _encode(ids: np.ndarray, vocab: Vocabulary | None, what: str) -> tuple[Vocabulary, np.ndarray]:
    if vocab is None:
        if ids.dtype.kind in "iu":
            uniques, inverse = np.unique(ids, return_inverse=True)
            return Vocabulary(uniques), inverse.astype(np.int64, copy=False)
        codes, uniques = pd.factorize(pd.Series(ids, dtype=object).astype(str), sort=True)
        return Vocabulary.from_strings(np.asarray(uniques, dtype=object)), codes.astype(np.int64)
    index = vocab.index(ids)
    missing = np.flatnonzero(index < 0)
    if missing.size:
        raise InputError(f"{missing.size} rows have a {what} id that is not known, e.g. {ids[missing[0]]!r}")
    return vocab, index


def build_csr(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    timestamps: np.ndarray | None,
    shape: tuple[int, int],
    feedback: Feedback,
) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Canonical CSR from coordinate arrays, combining repeated pairs by the feedback rule.

    ``rating``: the latest entry wins (by timestamp, then by position); ``count``: values
    sum. A combined entry's timestamp is the latest of its rows. Vectorized: one sort of
    int64 keys (``user * n_items + item``); a log of plain events (every value 1, no
    timestamps, the common case at scale) sorts the keys alone and counts the repeats.
    """
    n_items = shape[1]
    key = np.asarray(rows).astype(np.int64)  # a fresh array: the key is built in place
    key *= n_items
    key += np.asarray(cols)
    if feedback == "count" and timestamps is None and bool(np.all(values == 1)):
        key.sort()
        starts = _run_starts(key)
        values = np.diff(np.r_[starts, len(key)]).astype(np.float32)  # rows per pair
        key = key[starts] if len(starts) < len(key) else key
        return _canonical(key, values, shape), None
    if timestamps is not None and feedback == "rating":
        order = np.lexsort((timestamps, key))  # stable: equal times keep file order
    elif feedback == "rating":
        order = np.argsort(key, kind="stable")  # the last row of a repeated pair wins
    else:
        order = np.argsort(key)  # sums and maxima: the order of repeats does not matter
    key = key[order]
    values = values[order]
    ts = None if timestamps is None else timestamps[order]
    starts = _run_starts(key)
    if len(starts) < len(key):  # there are repeated pairs
        ends = np.r_[starts[1:], len(key)] - 1
        if feedback == "rating":
            values = values[ends]
        else:
            values = np.add.reduceat(values.astype(np.float64), starts).astype(np.float32)
        if ts is not None:
            ts = np.maximum.reduceat(ts, starts)
        key = key[starts]
    return _canonical(key, values, shape), ts


def _increasing(index: np.ndarray) -> bool:
    """Whether the known entries of an old-to-new index map keep their order (-1: dropped)."""
    kept = index[index >= 0]
    return bool(np.all(kept[1:] > kept[:-1]))


def _csr_in_order(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The CSR matrix of entries already sorted by (row, column), without repeats."""
    idx_dtype = _index_dtype(max(shape[1], len(cols)))
    indptr = np.zeros(shape[0] + 1, dtype=idx_dtype)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    matrix = sp.csr_matrix((values, cols.astype(idx_dtype), indptr), shape=shape, copy=False)
    matrix.has_sorted_indices = True
    matrix.has_canonical_format = True
    return matrix


def _run_starts(key: np.ndarray) -> np.ndarray:
    """Where each run of equal values of sorted ``key`` starts."""
    if not len(key):
        return np.zeros(0, dtype=np.int64)
    change = np.empty(len(key), dtype=bool)
    change[0] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    return np.flatnonzero(change)


def _canonical(key: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The CSR matrix of sorted, distinct ``user * n_items + item`` keys and their values."""
    n_items = shape[1]
    if not n_items:  # no items, no entries
        return _csr_in_order(key, key, values.astype(np.float32, copy=False), shape)
    return _csr_in_order(key // n_items, key % n_items, values.astype(np.float32, copy=False), shape)
