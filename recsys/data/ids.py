"""From parsed id columns to a :class:`Vocabulary` and one index per row, for every reader."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.vocabulary import Vocabulary


def encode_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct text ids, one code per row into them), vectorized over arrow chunks."""
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()
        dictionary = column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
        codes = np.concatenate(
            [c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]
        ) if column.num_chunks else np.zeros(0, dtype=np.int32)
        return np.asarray(dictionary.to_pylist(), dtype=object), codes.astype(np.int64)
    encoded = pc.dictionary_encode(column.cast(pa.string()) if not pa.types.is_string(column.type) else column)
    return encode_ids(encoded if isinstance(encoded, pa.ChunkedArray) else pa.chunked_array([encoded]))


def strip_ids(uniques: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strip surrounding blanks, merging ids that then coincide.

    ``"65  "`` and ``"65"`` are one id: exported logs often pad fields with spaces.
    """
    stripped = np.asarray([s.strip() for s in uniques], dtype=object)
    merged, inverse = np.unique(stripped, return_inverse=True)
    if len(merged) < len(uniques):
        return merged, inverse[codes]
    return stripped, codes


def compact(uniques: np.ndarray, codes: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop ids used only by skipped rows, renumbering the codes."""
    if keep.all():
        return uniques, codes
    codes = codes[keep]
    used = np.unique(codes)
    remap = np.full(len(uniques), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return uniques[used], remap[codes]


def to_vocabulary(uniques: np.ndarray, codes: np.ndarray) -> tuple[Vocabulary, np.ndarray]:
    """Sort ids (numerically when integers) and remap the codes to match."""
    vocab = Vocabulary.from_strings(uniques)
    order = np.argsort(vocab.ids, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Vocabulary(vocab.ids[order]), rank[codes]
