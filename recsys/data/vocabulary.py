"""Id maps: the user's own ids to contiguous indices and back.

Models only ever see indices ``0..n-1``. A :class:`Vocabulary` lives with every data set
and every saved model and translates at the edges. Unknown ids map to ``-1``; callers
decide what that means (a fallback, a report), never a crash deep inside.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import ModelFormatError

_CANONICAL_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _as_int64_if_canonical(values: np.ndarray) -> np.ndarray | None:
    """Return ``values`` (strings) as int64 when every one is a canonical integer, else None.

    "Canonical" means that converting back gives the same text: ``007`` or ``+5`` stay
    strings, so an id always round-trips to exactly what the user wrote.
    """
    series = pd.Series(values, dtype=object)
    if len(series) == 0:
        return np.empty(0, dtype=np.int64)
    text = series.astype(str)
    if not text.str.fullmatch(_CANONICAL_INT.pattern).all():
        return None
    # Length check first so int() never sees a 10,000-digit string.
    if (text.str.len() > 20).any():
        return None
    ints = [int(t) for t in text]
    if min(ints) < _INT64_MIN or max(ints) > _INT64_MAX:
        return None
    return np.asarray(ints, dtype=np.int64)


class Vocabulary:
    """A bijection between external ids and indices ``0..len-1``.

    Ids are either all integers (stored as int64) or all strings (stored as an object
    array of ``str``). Lookups accept either kind and convert at the boundary, so ``"42"``
    finds the integer id ``42`` and ``7`` finds the string id ``"7"``.

    Examples
    --------
    >>> vocab = Vocabulary(["b", "a", "c"])
    >>> vocab.index(["a", "zzz"])
    array([ 1, -1])
    >>> vocab.ids[[0, 2]]
    array(['b', 'c'], dtype=object)
    """

    __slots__ = ("_index", "ids")

    def __init__(self, ids: Iterable[Any] | np.ndarray) -> None:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if arr.ndim != 1:
            raise ValueError("ids must be one-dimensional")
        if arr.dtype.kind in "iu":
            if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
                arr = arr.astype(str).astype(object)
            else:
                arr = arr.astype(np.int64, copy=False)
        elif arr.dtype.kind in "OUST":
            arr = np.asarray([str(x) for x in arr], dtype=object)
        else:
            raise ValueError(f"ids must be integers or strings, not {arr.dtype}")
        self.ids: np.ndarray = arr
        self._index: pd.Index | None = None

    @classmethod
    def from_strings(cls, values: np.ndarray) -> Vocabulary:
        """Build from text ids as read from a file: integers when every id is a canonical integer."""
        ints = _as_int64_if_canonical(values)
        return cls(ints if ints is not None else np.asarray(values, dtype=object))

    @property
    def is_integer(self) -> bool:
        return self.ids.dtype == np.int64

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        kind = "int" if self.is_integer else "str"
        return f"Vocabulary({len(self)} {kind} ids)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.ids.dtype == other.ids.dtype and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]

    def _lookup(self) -> pd.Index:
        if self._index is None:
            self._index = pd.Index(self.ids, dtype=self.ids.dtype)
            if not self._index.is_unique:
                raise ValueError("vocabulary ids must be unique")
        return self._index

    def _coerce(self, query: np.ndarray) -> np.ndarray:
        """Bring query ids to this vocabulary's kind; ids that cannot match become a sentinel."""
        if self.is_integer:
            if query.dtype.kind in "iu":
                return query.astype(np.int64, copy=False)
            if query.dtype.kind == "f":
                whole = np.isfinite(query) & (np.floor(query) == query)
                return np.where(whole, query, np.nan)
            text = pd.Series(query, dtype=object).astype(str)
            ok = text.str.fullmatch(_CANONICAL_INT.pattern) & (text.str.len() <= 19)
            out = pd.to_numeric(text.where(ok), errors="coerce")
            return out.to_numpy(dtype=np.float64, na_value=np.nan) if out.hasnans else out.to_numpy()
        return np.asarray([str(x) for x in query], dtype=object)

    def index(self, ids: Any) -> np.ndarray:
        """Indices of ``ids`` (any iterable or a scalar); ``-1`` where an id is unknown.

        Returns an int64 array of the same length as ``ids`` (shape ``()`` for a scalar).
        """
        scalar = np.ndim(ids) == 0
        query = np.atleast_1d(np.asarray(ids))
        coerced = self._coerce(query)
        if coerced.dtype.kind == "f":
            result = np.full(len(coerced), -1, dtype=np.int64)
            finite = ~np.isnan(coerced)
            if finite.any():
                result[finite] = self._lookup().get_indexer(coerced[finite].astype(np.int64))
        else:
            result = self._lookup().get_indexer(coerced).astype(np.int64, copy=False)
        return result[0] if scalar else result

    def contains(self, ids: Any) -> np.ndarray:
        """Boolean mask: which of ``ids`` are known."""
        return np.asarray(self.index(ids)) >= 0

    # -- persistence, without pickle ------------------------------------------------------
    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays for an ``.npz``: integers as they are, strings as UTF-8 bytes plus offsets."""
        if self.is_integer:
            return {f"{prefix}_int": self.ids}
        encoded = [s.encode("utf-8") for s in self.ids]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return {f"{prefix}_utf8": blob, f"{prefix}_offsets": offsets}

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> Vocabulary:
        """Inverse of :meth:`to_arrays`; raises :class:`ModelFormatError` on inconsistent arrays."""
        if f"{prefix}_int" in arrays:
            ids = np.asarray(arrays[f"{prefix}_int"])
            if ids.dtype != np.int64 or ids.ndim != 1:
                raise ModelFormatError(f"{prefix} ids have shape {ids.shape} and type {ids.dtype}")
            vocab = cls(ids)
        elif f"{prefix}_utf8" in arrays and f"{prefix}_offsets" in arrays:
            blob = np.asarray(arrays[f"{prefix}_utf8"])
            offsets = np.asarray(arrays[f"{prefix}_offsets"])
            if (
                blob.dtype != np.uint8
                or offsets.dtype != np.int64
                or offsets.ndim != 1
                or len(offsets) == 0
                or offsets[0] != 0
                or offsets[-1] != len(blob)
                or np.any(np.diff(offsets) < 0)
            ):
                raise ModelFormatError(f"{prefix} id table is inconsistent")
            raw = blob.tobytes()
            try:
                ids = [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
            except UnicodeDecodeError as exc:
                raise ModelFormatError(f"{prefix} id table is not valid UTF-8") from exc
            vocab = cls(np.asarray(ids, dtype=object))
        else:
            raise ModelFormatError(f"no {prefix} id table")
        if not pd.Index(vocab.ids).is_unique:
            raise ModelFormatError(f"{prefix} ids are not unique")
        return vocab
