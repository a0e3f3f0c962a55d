"""Reading and writing interaction logs: CSV, TSV, ``::``-separated, Parquet, adjacency
lists (``user item item ...``, in :mod:`recsys.data.lists`); gzip or not.

The fast path parses with pyarrow (multi-threaded, typed, ids dictionary-encoded) after
:mod:`recsys.data.sniff` has told the layout. When pyarrow rejects a file, a slow second
pass (:mod:`recsys.data.diagnose`) finds the first offending line and column so the
message can name them; that pass runs only on failure.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.artifacts import atomic_file
from recsys.data.diagnose import FLOAT32_MAX, diagnose, read_lenient, row_to_line
from recsys.data.ids import compact, encode_ids, strip_ids, to_vocabulary
from recsys.data.interactions import Feedback, Interactions, build_csr
from recsys.data.lists import read_lists
from recsys.data.sniff import DataFormat, Layout, Role, check_data_format, sniff_layout
from recsys.data.text import check_file, read_bytes
from recsys.data.vocabulary import Vocabulary
from recsys.errors import InputError

_ID_TYPE = pa.dictionary(pa.int32(), pa.string())
_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def csv_write_options(*vocabularies: Vocabulary) -> pacsv.WriteOptions:
    """Quote ids only when one of them needs it (pyarrow's "needed" quotes every string)."""
    needs_quotes = any(
        not v.is_integer and any(_CSV_SPECIAL.search(s) or s != s.strip() for s in v.ids)
        for v in vocabularies
    )
    return pacsv.WriteOptions(quoting_header="none", quoting_style="needed" if needs_quotes else "none")


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
    merged: int | None = None  # rows that repeated a (user, item) pair and were combined (tables)


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
    check_data_format(data_format, sep, header, explicit)
    check_file(path, "an interaction file (CSV, TSV or Parquet)")
    layout = sniff_layout(
        path, sep=sep, header=header, encoding=encoding, explicit=explicit, data_format=data_format
    )
    if layout.fmt == "lists":
        data, rows, skipped = read_lists(path, layout, encoding, skip_bad_rows, feedback)
        report = ReadReport(rows, skipped, dict(layout.roles), " ", has_header=False, data_format="lists")
    else:
        data, report = _read_table_log(path, layout, encoding, skip_bad_rows, feedback)
    return (data, report) if return_report else data


def _read_table_log(
    path: Path, layout: Layout, encoding: str, skip_bad_rows: bool, feedback: Feedback | None
) -> tuple[Interactions, ReadReport]:
    table, skipped = _read_table(path, layout, encoding, skip_bad_rows)
    if table.num_rows == 0:
        raise InputError(
            "no data rows (only a header?); expected rows of "
            + ",".join(layout.names),
            path=path,
        )
    roles = layout.roles
    rows = _Rows(path, layout, encoding, skip_bad_rows, np.ones(table.num_rows, dtype=bool))
    users = _ids(table, "user", rows)
    items = _ids(table, "item", rows)
    value_role: Role | None = "rating" if "rating" in roles else ("weight" if "weight" in roles else None)
    values = None if value_role is None else _values(table, value_role, rows)
    timestamps = None if "timestamp" not in roles else _timestamps(table[roles["timestamp"]], rows)
    keep = rows.keep
    if not keep.all():
        skipped += int((~keep).sum())
        if not keep.any():
            raise InputError("every row was skipped as malformed", path=path)

    user_vocab, user_index = to_vocabulary(*compact(*users, keep))
    item_vocab, item_index = to_vocabulary(*compact(*items, keep))
    if feedback is None:
        feedback = "rating" if value_role == "rating" else "count"
    vals = np.ones(len(user_index), dtype=np.float32) if values is None else values[keep].astype(np.float32)
    ts = None if timestamps is None else timestamps[keep]
    matrix, ts = build_csr(user_index, item_index, vals, ts, (len(user_vocab), len(item_vocab)), feedback)
    data = Interactions(matrix, user_vocab, item_vocab, ts, feedback, source=str(path))
    report = ReadReport(
        merged=len(user_index) - matrix.nnz,
        rows=table.num_rows,
        skipped=skipped,
        columns={str(k): v for k, v in roles.items()},
        delimiter=layout.delimiter,
        has_header=layout.header is not None,
    )
    return data, report


@dataclass
class _Rows:
    """The rows kept so far; a bad row found after parsing is an error naming its line, or
    with ``skip_bad_rows`` it is dropped."""

    path: Path
    layout: Layout
    encoding: str
    skip_bad_rows: bool
    keep: np.ndarray

    def reject(self, bad: np.ndarray, reason: str, column: str) -> None:
        if not self.skip_bad_rows:
            row = int(np.flatnonzero(bad)[0])
            if self.layout.fmt == "parquet":  # no lines: the row, counted from 1
                raise InputError(f"row {row + 1}: {reason}", path=self.path, column=column)
            line = row_to_line(self.path, self.layout, self.encoding, row)
            raise InputError(reason, path=self.path, line=line, column=column)
        self.keep &= ~bad


def _ids(table: pa.Table, role: Role, rows: _Rows) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids, one code per row) of the user or item column; empty ids are bad rows."""
    name = rows.layout.roles[role]
    column = table[name]
    if column.null_count:
        rows.reject(np.asarray(column.is_null().to_numpy(zero_copy_only=False)), f"empty {role} id", name)
    try:
        uniques, codes = strip_ids(*encode_ids(column))
    except pa.ArrowInvalid:  # binary ids (Parquet) that are not UTF-8 text
        values = column.to_pylist()
        bad = np.asarray([isinstance(v, bytes) and not _is_utf8(v) for v in values])
        rows.reject(bad, f"{role} id is not valid UTF-8 text", name)
        # --skip-bad-rows: those rows are dropped; the rest are read as text.
        text = [("" if b else v.decode()) if isinstance(v, bytes) else v for v, b in zip(values, bad)]
        uniques, codes = strip_ids(*encode_ids(pa.chunked_array([pa.array(text, pa.string())])))
    text_ids = uniques.dtype == object
    empty = np.flatnonzero(np.char.str_len(uniques.astype(str)) == 0) if text_ids and len(uniques) else []
    if len(empty):
        rows.reject(codes == empty[0], f"empty {role} id", name)
    if uniques.dtype == object and len(uniques) and isinstance(uniques[0], str):
        # A NUL byte is no part of an id (a binary file, or a broken export). Arrow, not
        # numpy: numpy's fixed-width text drops NUL bytes.
        try:
            text = pa.array(uniques, pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # ids of mixed kinds: no text to search
            text = pa.array([], pa.string())
        nul = np.flatnonzero(pc.match_substring(text, "\x00").to_numpy(zero_copy_only=False))
        if len(nul):
            rows.reject(np.isin(codes, nul), f"{role} id holds a NUL byte", name)
    return uniques, codes


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _values(table: pa.Table, role: Role, rows: _Rows) -> np.ndarray:
    """The rating or weight column as float64; values that are not finite and >= 0 are bad rows."""
    name = rows.layout.roles[role]
    column = table[name]
    if not pa.types.is_floating(column.type) and not pa.types.is_integer(column.type):
        try:
            column = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if rows.layout.fmt != "parquet":
                raise diagnose(rows.path, rows.layout, rows.encoding, f"column {name!r} is not numeric") from None
            # Text in a Parquet column: the first value that is no number, by its row.
            import pandas as pd

            text = pd.Series(column.to_pylist(), dtype=object)
            numbers = pd.to_numeric(text, errors="coerce")
            bad = (numbers.isna() & text.notna()).to_numpy()
            if bad.any():
                rows.reject(bad, f"expected a number, got {text[bad].iloc[0]!r}", name)
            column = pa.chunked_array([pa.array(numbers.to_numpy(dtype=np.float64, na_value=np.nan))])
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    # Values are stored as float32: a larger one would become infinite and poison training.
    bad = ~np.isfinite(values) | (values < 0) | (values > FLOAT32_MAX)
    if bad.any():
        v = values[np.flatnonzero(bad)[0]]
        what = "missing or NaN" if np.isnan(v) else repr(float(v))
        rows.reject(bad, f"expected a finite number >= 0 and <= {FLOAT32_MAX:.3g}, got {what}", name)
    return values


def _read_table(path: Path, layout: Layout, encoding: str, skip_bad_rows: bool) -> tuple[pa.Table, int]:
    """The columns that have a role, with pyarrow; and how many malformed rows it skipped."""
    columns = list(dict.fromkeys(layout.roles.values()))
    if layout.fmt == "parquet":
        try:
            table = pq.read_table(path, columns=columns)
        except Exception as exc:
            raise InputError(f"cannot read Parquet data ({exc})", path=path) from None
        return table, 0
    skipped = 0

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    parse_options = pacsv.ParseOptions(
        delimiter="\t" if layout.delimiter == "::" else (layout.delimiter or ","),
        # Only when skipping: pyarrow's handler call fails on rows that are not valid text.
        invalid_row_handler=on_invalid_row if skip_bad_rows else None,
    )
    try:
        table = pacsv.read_csv(
            _csv_source(path, layout), _read_options(layout, encoding), parse_options, _convert_options(layout, columns)
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, zlib.error) as exc:
        message = str(exc)
        if "Empty CSV" in message:
            raise InputError("the file is empty; expected rows of user,item[,rating][,timestamp]", path=path) from None
        if skip_bad_rows and "conversion error" in message:
            # The lenient pass re-reads every row and counts every skip itself.
            return read_lenient(path, layout, encoding)
        raise diagnose(path, layout, encoding, f"cannot parse ({message})") from None
    return table, skipped


def _csv_source(path: Path, layout: Layout) -> pa.NativeFile | str:
    if layout.delimiter == "::":
        # pyarrow takes single-character delimiters only: translate MovieLens' '::' to tabs.
        return pa.BufferReader(read_bytes(path, layout.gzip).replace(b"::", b"\t"))
    if layout.gzip:
        return pa.CompressedInputStream(pa.OSFile(str(path)), "gzip")
    return str(path)


def _read_options(layout: Layout, encoding: str) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(
        column_names=None if layout.header is not None else layout.names,
        encoding=encoding,
        block_size=1 << 24,
    )


def _convert_options(layout: Layout, columns: list[str]) -> pacsv.ConvertOptions:
    types = {layout.roles["user"]: _ID_TYPE, layout.roles["item"]: _ID_TYPE}
    for role in ("rating", "weight"):
        if role in layout.roles:
            types[layout.roles[role]] = pa.float64()
    return pacsv.ConvertOptions(include_columns=columns, column_types=types, strings_can_be_null=False)


def _timestamps(column: pa.ChunkedArray, rows: _Rows) -> np.ndarray:
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
        # A column of ISO dates with bad entries: the first by its line (with --skip-bad-rows,
        # every bad row skipped and the dates of the rest kept).
        import pandas as pd

        text = pd.Series(column.to_pylist(), dtype=object)
        numbers = pd.to_numeric(text, errors="coerce")
        dates = pd.to_datetime(text.where(numbers.isna()), errors="coerce", utc=True, format="ISO8601")
        bad = (numbers.isna() & dates.isna()).to_numpy()
        if bad.any():
            rows.reject(bad, "expected a timestamp (seconds since 1970 or an ISO date), got "
                        f"{text[bad].iloc[0]!r}", rows.layout.roles["timestamp"])
        seconds = numbers.fillna((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1))
        return seconds.fillna(0).to_numpy(dtype=np.float64).astype(np.int64)
    return pc.cast(parsed, pa.int64()).to_numpy(zero_copy_only=False)


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
