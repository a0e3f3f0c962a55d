"""The slow exact pass over a delimited log, with Python's ``csv`` module: it runs only
when the fast pyarrow reader has failed (or found a bad value), to name the first bad row's
line and column, or, with ``skip_bad_rows``, to keep every good row.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.sniff import Layout, Role, lists_hint
from recsys.data.text import BOM, is_number, open_bytes, split_line, undecodable
from recsys.errors import InputError

# The largest value an entry may hold: interaction values are stored as float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def iter_rows(path: Path, layout: Layout, encoding: str) -> Iterator[tuple[int, int, list[str]]]:
    """Yield (physical line, data-row index, fields), skipping the header and blank lines."""
    raw = open_bytes(path, layout.gzip)
    text = io.TextIOWrapper(raw, encoding=encoding, newline="")
    try:
        if layout.delimiter == "::":
            pending = 0
            for line_no, line in enumerate(text, start=1):
                if line_no == 1 and layout.header is not None:
                    continue
                if not line.strip():
                    continue
                yield line_no, pending, split_line(line.rstrip("\r\n"), layout.delimiter or ",")
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


def row_to_line(path: Path, layout: Layout, encoding: str, row: int) -> int:
    """Physical line number (1-based) of data row ``row`` (0-based), for messages."""
    for line_no, index, _fields in iter_rows(path, layout, encoding):
        if index == row:
            return line_no
    return -1


def diagnose(path: Path, layout: Layout, encoding: str, fallback: str) -> InputError:
    """Find the first bad row with a slow exact pass; ``fallback`` if none is found."""
    positions = {role: layout.names.index(col) for role, col in layout.roles.items()}
    try:
        for line_no, _index, fields in iter_rows(path, layout, encoding):
            fields[0] = fields[0].lstrip(BOM)
            problem = _row_problem(fields, layout, positions)
            if problem is not None:
                reason, role = problem
                column = None if role is None else layout.roles[role]
                return InputError(reason, path=path, line=line_no, column=column)
    except UnicodeDecodeError:
        return undecodable(path, layout.gzip, encoding)
    except (EOFError, OSError, zlib.error) as exc:
        return InputError(f"damaged or truncated gzip data ({exc})", path=path)
    except csv.Error as exc:
        return InputError(f"malformed CSV ({exc})", path=path)
    return InputError(fallback, path=path)


def _row_problem(fields: list[str], layout: Layout, positions: dict[Role, int]) -> tuple[str, Role | None] | None:
    """What is wrong with one row, and in which role's column (None: the row as a whole)."""
    if len(fields) != len(layout.names):
        return (
            f"expected {len(layout.names)} fields ({', '.join(layout.names)}), found "
            f"{len(fields)}" + (lists_hint(fields) if layout.delimiter == " " else ""),
            None,
        )
    for role in ("user", "item"):
        if not fields[positions[role]].strip():
            return f"empty {role} id", role
    for role in ("rating", "weight"):
        if role in positions:
            problem = value_problem(fields[positions[role]])
            if problem:
                return problem, role
    if "timestamp" in positions:
        token = fields[positions["timestamp"]].strip()
        if not is_number(token):
            try:
                np.datetime64(token)
            except ValueError:
                return f"expected a timestamp (seconds since 1970 or an ISO date), got {token!r}", "timestamp"
    return None


def value_problem(token: str) -> str | None:
    """Why a rating or weight is not a finite number >= 0, or None if it is one."""
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
    if value > FLOAT32_MAX:
        return f"expected a value <= {FLOAT32_MAX:.3g} (values are stored as float32), got {token!r}"
    return None


def read_lenient(path: Path, layout: Layout, encoding: str) -> tuple[pa.Table, int]:
    """Every good row as text columns (ratings and weights as float64), and how many bad
    rows were skipped: the fallback for ``skip_bad_rows`` when values themselves are
    malformed, which pyarrow's row handler cannot skip."""
    columns: dict[str, list[str]] = {name: [] for name in layout.names}
    skipped = 0
    positions = {role: layout.names.index(col) for role, col in layout.roles.items()}
    for _line, _index, fields in iter_rows(path, layout, encoding):
        bad = len(fields) != len(layout.names) or any(
            value_problem(fields[positions[r]]) for r in ("rating", "weight") if r in positions
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
