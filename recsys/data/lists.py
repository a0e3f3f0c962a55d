"""Adjacency lists: one line per user, ``user item item ...`` (KGAT, NGCF, LightGCN).

The whole text is split into lines and the lines into tokens by pyarrow's compute kernels,
so no Python code runs per line or per item; a bad token is found by the same vectorized
pass, which already knows its line, so there is no slow second pass as for CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.ids import encode_ids, strip_ids, to_vocabulary
from recsys.data.interactions import Feedback, Interactions, build_csr
from recsys.data.sniff import LIST_BLANKS, LIST_TOKEN, Layout
from recsys.data.text import decode, read_bytes
from recsys.data.vocabulary import Vocabulary
from recsys.errors import InputError


def read_lists(
    path: Path, layout: Layout, encoding: str, skip_bad_rows: bool, feedback: Feedback | None
) -> tuple[Interactions, int, int]:
    """Read ``user item item ...`` lines; each (user, item) pair counts 1 (repeats sum).

    A line with only a user id adds no pairs (the user is left out: a row of zeros is of
    no use to training), blank lines are skipped, and a line holding a token that is not
    an integer raises :class:`InputError` naming it, or is skipped and counted with
    ``skip_bad_rows``. Returns the interactions, the number of lines read (blank ones
    aside) and the number skipped.
    """
    lists = pc.split_pattern(pc.utf8_trim(_lines(path, layout, encoding), LIST_BLANKS), " ")
    tokens = pc.list_flatten(lists)
    line_of = pc.list_parent_indices(lists).to_numpy()
    offsets = lists.offsets.to_numpy()
    first = pc.list_element(lists, 0)
    blank = np.asarray(pc.equal(first, "").to_numpy(zero_copy_only=False))
    is_user = np.zeros(len(tokens), dtype=bool)
    is_user[offsets[:-1]] = True  # split_pattern gives every line at least one token
    ok = np.asarray(pc.match_substring_regex(tokens, f"^{LIST_TOKEN}$").to_numpy(zero_copy_only=False))
    bad_token = ~ok & ~blank[line_of]
    bad_line = np.zeros(len(blank), dtype=bool)
    bad_line[line_of[bad_token]] = True
    if bad_line.any() and not skip_bad_rows:
        raise _bad_token(path, tokens, line_of, is_user, int(np.flatnonzero(bad_token)[0]))
    pair = ~is_user & ~bad_line[line_of]
    if not pair.any():
        reason = "every line was skipped as malformed" if bad_line.all() else (
            "no (user, item) pairs: every line holds a user id alone"
        )
        raise InputError(reason, path=path)
    user_vocab, user_index = _vocabulary(pc.take(first, pa.array(line_of[pair])))
    item_vocab, item_index = _vocabulary(tokens.filter(pa.array(pair)))
    matrix, _ = build_csr(
        user_index, item_index, np.ones(len(user_index), dtype=np.float32), None,
        (len(user_vocab), len(item_vocab)), feedback or "count",
    )
    data = Interactions(matrix, user_vocab, item_vocab, None, feedback or "count", source=str(path))
    return data, int((~blank).sum()), int(bad_line.sum())


def _lines(path: Path, layout: Layout, encoding: str) -> pa.Array:
    """The file's lines as one string array: element ``i`` is line ``i + 1``."""
    text = decode(read_bytes(path, layout.gzip), encoding, path).encode("utf-8")
    # The text as one large string (64-bit offsets: the file may pass 2 GiB) around the
    # bytes as they are; pa.array([str]) would copy them slowly.
    offsets = pa.py_buffer(np.array([0, len(text)], dtype=np.int64))
    whole = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(text)])
    return pc.list_flatten(pc.split_pattern(whole, "\n"))


def _bad_token(path: Path, tokens: pa.Array, line_of: np.ndarray, is_user: np.ndarray, k: int) -> InputError:
    token = tokens[k].as_py()
    role = "a user" if is_user[k] else "an item"
    if token == "":
        reason = "empty item id (two spaces in a row?)"
    else:
        reason = f"expected {role} id (an integer), got {token!r}"
    return InputError(reason + "; lines are read as user item item ...", path=path, line=int(line_of[k]) + 1)


def _vocabulary(tokens: pa.Array) -> tuple[Vocabulary, np.ndarray]:
    return to_vocabulary(*strip_ids(*encode_ids(pa.chunked_array([tokens]))))
