"""From parsed id columns to a :class:`Vocabulary` and one index per row, for every reader."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.vocabulary import Vocabulary


def encode_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids, one code per row into them), vectorized over arrow chunks.

    Text ids come back as an object array of ``str``; an integer column (Parquet) as int64,
    hashed as integers: never cast to text, which at 100M rows costs gigabytes.
    """
    if _is_integer_ids(column.type):
        # One chunk, one dictionary: encoding chunk by chunk gives every chunk its own copy
        # of the dictionary so far (780 copies of 2M ids at 100M rows).
        encoded = pc.dictionary_encode(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
        codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)  # null ids: rejected by the caller
        return encoded.dictionary.to_numpy(zero_copy_only=False).astype(np.int64), codes
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()
        dictionary = column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
        codes = np.concatenate(
            [c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]
        ) if column.num_chunks else np.zeros(0, dtype=np.int32)
        return np.asarray(dictionary.to_pylist(), dtype=object), codes.astype(np.int64)
    encoded = pc.dictionary_encode(column.cast(pa.string()) if not pa.types.is_string(column.type) else column)
    return encode_ids(encoded if isinstance(encoded, pa.ChunkedArray) else pa.chunked_array([encoded]))


def _is_integer_ids(kind: pa.DataType) -> bool:
    """Integers that int64 holds (uint64 may not: those ids are read as text)."""
    return pa.types.is_integer(kind) and kind != pa.uint64()


def strip_ids(uniques: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strip surrounding blanks, merging ids that then coincide.

    ``"65  "`` and ``"65"`` are one id: exported logs often pad fields with spaces.
    Integer ids have no blanks and pass through.
    """
    if uniques.dtype.kind in "iu":
        return uniques, codes
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
    """Sort ids (numerically when integers) and remap the codes to match.

    The codes come back as int32 when the ids fit (one per row: half the memory of int64).
    """
    vocab = Vocabulary(uniques) if uniques.dtype.kind in "iu" else Vocabulary.from_strings(uniques)
    order = np.argsort(vocab.ids, kind="stable")
    rank = np.empty(len(order), dtype=np.int32 if len(order) < 2**31 else np.int64)
    rank[order] = np.arange(len(order), dtype=rank.dtype)
    return Vocabulary(vocab.ids[order]), rank[codes]
