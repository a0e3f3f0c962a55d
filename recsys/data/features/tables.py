"""Feature tables read from files: one row per user (or item) id, typed columns
(``categorical``, ``multi``, ``numeric``; ``skip`` drops one).

Types are inferred from the values unless a spec (:mod:`recsys.data.features.spec`) says.
The text is read by the shared reader (:mod:`recsys.data.text`): gzip, byte-order mark,
encoding errors named by line. The MovieLens side files have their own loaders, which
:func:`read_features` picks by the file's name.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsys.data.features.spec import ColumnSpec, FeatureSpec, parse_spec
from recsys.data.text import (
    SNIFF_BYTES,
    decode,
    header_delimiter,
    is_gzip,
    is_number,
    magic,
    read_bytes,
    read_text,
)
from recsys.errors import ConfigError, InputError

Side = Literal["user", "item"]

_ID_NAMES = {
    "user": ("user_id", "userid", "user", "uid", "id"),
    "item": ("item_id", "itemid", "item", "movie_id", "movieid", "movie", "iid", "id"),
}


def read_features(
    path: str | os.PathLike,
    side: Side = "item",
    *,
    spec: str | os.PathLike | FeatureSpec | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    names: Sequence[str] | None = None,
    multi_sep: str = "|",
) -> pd.DataFrame:
    """Read a feature table (CSV/TSV/``|``-separated with a header, or ``names``).

    The MovieLens side files (``u.user``, ``u.item``, ``movies.csv``, ``tags.csv``) are
    recognised by name and read by their own loaders.

    Returns a DataFrame indexed by the ids (text), one typed column per feature:
    float64 for ``numeric`` (NaN when missing), text or None for ``categorical``, tuples
    of text for ``multi``. ``frame.attrs`` holds ``source`` and ``kinds``.

    Raises
    ------
    InputError
        Naming file, line and column: a row with the wrong number of fields, an empty or
        repeated id, a non-number in a numeric column, text that is not ``encoding``.
    """
    path = Path(path)
    special = special_loader(path)
    if special is not None and spec is None and names is None:
        return special(path)
    parsed = parse_spec(spec)
    text = read_text(path, encoding, "a feature table")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError("the file is empty; expected a header and one row per id", path=path)
    if delimiter is None:
        delimiter = header_delimiter(lines[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in names] if names is not None else [h.strip() for h in next(reader)]
    id_col = _check_header(header, parsed, side, path)
    ids, line_of, columns = _read_rows(reader, header, id_col, delimiter, path)
    data: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for name, values in zip(header, columns):
        if name == id_col:
            continue
        col = parsed.columns.get(name) or _infer(values, multi_sep, delimiter)
        if col.kind == "skip":
            continue
        data[name] = _typed(values, col, line_of, name, path)
        kinds[name] = col.kind
    return _frame(ids, data, kinds, str(path))


def _check_header(header: list[str], parsed: FeatureSpec, side: Side, path: Path) -> str:
    """The id column; the header must name every column once, and every column of the spec."""
    if len(set(header)) != len(header):
        raise InputError(f"the header repeats a column name: {header}", path=path, line=1)
    id_col = parsed.id_column
    if id_col is None:
        lowered = {h.lower(): h for h in header}
        id_col = next((lowered[n] for n in _ID_NAMES[side] if n in lowered), header[0])
    if id_col not in header:
        raise InputError(f"no id column {id_col!r}; the header has {', '.join(header)}", path=path, line=1)
    for name in parsed.columns:
        if name not in header:
            raise InputError(f"the spec names column {name!r}, which the header lacks ({', '.join(header)})", path=path, line=1)
    return id_col


def _read_rows(
    reader: Any, header: list[str], id_col: str, delimiter: str, path: Path
) -> tuple[list[str], list[int], list[list[str]]]:
    """(the ids, the line of each row, each column's values stripped), checking every row."""
    id_pos = header.index(id_col)
    ids: list[str] = []
    line_of: list[int] = []
    columns: list[list[str]] = [[] for _ in header]
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields ({delimiter!r}-separated), got {len(row)}", path=path, line=line)
        ident = row[id_pos].strip()
        if not ident:
            raise InputError("empty id", path=path, line=line, column=id_col)
        if ident in first_line:
            raise InputError(f"id {ident!r} repeats (first on line {first_line[ident]})", path=path, line=line, column=id_col)
        first_line[ident] = line
        ids.append(ident)
        line_of.append(line)
        for j, value in enumerate(row):
            columns[j].append(value.strip())
    if not ids:
        raise InputError("no rows after the header", path=path)
    return ids, line_of, columns


def _infer(values: list[str], sep: str, delimiter: str) -> ColumnSpec:
    present = [v for v in values if v != ""]
    if present and all(is_number(v, finite=True) for v in present):
        return ColumnSpec("numeric")
    if sep != delimiter and any(sep in v for v in present):
        return ColumnSpec("multi", sep)
    if len(present) > 50 and len(set(present)) > 0.5 * len(present):
        return ColumnSpec("skip")  # free text or per-row labels (titles): nothing to share
    return ColumnSpec("categorical")


def _typed(values: list[str], col: ColumnSpec, line_of: list[int], name: str, path: Path) -> Any:
    """One column's values as its kind stores them (see :func:`read_features`)."""
    if col.kind == "multi":
        return [_split_values(v, col.sep) for v in values]
    if col.kind != "numeric":
        return [v if v != "" else None for v in values]
    numbers = np.full(len(values), np.nan)
    for r, token in enumerate(values):
        if token == "":
            continue
        if not is_number(token, finite=True):
            raise InputError(f"expected a number, got {token!r}", path=path, line=line_of[r], column=name)
        numbers[r] = float(token)
    return numbers


def _split_values(value: str, sep: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.strip() for t in value.split(sep) if t.strip()))


def _frame(ids: Sequence[str], data: dict[str, Any], kinds: dict[str, str], source: str) -> pd.DataFrame:
    frame = pd.DataFrame(data, index=pd.Index([str(i) for i in ids], name="id", dtype=object))
    for name, kind in kinds.items():
        if kind != "numeric":
            frame[name] = frame[name].astype(object)
    frame.attrs["source"] = source
    frame.attrs["kinds"] = dict(kinds)
    return frame


def special_loader(path: Path) -> Callable[[Path], pd.DataFrame] | None:
    """The loader of a MovieLens side file, known by its name (and header), else None."""
    name = path.name.lower()
    if name == "u.user":
        return read_ml100k_users
    if name == "u.item":
        return read_ml100k_items
    if name == "movies.csv" or name == "tags.csv":
        head = _first_line(path)
        if name == "movies.csv" and head == "movieid,title,genres":
            return read_movielens_movies
        if name == "tags.csv" and head == "userid,movieid,tag,timestamp":
            return read_movielens_tags
    return None


def _first_line(path: Path) -> str | None:
    """The first line, lower case, of a file that starts as UTF-8 text; None for any other."""
    try:
        head = read_bytes(path, is_gzip(magic(path)), SNIFF_BYTES)
        if len(head) >= SNIFF_BYTES:
            head = head[: head.rfind(b"\n") + 1]  # whole lines only: a character may be cut
        text = decode(head, "utf-8", path)
    except (OSError, InputError):
        return None
    return text.partition("\n")[0].strip().lower()


def read_ml100k_users(path: str | os.PathLike) -> pd.DataFrame:
    """MovieLens 100K ``u.user``: ``id|age|gender|occupation|zip``, Latin-1.

    Features: ``age`` (numeric), ``gender``, ``occupation``, ``zip_region`` (the zip
    code's first digit: a coarse region; full zips are nearly unique per user).
    """
    frame = read_features(
        path, "user", names=["user_id", "age", "gender", "occupation", "zip"], delimiter="|",
        encoding="latin-1", spec="age=numeric,gender=categorical,occupation=categorical,zip=categorical",
    )
    frame["zip_region"] = [z[0] if isinstance(z, str) and z else None for z in frame.pop("zip")]
    kinds = {k: v for k, v in frame.attrs["kinds"].items() if k != "zip"}
    frame.attrs["kinds"] = {**kinds, "zip_region": "categorical"}
    return frame


ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)


def read_ml100k_items(path: str | os.PathLike, *, titles: bool = False) -> pd.DataFrame:
    """MovieLens 100K ``u.item``: id, title, release date, video date, URL, 19 genre flags.

    Latin-1, ``|``-separated. Features: ``genres`` (multi, from the flags, named as in
    ``u.genre``) and ``year`` (numeric, from the release date); with ``titles``, also the
    ``title`` (for people reading results, not for training: it names one item each).
    """
    flags = [f"g{i}" for i in range(len(ML100K_GENRES))]
    spec = FeatureSpec(columns={"release": ColumnSpec("categorical"), **{f: ColumnSpec("numeric") for f in flags},
                                **({"title": ColumnSpec("categorical")} if titles else {})})
    frame = read_features(
        path, "item", names=["item_id", "title", "release", "video", "url", *flags],
        delimiter="|", encoding="latin-1", spec=spec,
    )
    bits = frame[flags].fillna(0).to_numpy() > 0
    genres = [tuple(g for g, on in zip(ML100K_GENRES, row) if on and g != "unknown") for row in bits]
    years = [float(r[-4:]) if isinstance(r, str) and r[-4:].isdigit() else np.nan for r in frame["release"]]
    data, kinds = {"genres": genres, "year": np.asarray(years)}, {"genres": "multi", "year": "numeric"}
    if titles:
        data, kinds = {"title": frame["title"].to_numpy(dtype=object), **data}, {"title": "categorical", **kinds}
    return _frame(frame.index, data, kinds, str(path))


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def read_movielens_movies(path: str | os.PathLike, tags: str | os.PathLike | None = None) -> pd.DataFrame:
    """MovieLens ``movies.csv`` (``movieId,title,genres``): ``genres`` (multi), ``year`` (from the title).

    With ``tags`` (a ``tags.csv``), a multi-valued ``tags`` column is joined on.
    """
    frame = read_features(path, "item", spec="title=categorical,genres=multi:|")
    genres = [tuple(g for g in gs if g != "(no genres listed)") for gs in frame["genres"]]
    years = [float(m.group(1)) if isinstance(t, str) and (m := _YEAR.search(t)) else np.nan for t in frame["title"]]
    out = _frame(frame.index, {"genres": genres, "year": np.asarray(years)}, {"genres": "multi", "year": "numeric"}, str(path))
    if tags is not None:
        out = merge_features([out, read_movielens_tags(tags)])
    return out


def read_movielens_tags(path: str | os.PathLike) -> pd.DataFrame:
    """MovieLens ``tags.csv`` (``userId,movieId,tag,timestamp``): per movie, its distinct tags (lower case)."""
    path = Path(path)
    text = read_text(path, "utf-8", "a feature table")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:3] != ["userid", "movieid", "tag"]:
        raise InputError(f"expected a header userId,movieId,tag[,timestamp], got {','.join(header)}", path=path, line=1)
    tags: dict[str, dict[str, None]] = {}
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields, got {len(row)}", path=path, line=reader.line_num)
        movie, tag = row[1].strip(), row[2].strip().lower()
        if not movie:
            raise InputError("empty id", path=path, line=reader.line_num, column="movieId")
        if tag:
            tags.setdefault(movie, {})[tag] = None
    return _frame(list(tags), {"tags": [tuple(t) for t in tags.values()]}, {"tags": "multi"}, str(path))


def merge_features(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Join feature tables on their ids (outer join); column names must not repeat."""
    frames = list(frames)
    if len(frames) == 1:
        return frames[0]
    kinds: dict[str, str] = {}
    for f in frames:
        repeated = set(kinds) & set(f.columns)
        if repeated:
            raise ConfigError(f"feature column {sorted(repeated)[0]!r} appears in two feature files")
        kinds.update(f.attrs.get("kinds", {}))
    merged = pd.concat(frames, axis=1, join="outer")
    for name, kind in kinds.items():
        if kind == "multi":
            merged[name] = [v if isinstance(v, tuple) else () for v in merged[name]]
    merged.attrs["source"] = ",".join(str(f.attrs.get("source", "")) for f in frames)
    merged.attrs["kinds"] = kinds
    return merged


def load_features(
    paths: str | os.PathLike | Sequence[str | os.PathLike] | pd.DataFrame | None,
    side: Side,
    spec: str | os.PathLike | FeatureSpec | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame | None:
    """One typed feature frame from one or more files (joined on id), or a frame as given."""
    if paths is None or isinstance(paths, pd.DataFrame):
        return paths
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return merge_features([read_features(p, side, spec=spec, encoding=encoding) for p in paths])


def feature_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """Each column's type: from ``frame.attrs['kinds']``, else inferred from the dtype."""
    known = frame.attrs.get("kinds", {})
    out = {}
    for name in frame.columns:
        if name in known:
            out[name] = known[name]
        elif pd.api.types.is_numeric_dtype(frame[name]):
            out[name] = "numeric"
        elif any(isinstance(v, (tuple, list)) for v in frame[name]):
            out[name] = "multi"
        else:
            out[name] = "categorical"
    return out


def is_present(value: Any) -> bool:
    """Whether a categorical value is there: neither None nor NaN (pandas' missing)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))
