"""Item metadata for the diagnostics: a table read from a file and lined up with a model's items."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.features.tables import feature_kinds, read_ml100k_items, special_loader
from recsys.data.text import header_delimiter, read_text
from recsys.errors import ConfigError, InputError

ID_COLUMNS = ("item_id", "item", "itemId", "movieId", "movie_id", "id")
TITLE_COLUMNS = ("title", "name", "item_name")
MULTI_SEP = "|"


def read_item_features(path: str | os.PathLike, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Read an item table (delimited text with a header row, or Parquet) as strings.

    The text goes through the reader of feature tables and logs (:mod:`recsys.data.text`):
    gzip by content, byte-order mark, ``encoding`` with the line of an undecodable byte,
    and the separator the header holds most of, so a table training accepted reads here
    too. MovieLens 100K's ``u.item`` (no header, Latin-1) is read by its own loader
    (:func:`recsys.data.features.read_ml100k_items`: ``genres`` and ``year``).
    Multi-valued columns (``drama|romance``) are kept as written; :func:`values_of`
    splits them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read the item table ({exc})", path=path) from None
    elif special_loader(path) is read_ml100k_items:  # no header, Latin-1: the loader knows its columns
        frame = _as_text(read_ml100k_items(path, titles=True))
    else:
        frame = _read_delimited(path, encoding)
    if frame.empty:
        raise InputError("the item table has no rows", path=path)
    return frame


def _read_delimited(path: Path, encoding: str) -> pd.DataFrame:
    text = read_text(path, encoding, "an item table")
    sep = header_delimiter(text.partition("\n")[0])
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except ValueError as exc:
        raise InputError(f"cannot read the item table ({exc})", path=path) from None


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A typed feature frame as the text table this module reads: the ids in an ``item_id``
    column, multi-valued cells joined with :data:`MULTI_SEP`, numbers as text, None missing."""
    out = pd.DataFrame({"item_id": frame.index.to_numpy(dtype=object)})
    for name, kind in feature_kinds(frame).items():
        values = frame[name].to_numpy(dtype=object)
        if kind == "multi":
            out[name] = [MULTI_SEP.join(v) or None for v in values]
        elif kind == "numeric":
            out[name] = [None if np.isnan(v) else f"{v:g}" for v in values]
        else:
            out[name] = values
    return out


def align_items(
    frame: pd.DataFrame,
    item_ids: np.ndarray,
    *,
    id_column: str | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Rows of ``frame`` in the order of ``item_ids`` (a model's items); missing ones are NaN.

    The id column is ``id_column`` or, by default, the first of :data:`ID_COLUMNS` present,
    else the column whose values match the most ids. Ids are compared as text, so ``42``
    in the file matches the integer id 42 of a model. The returned frame has the model's
    ids as its index.
    """
    keys = pd.Index(np.asarray(item_ids).astype(str))
    if id_column is None:
        id_column = _detect_id_column(frame, keys)
    if id_column not in frame.columns:
        raise ConfigError(f"{source or 'item table'}: no column {id_column!r}; it has {', '.join(map(str, frame.columns))}")
    ids = frame[id_column].astype(str).str.strip()
    table = frame.drop(columns=[id_column]).set_index(ids)
    table = table[~table.index.duplicated(keep="first")]
    matched = keys.isin(table.index).sum()
    if matched == 0:
        raise InputError(
            f"no item id in column {id_column!r} matches the model's items "
            f"(file ids look like {', '.join(ids.head(3))}; model ids like {', '.join(keys[:3])})",
            path=source,
        )
    aligned = table.reindex(keys)
    aligned.index = pd.Index(item_ids, name="item")
    return aligned


def _detect_id_column(frame: pd.DataFrame, keys: pd.Index) -> str:
    for name in ID_COLUMNS:
        if name in frame.columns:
            return name
    matches = {c: frame[c].astype(str).str.strip().isin(keys).sum() for c in frame.columns}
    return max(matches, key=lambda c: matches[c])


def title_column(frame: pd.DataFrame) -> str | None:
    """The column that names items (``title``, ``name``), if any."""
    return next((c for c in TITLE_COLUMNS if c in frame.columns), None)


def require_column(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise ConfigError(f"the item table has no column {column!r}; it has {', '.join(map(str, frame.columns))}")
    return frame[column]


def values_of(series: pd.Series, sep: str = MULTI_SEP) -> list[frozenset[str]]:
    """Each item's set of values of a categorical column; ``a|b`` holds two; missing is empty."""
    out = []
    for v in series.to_numpy(dtype=object):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(frozenset())
        else:
            out.append(frozenset(p.strip() for p in str(v).split(sep) if p.strip()))
    return out


def membership(values: list[frozenset[str]]) -> tuple[np.ndarray, list[str]]:
    """A boolean (n_items, n_values) matrix of which item carries which value, and the values
    (most frequent first)."""
    counts: dict[str, int] = {}
    for s in values:
        for v in s:
            counts[v] = counts.get(v, 0) + 1
    names = sorted(counts, key=lambda v: (-counts[v], v))
    col = {v: j for j, v in enumerate(names)}
    matrix = np.zeros((len(values), len(names)), dtype=bool)
    for i, s in enumerate(values):
        for v in s:
            matrix[i, col[v]] = True
    return matrix, names
