"""The one reader of delimited text: interaction logs, feature tables and item tables all
open, decode and split their files here.

Gzip is recognized by its magic bytes, not by the file's name; a byte-order mark is not
part of the first field; a byte the encoding cannot decode is reported with its file and
line, and the advice to pass the file's encoding.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

from recsys.errors import InputError

# The candidate column separators, in the order a log is sniffed: '::' before anything
# else, tab before the ',' and ';' that a tab-separated field may hold, space last.
DELIMITERS = ("::", "\t", ",", ";", "|", " ")
BOM = "\ufeff"
SNIFF_BYTES = 1 << 16  # how much of a file the sniffers look at
_GZIP_MAGIC = b"\x1f\x8b"


def check_file(path: Path, expected: str) -> None:
    """Fail early, and plainly, on a path that is missing or a directory."""
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.is_dir():
        raise InputError(f"is a directory; expected {expected}", path=path)
    if not path.is_file():
        # A pipe (--data <(...)) or a device: the reader reads its input twice (to detect
        # the format, then to load it), which a stream cannot give.
        raise InputError(f"is not a regular file (a pipe or a device); expected {expected}: write it to a file "
                         "first", path=path)


def magic(path: Path) -> bytes:
    """The file's first four bytes: Parquet starts with ``PAR1``, gzip with ``1f 8b``."""
    with open(path, "rb") as fh:
        return fh.read(4)


def is_gzip(magic: bytes) -> bool:
    return magic[:2] == _GZIP_MAGIC


def open_bytes(path: Path, gzipped: bool) -> BinaryIO:
    """The file's bytes as a stream, decompressed when ``gzipped``."""
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def read_bytes(path: Path, gzipped: bool, size: int = -1) -> bytes:
    """The file's bytes (the first ``size`` of them), decompressed when ``gzipped``."""
    with open_bytes(path, gzipped) as fh:
        try:
            return fh.read(size)
        except (EOFError, OSError, zlib.error) as exc:  # what gzip raises for damaged data
            raise InputError(f"damaged or truncated gzip data ({exc})", path=path) from None


def read_text(path: Path, encoding: str, expected: str) -> str:
    """A whole text file (gzip or not) decoded, without its byte-order mark."""
    check_file(path, expected)
    return decode(read_bytes(path, is_gzip(magic(path))), encoding, path)


def decode(raw: bytes, encoding: str, path: Path, errors: str = "strict") -> str:
    """``raw`` as text without a byte-order mark; an undecodable byte is named with its line."""
    try:
        text = raw.decode(encoding, errors)
    except LookupError:
        raise InputError(f"unknown text encoding {encoding!r}", path=path) from None
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        end = raw.find(b"\n", exc.start)
        line = raw[start:] if end < 0 else raw[start : end + 1]
        raise _undecodable(path, encoding, raw.count(b"\n", 0, exc.start) + 1, line, exc.start - start) from None
    return text.lstrip(BOM)


def undecodable(path: Path, gzipped: bool, encoding: str) -> InputError:
    """The error for a file that a streaming decoder rejected, found by decoding line by
    line (the decoder's offset counts from its block, not from the file)."""
    with open_bytes(path, gzipped) as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as exc:
                return _undecodable(path, encoding, line_no, line, exc.start)
    return InputError(f"text is not valid {encoding}; pass --encoding", path=path)


def _undecodable(path: Path, encoding: str, line_no: int, line: bytes, offset: int) -> InputError:
    return InputError(
        f"text is not valid {encoding} (byte {line[offset:offset + 1]!r} near {line[:60]!r}); "
        "pass --encoding latin-1 (or the file's encoding)",
        path=path,
        line=line_no,
    )


def split_line(line: str, delim: str) -> list[str]:
    """One line's fields, split as the parsers will split it."""
    if delim == "::":
        return line.split("::")
    # Every single-character separator, the space included, is split as pyarrow will parse
    # it (quotes honoured, runs of separators not merged): detection must not find columns
    # that the parser then does not see (a tab file once sniffed as space-separated because
    # str.split() also splits on tabs).
    return next(csv.reader([line], delimiter=delim))


def detect_delimiter(lines: list[str], path: Path) -> str:
    """The separator of a log from its first lines: the first that splits every line into
    the same number (two or more) of fields."""
    for delim in DELIMITERS:
        counts = {len(split_line(ln, delim)) for ln in lines}
        if len(counts) == 1 and counts.pop() >= 2:
            return delim
    # No delimiter gives a consistent count: pick the one most lines agree on, so the
    # error later names the ragged line rather than the whole file.
    best, best_rows = None, 0
    for delim in DELIMITERS:
        n = split_line(lines[0], delim)
        agree = sum(len(split_line(ln, delim)) == len(n) for ln in lines) if len(n) >= 2 else 0
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


def header_delimiter(header: str) -> str:
    """The column separator of a table with a header: the one the header line holds most of
    (a comma on a tie: the common case)."""
    candidates = [d for d in DELIMITERS if len(d) == 1 and d != " "]
    return max(candidates, key=lambda d: (header.count(d), d == ","))


def is_number(token: str, *, finite: bool = False) -> bool:
    """Whether ``token`` reads as a number (``nan`` and ``inf`` too, unless ``finite``)."""
    try:
        value = float(token)
    except ValueError:
        return False
    return math.isfinite(value) or not finite
