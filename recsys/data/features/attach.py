"""Feature frames lined up with an :class:`Interactions`' vocabularies: row ``i`` is index ``i``.

Ids with features but no interactions (the cold ones) join the vocabulary; ids with
interactions but no features get missing values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.features.tables import feature_kinds, is_present
from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.errors import InputError


@dataclass
class FeatureReport:
    """What aligning features with interactions found, per side."""

    cold: dict[str, int] = field(default_factory=dict)  # ids with features, no interactions
    missing: dict[str, int] = field(default_factory=dict)  # ids with interactions, no features


def _extend(vocab: Vocabulary, ids: np.ndarray, source: str) -> tuple[Vocabulary, np.ndarray]:
    """``vocab`` with the unknown ``ids`` appended; returns it and each id's index."""
    index = vocab.index(ids)
    new = ids[index < 0]
    if new.size:
        if vocab.is_integer or len(vocab) == 0:
            as_int = Vocabulary.from_strings(new)
            if not as_int.is_integer and len(vocab):
                raise InputError(
                    f"ids such as {new[0]!r} are not integers, unlike the interaction file's ids", path=source
                )
            new_ids = as_int.ids
        else:
            new_ids = np.asarray(new, dtype=object)
        vocab = Vocabulary(np.concatenate([vocab.ids, new_ids]))
        index = vocab.index(ids)
    return vocab, index


def _aligned(frame: pd.DataFrame, index: np.ndarray, n: int) -> pd.DataFrame:
    kinds = feature_kinds(frame)
    data: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = frame[name].to_numpy()
        if kind == "numeric":
            col = np.full(n, np.nan)
            col[index] = values.astype(np.float64)
        else:
            col = np.empty(n, dtype=object)
            if kind == "multi":
                for r in range(n):
                    col[r] = ()
            col[index] = values
        data[name] = col
    out = pd.DataFrame(data)
    out.attrs["kinds"] = kinds
    out.attrs["source"] = frame.attrs.get("source")
    return out


def attach_features(
    data: Interactions,
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
) -> tuple[Interactions, FeatureReport]:
    """``data`` with feature frames aligned to its vocabularies (row ``i`` = index ``i``).

    Ids present in a feature table but not in the log are appended to the vocabulary (the
    cold users or items: empty rows and columns in the matrix). Ids in the log without a
    feature row get missing values, counted in the report.
    """
    report = FeatureReport()
    vocab = {"user": data.users, "item": data.items}
    out = data
    for side, frame, n in (("user", user_features, data.n_users), ("item", item_features, data.n_items)):
        if frame is None:
            continue
        ids = frame.index.to_numpy(dtype=object)
        vocab[side], index = _extend(vocab[side], ids, str(frame.attrs.get("source")))
        report.cold[side] = len(vocab[side]) - n
        report.missing[side] = int(n - (index < n).sum())
        if n and len(ids) and report.missing[side] == n:
            # Not one id in common: the wrong file, or ids written differently ("1" vs "m1").
            raise InputError(
                f"none of its {len(ids)} {side} ids is in the interaction log (its first: {ids[0]!r}; "
                f"the log's first: {vocab[side].ids[0]!r}); is it the right {side} table?",
                path=frame.attrs.get("source"),
            )
        out = replace(out, **{f"{side}_features": _aligned(frame, index, len(vocab[side]))})
    users, items = vocab["user"], vocab["item"]
    matrix = data.matrix
    if (len(users), len(items)) != data.shape:
        indptr = np.concatenate([matrix.indptr, np.full(len(users) - data.n_users, matrix.indptr[-1], dtype=matrix.indptr.dtype)])
        matrix = sp.csr_matrix((matrix.data, matrix.indices, indptr), shape=(len(users), len(items)), copy=False)
        matrix.has_sorted_indices = True
        out = replace(out, matrix=matrix, users=users, items=items, _cache={})
    return out, report


def rows_with_values(frame: pd.DataFrame) -> np.ndarray:
    """Which rows of an aligned feature frame have at least one value, shape (n,)."""
    out = np.zeros(len(frame), dtype=bool)
    for name, kind in feature_kinds(frame).items():
        col = frame[name]
        if kind == "numeric":
            out |= np.isfinite(col.to_numpy(dtype=np.float64))
        elif kind == "multi":
            out |= np.asarray([isinstance(v, (tuple, list)) and len(v) > 0 for v in col])
        else:
            out |= np.asarray([is_present(v) for v in col])
    return out


def with_new_users(
    history: Interactions | None,
    user_features: pd.DataFrame,
    items: Vocabulary,
) -> Interactions:
    """A history log (or an empty one over ``items``) with ``user_features`` attached.

    For scoring new users without retraining: users with a feature row but no history
    entries join the history's vocabulary with empty rows, so a feature-based model can
    still embed them.
    """
    if history is None:
        empty = sp.csr_matrix((0, len(items)), dtype=np.float32)
        history = Interactions(empty, Vocabulary(np.empty(0, dtype=np.int64)), items)
    return attach_features(history, user_features=user_features)[0]
