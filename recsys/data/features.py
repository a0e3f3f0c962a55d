"""Side information: user and item feature tables, typed, aligned with the id maps, encoded.

A feature table has one row per user (or item) id and typed columns:

- ``categorical``: one value per row (``country``, ``occupation``), an embedding each;
- ``multi``: several values split on a separator (``Action|Comedy``), mean of embeddings;
- ``numeric``: a number (``age``, ``year``), standardized;
- ``skip``: ignored (free text such as titles).

Types are inferred from the values and can be overridden by a spec, either a string
(``"genres=multi:|,year=numeric,title=skip"``) or a small TOML file::

    id = "item_id"
    [columns]
    genres = "multi:|"
    year = "numeric"

:func:`read_features` parses a file into a typed frame (index: the ids as text);
:func:`attach_features` aligns such frames with an :class:`Interactions`' vocabularies,
adding ids that have features but no interactions (the cold ones) to the vocabulary;
:class:`FeatureEncoder` turns aligned frames into index arrays for a model and saves as
JSON. Loaders for the MovieLens side files are :func:`read_ml100k_users`,
:func:`read_ml100k_items`, :func:`read_movielens_movies` and :func:`read_movielens_tags`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.interactions import Interactions
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
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Kind = Literal["categorical", "multi", "numeric", "skip"]
KINDS: tuple[str, ...] = ("categorical", "multi", "numeric", "skip")
Side = Literal["user", "item"]

_ID_NAMES = {
    "user": ("user_id", "userid", "user", "uid", "id"),
    "item": ("item_id", "itemid", "item", "movie_id", "movieid", "movie", "iid", "id"),
}


@dataclass(frozen=True)
class ColumnSpec:
    """The type of one feature column; ``sep`` splits a ``multi`` column's values."""

    kind: Kind
    sep: str = "|"


@dataclass
class FeatureSpec:
    """Overrides for reading a feature file: the id column and column types."""

    id_column: str | None = None
    columns: dict[str, ColumnSpec] = field(default_factory=dict)


def _column_spec(text: str, where: str) -> ColumnSpec:
    kind, _, sep = text.strip().partition(":")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown feature type {kind!r}; use {', '.join(KINDS)}")
    if kind == "multi":
        return ColumnSpec("multi", {"tab": "\t", "comma": ",", "space": " "}.get(sep, sep) or "|")
    return ColumnSpec(kind)  # type: ignore[arg-type]


def parse_spec(spec: str | os.PathLike | FeatureSpec | None) -> FeatureSpec:
    """A :class:`FeatureSpec` from ``"col=kind[:sep],...,id=COL"``, a TOML path, or as given."""
    if spec is None:
        return FeatureSpec()
    if isinstance(spec, FeatureSpec):
        return spec
    text = os.fspath(spec)
    if text.endswith(".toml"):
        try:
            with open(text, "rb") as fh:
                table = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{text}: no such feature spec file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{text}: not valid TOML ({exc})") from None
        unknown = sorted(set(table) - {"id", "columns"})
        if unknown:
            raise ConfigError(f"{text}: unknown keys {', '.join(unknown)}; use id and [columns]")
        columns = table.get("columns", {})
        if not isinstance(columns, dict):
            raise ConfigError(f"{text}: [columns] must be a table of column = \"type\"")
        return FeatureSpec(
            table.get("id"), {str(k): _column_spec(str(v), text) for k, v in columns.items()}
        )
    out = FeatureSpec()
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"feature spec entries look like column=type, got {part!r}")
        name, value = name.strip(), value.strip()
        if name == "id" and value.partition(":")[0] not in KINDS:
            out.id_column = value
        else:
            out.columns[name] = _column_spec(value, "feature spec")
    return out


# -- reading -----------------------------------------------------------------------------------
def _infer(values: list[str], sep: str, delimiter: str) -> ColumnSpec:
    present = [v for v in values if v != ""]
    if present and all(is_number(v, finite=True) for v in present):
        return ColumnSpec("numeric")
    if sep != delimiter and any(sep in v for v in present):
        return ColumnSpec("multi", sep)
    if len(present) > 50 and len(set(present)) > 0.5 * len(present):
        return ColumnSpec("skip")  # free text or per-row labels (titles): nothing to share
    return ColumnSpec("categorical")


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
    special = _special_loader(path)
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
    data: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for j, name in enumerate(header):
        if j == id_pos:
            continue
        col = parsed.columns.get(name) or _infer(columns[j], multi_sep, delimiter)
        if col.kind == "skip":
            continue
        if col.kind == "numeric":
            values = np.full(len(ids), np.nan)
            for r, token in enumerate(columns[j]):
                if token == "":
                    continue
                if not is_number(token, finite=True):
                    raise InputError(f"expected a number, got {token!r}", path=path, line=line_of[r], column=name)
                values[r] = float(token)
            data[name] = values
        elif col.kind == "multi":
            data[name] = [_split_values(v, col.sep) for v in columns[j]]
        else:
            data[name] = [v if v != "" else None for v in columns[j]]
        kinds[name] = col.kind
    return _frame(ids, data, kinds, str(path))


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


def _special_loader(path: Path) -> Any:
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


def read_ml100k_items(path: str | os.PathLike) -> pd.DataFrame:
    """MovieLens 100K ``u.item``: id, title, release date, video date, URL, 19 genre flags.

    Latin-1, ``|``-separated. Features: ``genres`` (multi, from the flags, named as in
    ``u.genre``) and ``year`` (numeric, from the release date).
    """
    flags = [f"g{i}" for i in range(len(ML100K_GENRES))]
    spec = FeatureSpec(columns={"release": ColumnSpec("categorical"), **{f: ColumnSpec("numeric") for f in flags}})
    frame = read_features(
        path, "item", names=["item_id", "title", "release", "video", "url", *flags],
        delimiter="|", encoding="latin-1", spec=spec,
    )
    bits = frame[flags].fillna(0).to_numpy() > 0
    genres = [tuple(g for g, on in zip(ML100K_GENRES, row) if on and g != "unknown") for row in bits]
    years = [float(r[-4:]) if isinstance(r, str) and r[-4:].isdigit() else np.nan for r in frame["release"]]
    out = _frame(frame.index, {"genres": genres, "year": np.asarray(years)}, {"genres": "multi", "year": "numeric"}, str(path))
    return out


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


# -- aligning with interactions ----------------------------------------------------------------
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


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


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
            out |= np.asarray([_present(v) for v in col])
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


# -- encoding for a model ----------------------------------------------------------------------
@dataclass
class EncodedFeatures:
    """Index arrays for one side, row ``i`` = vocabulary index ``i``.

    ``categorical`` (n, C) int64, 0 = missing/unknown; ``multi`` a list of (n, L_c)
    int64 arrays padded with 0; ``numeric`` (n, N) float32, standardized, 0 = missing.
    """

    categorical: np.ndarray
    multi: list[np.ndarray]
    numeric: np.ndarray


@dataclass
class FeatureEncoder:
    """Learned value vocabularies and numeric scales of one side's feature columns.

    Saved as JSON (:meth:`to_dict`); unknown values map to 0 ("missing").
    """

    categorical: dict[str, list[str]] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_values: int = 32

    @classmethod
    def fit(cls, frame: pd.DataFrame | None, max_values: int = 32) -> FeatureEncoder:
        enc = cls(max_values=max_values)
        if frame is None:
            return enc
        for name, kind in feature_kinds(frame).items():
            col = frame[name]
            if kind == "numeric":
                v = col.to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                mean = float(v.mean()) if len(v) else 0.0
                std = float(v.std()) if len(v) > 1 else 1.0
                enc.numeric[name] = (mean, std if std > 0 else 1.0)
            elif kind == "multi":
                enc.multi[name] = sorted({t for vals in col if isinstance(vals, (tuple, list)) for t in vals})
            elif kind == "categorical":
                enc.categorical[name] = sorted({str(v) for v in col if _present(v)})
        return enc

    @property
    def cardinalities(self) -> tuple[list[int], list[int], int]:
        """(values+1 per categorical, tokens+1 per multi, number of numeric columns)."""
        return (
            [len(v) + 1 for v in self.categorical.values()],
            [len(v) + 1 for v in self.multi.values()],
            len(self.numeric),
        )

    def transform(self, frame: pd.DataFrame | None, n: int) -> EncodedFeatures:
        """Encode ``n`` rows of ``frame`` (columns by name; absent columns are missing)."""
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        multi = []
        has = (lambda c: False) if frame is None else (lambda c: c in frame.columns)
        for j, (name, values) in enumerate(self.categorical.items()):
            if has(name):
                col = frame[name]
                # One vectorized lookup; unknown values (-1) and missing ones become 0.
                found = pd.Index(values).get_indexer(col.astype(str)) + 1
                cat[:, j] = np.where(col.notna().to_numpy(), found, 0)
        for name, tokens in self.multi.items():
            lookup = {v: i + 1 for i, v in enumerate(tokens)}
            # A table of new rows may hold one value per row, read as text: split it as training did.
            column = [tuple(v.split("|")) if isinstance(v, str) else v for v in frame[name]] if has(name) else []
            rows = [[lookup[t] for t in vals if t in lookup][: self.max_values] if isinstance(vals, (tuple, list)) else []
                    for vals in column]
            width = max([1, *map(len, rows)])
            arr = np.zeros((n, width), dtype=np.int64)
            for r, ixs in enumerate(rows):
                arr[r, : len(ixs)] = ixs
            multi.append(arr)
        for j, (name, (mean, std)) in enumerate(self.numeric.items()):
            if has(name):
                raw = pd.to_numeric(frame[name], errors="coerce")
                bad = raw.isna() & frame[name].notna()
                if bad.any():
                    row = int(np.flatnonzero(bad.to_numpy())[0])
                    raise InputError(f"column {name!r}, row {row + 1}: expected a number (the model was trained "
                                     f"with numbers there), got {frame[name].iloc[row]!r}")
                v = (raw.to_numpy(dtype=np.float64) - mean) / std
                num[:, j] = np.where(np.isfinite(v), v, 0.0)
        return EncodedFeatures(cat, multi, num)

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": self.categorical,
            "multi": self.multi,
            "numeric": {k: list(v) for k, v in self.numeric.items()},
            "max_values": self.max_values,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(
            categorical={k: list(v) for k, v in d.get("categorical", {}).items()},
            multi={k: list(v) for k, v in d.get("multi", {}).items()},
            numeric={k: (float(v[0]), float(v[1])) for k, v in d.get("numeric", {}).items()},
            max_values=int(d.get("max_values", 32)),
        )
