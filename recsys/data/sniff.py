"""What kind of interaction file this is, from its first bytes and lines: Parquet, a
delimited table or adjacency lists; the separator, the header, and which column holds the
user, the item, the rating or weight and the timestamp.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from recsys.data.text import (
    BOM,
    SNIFF_BYTES,
    decode,
    detect_delimiter,
    is_gzip,
    is_number,
    magic,
    read_bytes,
    split_line,
)
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
# Adjacency lists: integer tokens, one space apart, blanks trimmed from both ends of a line
# (CRLF files, a trailing space).
LIST_TOKEN = r"-?[0-9]+"
LIST_BLANKS = " \t\r"
_LISTS_HINT = " (adjacency lists, user item item ...? pass --data-format lists)"


@dataclass(frozen=True)
class Layout:
    """How to read an interaction file, as sniffed (or as the options said)."""

    fmt: Literal["csv", "parquet", "lists"]
    gzip: bool
    delimiter: str | None
    header: list[str] | None  # the file's own header, if it has one
    names: list[str]  # the names used for every column
    roles: dict[Role, str]  # role -> column name


def check_data_format(
    data_format: str, sep: str | None, header: bool | None, explicit: dict[Role, str | None]
) -> None:
    if data_format not in ("auto", "table", "lists"):
        raise ConfigError(f"data format must be auto, table or lists, not {data_format!r}")
    if sep is not None and (not isinstance(sep, str) or (len(sep) != 1 and sep not in ("::", "\\t"))):
        raise ConfigError(f"--sep takes one character (or '::' for MovieLens .dat files), got {sep!r}")
    if data_format == "lists" and _table_options(sep, header, explicit):
        raise ConfigError(
            "--data-format lists reads space-separated lines user item item ... without a header; "
            "it takes no --sep, --header or column options"
        )


def _table_options(sep: str | None, header: bool | None, explicit: dict[Role, str | None]) -> bool:
    """Whether options that only a table has (a separator, a header, named columns) are given."""
    return bool(sep not in (None, " ") or header or any(explicit.values()))


def sniff_layout(
    path: Path,
    *,
    sep: str | None,
    header: bool | None,
    encoding: str,
    explicit: dict[Role, str | None],
    data_format: DataFormat = "auto",
) -> Layout:
    """The layout of the interaction file at ``path``, from its first 64 KiB."""
    head = magic(path)
    if head == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
        return _parquet_layout(path, explicit, data_format)
    gzipped = is_gzip(head)
    lines = _sniff_lines(read_bytes(path, gzipped, SNIFF_BYTES), encoding, path)
    return layout_of_lines(lines, path, gzipped=gzipped, sep=sep, header=header, explicit=explicit,
                           data_format=data_format)


def layout_of_lines(
    lines: list[str],
    path: Path | str,
    *,
    gzipped: bool,
    sep: str | None,
    header: bool | None,
    explicit: dict[Role, str | None],
    data_format: DataFormat = "auto",
) -> Layout:
    """The layout of a text log from its first non-blank lines (decoded; ``path`` names it in
    messages): the one rule for files read here and logs read by Spark."""
    # Options that only a table has keep it a table.
    if data_format == "lists" or (
        data_format == "auto" and not _table_options(sep, header, explicit) and looks_like_lists(lines)
    ):
        return Layout("lists", gzipped, " ", None, ["user", "item"], {"user": "user", "item": "item"})
    delim = sep if sep is not None else detect_delimiter(lines, path)
    if sep is not None and delim == "\\t":
        delim = "\t"
    return _table_layout(path, lines, gzipped, delim, header, explicit)


def _parquet_layout(path: Path, explicit: dict[Role, str | None], data_format: DataFormat) -> Layout:
    if data_format == "lists":
        raise InputError("is Parquet, a table; --data-format lists reads text lines user item item ...", path=path)
    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise InputError(f"not a readable Parquet file ({exc})", path=path) from None
    return Layout("parquet", False, None, names, names, match_roles(names, explicit, path))


def _table_layout(
    path: Path, lines: list[str], gzipped: bool, delim: str, header: bool | None, explicit: dict[Role, str | None]
) -> Layout:
    first = split_line(lines[0], delim)
    second = split_line(lines[1], delim) if len(lines) > 1 else None
    if len(first) < 2:
        raise InputError(
            f"line 1 has one column ({lines[0][:80]!r}) when split on {delim!r}; expected at "
            "least two columns (user, item): is the separator right?",
            path=path,
            line=1,
        )
    has_header = _detect_header(first, second) if header is None else header
    if has_header:
        names = [t.strip().lstrip(BOM) for t in first]
        if len(set(names)) != len(names):
            raise InputError(f"the header repeats a column name: {first}", path=path, line=1)
        return Layout("csv", gzipped, delim, names, names, match_roles(names, explicit, path))
    if len(first) not in _POSITIONAL:
        raise InputError(
            f"no header and {len(first)} columns; expected 2 to 4 columns in the order "
            "user, item[, rating][, timestamp] or a header naming them"
            + (lists_hint(first) if delim == " " else ""),
            path=path,
            line=1,
        )
    positional = list(_POSITIONAL[len(first)])
    names = [str(r) for r in positional]
    roles: dict[Role, str] = {r: r for r in positional}  # type: ignore[misc]
    return Layout("csv", gzipped, delim, None, names, roles)


def _sniff_lines(head: bytes, encoding: str, path: Path) -> list[str]:
    # Decoded leniently: this only guesses the layout; the reader names a bad byte's line.
    lines = decode(head, encoding, path, errors="replace").splitlines()
    if len(head) >= SNIFF_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut off by the sniff window
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise InputError("the file is empty; expected a header or rows of user,item[,rating][,timestamp]", path=path)
    return lines[:50]


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().strip('"').lstrip(BOM)).lower()


def _detect_header(first: list[str], second: list[str] | None) -> bool:
    known = {a for aliases in COLUMN_ALIASES.values() for a in aliases}
    if any(_norm(tok) in known for tok in first):
        return True
    if second is None:
        return not any(is_number(t) for t in first[2:]) and len(first) > 2
    # A header row has text where the data rows have numbers.
    return any(
        not is_number(a) and is_number(b) for a, b in zip(first[2:], second[2:])
    )


def match_roles(
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


def looks_like_lists(lines: list[str]) -> bool:
    """Whether the sniffed lines are adjacency lists rather than a headerless table.

    Every token an integer and line lengths that vary (or exceed the 4 columns of a
    headerless table). A file whose lines are nearly all 3 or 4 fields wide stays a table:
    a ``u.data``-style log with a malformed row must fail on that row, not be reread as
    lists with ratings and timestamps taken for items. A few bad lines are tolerated so
    that the reader, not the sniffer, names them.
    """
    widths: list[int] = []
    bad = 0
    for line in lines:
        tokens = line.strip(LIST_BLANKS).split(" ")
        if all(re.fullmatch(LIST_TOKEN, t) for t in tokens):
            widths.append(len(tokens))
        elif not widths:
            return False  # line 1 is a header or text
        else:
            bad += 1
    if not widths or bad > max(1, len(lines) // 10):
        return False
    modal, n = Counter(widths).most_common(1)[0]
    if modal in (3, 4) and len(widths) - n <= max(1, len(widths) // 10):
        return False
    return len(set(widths)) > 1 or modal > 4


def lists_hint(fields: list[str]) -> str:
    """A pointer to ``--data-format lists`` for a space-separated row of integers."""
    return _LISTS_HINT if all(re.fullmatch(LIST_TOKEN, f.strip()) for f in fields) else ""
