"""Reading and writing interaction logs: CSV, TSV, ``::``-separated, Parquet, adjacency
lists (``user item item ...``, in :mod:`recsys.data.lists`); gzip or not.

The fast path parses with pyarrow (multi-threaded, typed, ids dictionary-encoded). When
pyarrow rejects a file, a slow second pass with Python's ``csv`` module finds the first
offending line and column so the message can name them; that pass runs only on failure.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import math
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.artifacts import atomic_file
from recsys.data.interactions import Feedback, Interactions, build_csr
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError, InputError

DataFormat = Literal["auto", "table", "lists"]
Role = Literal["user", "item", "rating", "weight", "timestamp"]

# Spellings seen in public logs, compared after lower-casing and dropping "_", "-" and spaces.
COLUMN_ALIASES: dict[Role, tuple[str, ...]] = {
    "user": (
        "user", "userid", "uid", "users", "useridx", "visitorid", "customer", "customerid",
        "clientid", "memberid", "accountid", "readerid", "reviewerid", "sessionid",
    ),
    "item": (
        "item", "itemid", "iid", "items", "itemidx", "movie", "movieid", "artist", "artistid",
        "product", "productid", "song", "songid", "track", "trackid", "book", "bookid", "isbn",
        "asin", "article", "articleid", "video", "videoid", "contentid", "sku",
    ),
    "rating": ("rating", "ratings", "score", "stars", "preference", "bookrating", "overall"),
    "weight": (
        "weight", "count", "counts", "playcount", "plays", "clicks", "quantity", "frequency",
        "views", "purchases", "value",
    ),
    "timestamp": (
        "timestamp", "time", "ts", "datetime", "date", "eventtime", "unixtimestamp",
        "createdat", "unixreviewtime",
    ),
}
_POSITIONAL: dict[int, tuple[Role, ...]] = {
    2: ("user", "item"),
    3: ("user", "item", "rating"),
    4: ("user", "item", "rating", "timestamp"),
}
_DELIMITERS = ("::", "\t", ",", ";", "|", " ")
_SNIFF_BYTES = 1 << 16
_ID_TYPE = pa.dictionary(pa.int32(), pa.string())
_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def csv_write_options(*vocabularies: Vocabulary) -> pacsv.WriteOptions:
    """Quote ids only when one of them needs it (pyarrow's "needed" quotes every string)."""
    needs_quotes = any(
        not v.is_integer and any(_CSV_SPECIAL.search(s) or s != s.strip() for s in v.ids)
        for v in vocabularies
    )
    return pacsv.WriteOptions(quoting_header="none", quoting_style="needed" if needs_quotes else "none")


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().strip('"').lstrip("\ufeff")).lower()


@dataclass(frozen=True)
class ReadReport:
    """What a read did besides loading: rows (lines, for adjacency lists) read, rows skipped
    (only with ``skip_bad_rows``)."""

    rows: int
    skipped: int
    columns: dict[str, str]
    delimiter: str | None
    has_header: bool
    data_format: Literal["table", "lists"] = "table"


@dataclass(frozen=True)
class _Layout:
    fmt: Literal["csv", "parquet", "lists"]
    gzip: bool
    delimiter: str | None
    header: list[str] | None  # the file's own header, if it has one
    names: list[str]  # the names used for every column
    roles: dict[Role, str]  # role -> column name


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.is_dir():
        raise InputError("is a directory; expected an interaction file (CSV, TSV or Parquet)", path=path)


def _open_text_bytes(path: Path, is_gzip: bool) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _head(path: Path, is_gzip: bool) -> bytes:
    with _open_text_bytes(path, is_gzip) as fh:
        try:
            return fh.read(_SNIFF_BYTES)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"damaged gzip data ({exc})", path=path) from None


def _sniff_lines(head: bytes, encoding: str, path: Path) -> list[str]:
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    lines = text.splitlines()
    if len(head) >= _SNIFF_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut off by the sniff window
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise InputError("the file is empty; expected a header or rows of user,item[,rating][,timestamp]", path=path)
    return lines[:50]


def _detect_delimiter(lines: list[str], path: Path) -> str:
    for delim in _DELIMITERS:
        counts = {len(_split(ln, delim)) for ln in lines}
        if len(counts) == 1 and counts.pop() >= 2:
            return delim
    # No delimiter gives a consistent count: pick the one most lines agree on, so the
    # error later names the ragged line rather than the whole file.
    best, best_rows = None, 0
    for delim in _DELIMITERS:
        n = _split(lines[0], delim)
        agree = sum(len(_split(ln, delim)) == len(n) for ln in lines) if len(n) >= 2 else 0
        if agree > best_rows:
            best, best_rows = delim, agree
    if best is None:
        raise InputError(
            f"cannot tell the column separator: line 1 is {lines[0][:80]!r}; expected at least "
            "two columns (user, item) separated by ',', tab, ';', '|', '::' or space "
            "(or pass --sep)",
            path=path,
            line=1,
        )
    return best


def _split(line: str, delim: str) -> list[str]:
    if delim == "::":
        return line.split("::")
    # Every single-character separator, the space included, is split as pyarrow will parse
    # it (quotes honoured, runs of separators not merged): detection must not find columns
    # that the parser then does not see (a tab file once sniffed as space-separated because
    # str.split() also splits on tabs).
    return next(csv.reader([line], delimiter=delim))


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _detect_header(first: list[str], second: list[str] | None) -> bool:
    known = {a for aliases in COLUMN_ALIASES.values() for a in aliases}
    if any(_norm(tok) in known for tok in first):
        return True
    if second is None:
        return not any(_is_number(t) for t in first[2:]) and len(first) > 2
    # A header row has text where the data rows have numbers.
    return any(
        not _is_number(a) and _is_number(b) for a, b in zip(first[2:], second[2:])
    )


def _match_roles(
    names: Sequence[str],
    explicit: dict[Role, str | None],
    path: Path,
) -> dict[Role, str]:
    roles: dict[Role, str] = {}
    normalized = {_norm(n): n for n in names}
    for role, given in explicit.items():
        if given is None:
            continue
        if given in names:
            roles[role] = given
        elif _norm(given) in normalized:
            roles[role] = normalized[_norm(given)]
        else:
            close = difflib.get_close_matches(given, list(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(
                f"no column named {given!r} for the {role}; the file has "
                f"{', '.join(map(repr, names))}{hint}",
                path=path,
                line=1,
            )
    taken = set(roles.values())
    for role, aliases in COLUMN_ALIASES.items():
        if role in roles or (role in ("rating", "weight") and ("rating" in roles or "weight" in roles)):
            continue
        if explicit.get(role) is None:
            for alias in aliases:
                if alias in normalized and normalized[alias] not in taken:
                    roles[role] = normalized[alias]
                    taken.add(normalized[alias])
                    break
    for role in ("user", "item"):
        if role not in roles:
            aliases = COLUMN_ALIASES[role][:4]
            close = difflib.get_close_matches(role, [_norm(n) for n in names], n=1, cutoff=0.6)
            hint = ""
            if close:
                hint = f"; did you mean {normalized[close[0]]!r}? (pass --{role}-col)"
            raise InputError(
                f"no {role} column: expected one of {', '.join(aliases)} ... or --{role}-col NAME; "
                f"the header has {', '.join(map(repr, names))}{hint}",
                path=path,
                line=1,
            )
    return roles


def _layout(
    path: Path,
    *,
    sep: str | None,
    header: bool | None,
    encoding: str,
    explicit: dict[Role, str | None],
    data_format: DataFormat = "auto",
) -> _Layout:
    from recsys.data import lists  # imported here: it builds on this module's helpers

    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
        if data_format == "lists":
            raise InputError("is Parquet, a table; --data-format lists reads text lines user item item ...", path=path)
        try:
            names = pq.read_schema(path).names
        except Exception as exc:
            raise InputError(f"not a readable Parquet file ({exc})", path=path) from None
        return _Layout("parquet", False, None, names, names, _match_roles(names, explicit, path))
    is_gzip = magic[:2] == b"\x1f\x8b"
    lines = _sniff_lines(_head(path, is_gzip), encoding, path)
    # Options that only a table has (a separator, a header, named columns) keep it a table.
    table_options = sep not in (None, " ") or header or any(explicit.values())
    if data_format == "lists" or (data_format == "auto" and not table_options and lists.looks_like_lists(lines)):
        return _Layout("lists", is_gzip, " ", None, ["user", "item"], {"user": "user", "item": "item"})
    delim = sep if sep is not None else _detect_delimiter(lines, path)
    if sep is not None and delim == "\\t":
        delim = "\t"
    first = _split(lines[0], delim)
    second = _split(lines[1], delim) if len(lines) > 1 else None
    if len(first) < 2:
        raise InputError(
            f"line 1 has one column ({lines[0][:80]!r}) when split on {delim!r}; expected at "
            "least two columns (user, item): is the separator right?",
            path=path,
            line=1,
        )
    has_header = _detect_header(first, second) if header is None else header
    if has_header:
        names = [t.strip().lstrip("\ufeff") for t in first]
        if len(set(names)) != len(names):
            raise InputError(f"the header repeats a column name: {first}", path=path, line=1)
        return _Layout("csv", is_gzip, delim, names, names, _match_roles(names, explicit, path))
    if len(first) not in _POSITIONAL:
        raise InputError(
            f"no header and {len(first)} columns; expected 2 to 4 columns in the order "
            "user, item[, rating][, timestamp] or a header naming them"
            + (lists.hint(first) if delim == " " else ""),
            path=path,
            line=1,
        )
    positional = list(_POSITIONAL[len(first)])
    names = [str(r) for r in positional]
    roles: dict[Role, str] = {r: r for r in positional}  # type: ignore[misc]
    return _Layout("csv", is_gzip, delim, None, names, roles)


def _row_to_line(path: Path, layout: _Layout, encoding: str, row: int) -> int:
    """Physical line number (1-based) of data row ``row`` (0-based), for messages."""
    for line_no, index, _fields in _iter_rows(path, layout, encoding):
        if index == row:
            return line_no
    return -1


def _iter_rows(path: Path, layout: _Layout, encoding: str) -> Iterator[tuple[int, int, list[str]]]:
    """Yield (physical line, data-row index, fields), skipping the header and blank lines."""
    raw = _open_text_bytes(path, layout.gzip)
    text = io.TextIOWrapper(raw, encoding=encoding, newline="")
    try:
        if layout.delimiter == "::":
            pending = 0
            for line_no, line in enumerate(text, start=1):
                if line_no == 1 and layout.header is not None:
                    continue
                if not line.strip():
                    continue
                yield line_no, pending, _split(line.rstrip("\r\n"), layout.delimiter or ",")
                pending += 1
        else:
            reader = csv.reader(text, delimiter=layout.delimiter or ",")
            index = 0
            first = True
            for fields in reader:
                if first and layout.header is not None:
                    first = False
                    continue
                first = False
                if not fields or (all(not f.strip() for f in fields) and len(fields) <= 1):
                    continue
                yield reader.line_num, index, fields
                index += 1
    finally:
        text.detach()
        raw.close()


def _diagnose(path: Path, layout: _Layout, encoding: str, fallback: str) -> InputError:
    """Find the first bad row with a slow exact pass; ``fallback`` if none is found."""
    from recsys.data import lists

    expected = len(layout.names)
    positions = {role: layout.names.index(col) for role, col in layout.roles.items()}
    try:
        for line_no, _index, fields in _iter_rows(path, layout, encoding):
            fields[0] = fields[0].lstrip("\ufeff")
            if len(fields) != expected:
                return InputError(
                    f"expected {expected} fields ({', '.join(layout.names)}), found "
                    f"{len(fields)}" + (lists.hint(fields) if layout.delimiter == " " else ""),
                    path=path,
                    line=line_no,
                )
            for role in ("user", "item"):
                if not fields[positions[role]].strip():
                    return InputError(f"empty {role} id", path=path, line=line_no, column=layout.roles[role])
            for role in ("rating", "weight"):
                if role in positions:
                    problem = _value_problem(fields[positions[role]])
                    if problem:
                        return InputError(problem, path=path, line=line_no, column=layout.roles[role])
            if "timestamp" in positions:
                token = fields[positions["timestamp"]].strip()
                if not _is_number(token):
                    try:
                        np.datetime64(token)
                    except ValueError:
                        return InputError(
                            f"expected a timestamp (seconds since 1970 or an ISO date), got {token!r}",
                            path=path,
                            line=line_no,
                            column=layout.roles["timestamp"],
                        )
    except UnicodeDecodeError as exc:
        return _encoding_error(path, layout, encoding, exc)
    except (EOFError, OSError, zlib.error) as exc:
        return InputError(f"damaged or truncated gzip data ({exc})", path=path)
    except csv.Error as exc:
        return InputError(f"malformed CSV ({exc})", path=path)
    return InputError(fallback, path=path)


def _encoding_error(path: Path, layout: _Layout, encoding: str, exc: UnicodeDecodeError) -> InputError:
    # Find the line holding the bad byte by decoding line by line.
    with _open_text_bytes(path, layout.gzip) as fh:
        for line_no, raw_line in enumerate(fh, start=1):
            try:
                raw_line.decode(encoding)
            except UnicodeDecodeError as here:  # ``exc`` counts bytes from a block, not this line
                return InputError(
                    f"text is not valid {encoding} (byte {raw_line[here.start:here.start + 1]!r}"
                    f" near {raw_line[:60]!r}); pass --encoding latin-1 (or the file's encoding)",
                    path=path,
                    line=line_no,
                )
    return InputError(f"text is not valid {encoding}; pass --encoding", path=path)


def _value_problem(token: str) -> str | None:
    token = token.strip()
    if not token:
        return "missing value: expected a number"
    try:
        value = float(token)
    except ValueError:
        return f"expected a number, got {token!r}"
    if math.isnan(value):
        return "expected a number, got NaN"
    if math.isinf(value):
        return f"expected a finite number, got {token!r}"
    if value < 0:
        return f"expected a value >= 0, got {token!r}"
    return None


def _read_table(path: Path, layout: _Layout, encoding: str, skip_bad_rows: bool) -> tuple[pa.Table, int]:
    columns = list(dict.fromkeys(layout.roles.values()))
    types = {layout.roles["user"]: _ID_TYPE, layout.roles["item"]: _ID_TYPE}
    for role in ("rating", "weight"):
        if role in layout.roles:
            types[layout.roles[role]] = pa.float64()
    if layout.fmt == "parquet":
        try:
            table = pq.read_table(path, columns=columns)
        except Exception as exc:
            raise InputError(f"cannot read Parquet data ({exc})", path=path) from None
        return table, 0
    skipped = 0

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        nonlocal skipped
        if skip_bad_rows:
            skipped += 1
            return "skip"
        return "error"

    read_options = pacsv.ReadOptions(
        column_names=None if layout.header is not None else layout.names,
        encoding=encoding,
        block_size=1 << 24,
    )
    parse_options = pacsv.ParseOptions(
        delimiter="\t" if layout.delimiter == "::" else (layout.delimiter or ","),
        # Only when skipping: pyarrow's handler call fails on rows that are not valid text.
        invalid_row_handler=on_invalid_row if skip_bad_rows else None,
    )
    convert_options = pacsv.ConvertOptions(
        include_columns=columns,
        column_types=types,
        strings_can_be_null=False,
    )
    source: pa.NativeFile | str
    if layout.delimiter == "::":
        # pyarrow takes single-character delimiters only: translate MovieLens' '::' to tabs.
        with _open_text_bytes(path, layout.gzip) as fh:
            source = pa.BufferReader(fh.read().replace(b"::", b"\t"))
    elif layout.gzip:
        source = pa.CompressedInputStream(pa.OSFile(str(path)), "gzip")
    else:
        source = str(path)
    try:
        table = pacsv.read_csv(source, read_options, parse_options, convert_options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, zlib.error) as exc:
        message = str(exc)
        if "Empty CSV" in message:
            raise InputError("the file is empty; expected rows of user,item[,rating][,timestamp]", path=path) from None
        if skip_bad_rows and "conversion error" in message:
            # The lenient pass re-reads every row and counts every skip itself.
            return _read_table_lenient(path, layout, encoding)
        raise _diagnose(path, layout, encoding, f"cannot parse ({message})") from None
    return table, skipped


def _read_table_lenient(path: Path, layout: _Layout, encoding: str) -> tuple[pa.Table, int]:
    """Python fallback for ``skip_bad_rows`` when values themselves are malformed."""
    columns: dict[str, list[str]] = {name: [] for name in layout.names}
    skipped = 0
    positions = {role: layout.names.index(col) for role, col in layout.roles.items()}
    for _line, _index, fields in _iter_rows(path, layout, encoding):
        bad = len(fields) != len(layout.names) or any(
            _value_problem(fields[positions[r]]) for r in ("rating", "weight") if r in positions
        )
        if bad:
            skipped += 1
            continue
        for name, value in zip(layout.names, fields):
            columns[name].append(value)
    table = pa.table({n: pa.array(v, pa.string()) for n, v in columns.items()})
    for role in ("rating", "weight"):
        if role in layout.roles:
            col = layout.roles[role]
            table = table.set_column(table.schema.get_field_index(col), col, pc.cast(table[col], pa.float64()))
    return table, skipped


def _ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct text ids, one code per row into them), vectorized over arrow chunks."""
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()
        dictionary = column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
        codes = np.concatenate(
            [c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]
        ) if column.num_chunks else np.zeros(0, dtype=np.int32)
        return np.asarray(dictionary.to_pylist(), dtype=object), codes.astype(np.int64)
    encoded = pc.dictionary_encode(column.cast(pa.string()) if not pa.types.is_string(column.type) else column)
    return _ids(encoded if isinstance(encoded, pa.ChunkedArray) else pa.chunked_array([encoded]))


def _strip_ids(uniques: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strip surrounding blanks, merging ids that then coincide.

    ``"65  "`` and ``"65"`` are one id: exported logs often pad fields with spaces.
    """
    stripped = np.asarray([s.strip() for s in uniques], dtype=object)
    merged, inverse = np.unique(stripped, return_inverse=True)
    if len(merged) < len(uniques):
        return merged, inverse[codes]
    return stripped, codes


def _to_vocabulary(uniques: np.ndarray, codes: np.ndarray) -> tuple[Vocabulary, np.ndarray]:
    """Sort ids (numerically when integers) and remap the codes to match."""
    vocab = Vocabulary.from_strings(uniques)
    order = np.argsort(vocab.ids, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Vocabulary(vocab.ids[order]), rank[codes]


def _timestamps(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        column = pc.cast(column, pa.timestamp("s")) if pa.types.is_date(t) else column
        return pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        return column.to_numpy().astype(np.int64)
    if pa.types.is_floating(t):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64).astype(np.int64)
    try:
        parsed = pc.cast(column, pa.timestamp("s"))
    except pa.ArrowInvalid:
        raise InputError("timestamps are neither numbers nor ISO dates", path=path, column="timestamp") from None
    return pc.cast(parsed, pa.int64()).to_numpy(zero_copy_only=False)


def read_interactions(
    path: str | os.PathLike,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    header: bool | None = None,
    feedback: Feedback | None = None,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    data_format: DataFormat = "auto",
    return_report: bool = False,
) -> Interactions | tuple[Interactions, ReadReport]:
    """Read an interaction log into :class:`Interactions`.

    Formats: CSV, TSV, ``::``-separated (MovieLens ``ratings.dat``), space-separated, and
    Parquet; gzip-compressed text is recognized by its magic bytes, not its name. The
    separator and header are detected from the first 64 KiB unless given; columns are
    found by common spellings (``user_id``, ``userId``, ``movieId``, ``artistID``,
    ``rating``, ``weight``, ``timestamp``, ...) unless named. A file without a header
    holds ``user, item[, rating][, timestamp]`` in that order.

    Adjacency lists (KGAT, NGCF, LightGCN: one line per user, ``user item item ...``,
    space-separated integers) are detected when line lengths vary, or forced with
    ``data_format="lists"``; each pair counts 1 and a line with only a user id adds
    nothing. ``data_format="table"`` turns the detection off.

    Ids are read as text and kept exactly as written; when every id of a column is a
    canonical integer they are stored as int64. A ``rating`` column makes explicit
    feedback (a repeated pair keeps its latest rating); a ``weight``/count column, or no
    value column, makes implicit feedback (repeated pairs sum; no column counts each row
    as 1). ``feedback`` overrides that choice.

    Raises
    ------
    InputError
        With the file, line and column of the first problem: a missing file, no user or
        item column, a ragged row, an empty id, a value that is not a finite number >= 0,
        bad text encoding, damaged gzip. With ``skip_bad_rows=True`` malformed rows are
        skipped instead and counted in the report.
    """
    path = Path(path)
    explicit: dict[Role, str | None] = {
        "user": user_col, "item": item_col, "rating": rating_col,
        "weight": weight_col, "timestamp": timestamp_col,
    }
    _check_data_format(data_format, sep, header, explicit)
    _check_path(path)
    try:
        layout = _layout(path, sep=sep, header=header, encoding=encoding, explicit=explicit, data_format=data_format)
    except LookupError:
        raise InputError(f"unknown text encoding {encoding!r}", path=path) from None
    if layout.fmt == "lists":
        from recsys.data import lists

        data, report = lists.read_lists(path, layout, encoding, skip_bad_rows, feedback)
        return (data, report) if return_report else data
    table, skipped = _read_table(path, layout, encoding, skip_bad_rows)
    if table.num_rows == 0:
        raise InputError(
            "no data rows (only a header?); expected rows of "
            + ",".join(layout.names),
            path=path,
        )
    roles = layout.roles

    def first_bad_row(mask: np.ndarray) -> int:
        return _row_to_line(path, layout, encoding, int(np.flatnonzero(mask)[0]))

    # Ids.
    ids: dict[str, tuple[Vocabulary, np.ndarray]] = {}
    keep = np.ones(table.num_rows, dtype=bool)
    for role in ("user", "item"):
        column = table[roles[role]]
        if column.null_count:
            bad = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
            if not skip_bad_rows:
                raise InputError(f"empty {role} id", path=path, line=first_bad_row(bad), column=roles[role])
            keep &= ~bad
        uniques, codes = _strip_ids(*_ids(column))
        empty = np.flatnonzero(np.char.str_len(uniques.astype(str)) == 0) if len(uniques) else []
        if len(empty):
            bad = codes == empty[0]
            if not skip_bad_rows:
                raise InputError(f"empty {role} id", path=path, line=first_bad_row(bad), column=roles[role])
            keep &= ~bad
        ids[role] = (uniques, codes)

    # Values.
    value_role: Role | None = "rating" if "rating" in roles else ("weight" if "weight" in roles else None)
    values = None
    if value_role is not None:
        column = table[roles[value_role]]
        if not pa.types.is_floating(column.type) and not pa.types.is_integer(column.type):
            try:
                column = pc.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise _diagnose(path, layout, encoding, f"column {roles[value_role]!r} is not numeric") from None
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            if not skip_bad_rows:
                line = first_bad_row(bad)
                v = values[np.flatnonzero(bad)[0]]
                what = "missing or NaN" if np.isnan(v) else repr(float(v))
                raise InputError(
                    f"expected a finite number >= 0, got {what}", path=path, line=line, column=roles[value_role]
                )
            keep &= ~bad

    timestamps = None
    if "timestamp" in roles:
        timestamps = _timestamps(table[roles["timestamp"]], path)

    if not keep.all():
        skipped += int((~keep).sum())
        if not keep.any():
            raise InputError("every row was skipped as malformed", path=path)

    user_vocab, user_index = _to_vocabulary(*_compact(*ids["user"], keep))
    item_vocab, item_index = _to_vocabulary(*_compact(*ids["item"], keep))
    if feedback is None:
        feedback = "rating" if value_role == "rating" else "count"
    vals = (
        np.ones(len(user_index), dtype=np.float32)
        if values is None
        else values[keep].astype(np.float32)
    )
    ts = None if timestamps is None else timestamps[keep]
    matrix, ts = build_csr(user_index, item_index, vals, ts, (len(user_vocab), len(item_vocab)), feedback)
    data = Interactions(matrix, user_vocab, item_vocab, ts, feedback, source=str(path))
    if not return_report:
        return data
    report = ReadReport(
        rows=table.num_rows,
        skipped=skipped,
        columns={str(k): v for k, v in roles.items()},
        delimiter=layout.delimiter,
        has_header=layout.header is not None,
    )
    return data, report


def _check_data_format(
    data_format: str, sep: str | None, header: bool | None, explicit: dict[Role, str | None]
) -> None:
    if data_format not in ("auto", "table", "lists"):
        raise ConfigError(f"data format must be auto, table or lists, not {data_format!r}")
    if data_format == "lists" and (sep not in (None, " ") or header or any(explicit.values())):
        raise ConfigError(
            "--data-format lists reads space-separated lines user item item ... without a header; "
            "it takes no --sep, --header or column options"
        )


def _compact(uniques: np.ndarray, codes: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop ids used only by skipped rows, renumbering the codes."""
    if keep.all():
        return uniques, codes
    codes = codes[keep]
    used = np.unique(codes)
    remap = np.full(len(uniques), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return uniques[used], remap[codes]


def write_interactions(data: Interactions, path: str | os.PathLike, *, lock: bool = True) -> None:
    """Write ``user,item,rating|weight[,timestamp]`` CSV, atomically.

    Parquet when the name ends in ``.parquet``, gzip-compressed CSV for ``.gz``.
    """
    path = Path(path)
    frame_columns: dict[str, pa.Array] = {
        "user": _id_column(data.users, data.row_indices),
        "item": _id_column(data.items, data.matrix.indices),
        ("rating" if data.feedback == "rating" else "weight"): pa.array(data.matrix.data),
    }
    if data.timestamps is not None:
        frame_columns["timestamp"] = pa.array(data.timestamps)
    table = pa.table(frame_columns)
    options = csv_write_options(data.users, data.items)
    with atomic_file(path, lock=lock) as tmp:
        if path.suffix == ".parquet":
            pq.write_table(table, tmp)
        elif path.suffix == ".gz":
            with pa.CompressedOutputStream(str(tmp), "gzip") as out:
                pacsv.write_csv(table, out, options)
        else:
            pacsv.write_csv(table, tmp, options)


def _id_column(vocab: Vocabulary, index: np.ndarray) -> pa.Array:
    dictionary = pa.array(vocab.ids) if not vocab.is_integer else pa.array(vocab.ids, pa.int64())
    return pc.take(dictionary, pa.array(np.asarray(index, dtype=np.int64)))
