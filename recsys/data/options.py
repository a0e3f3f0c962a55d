"""How to read an interaction file: the options every reader and command passes along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recsys.data.sniff import DataFormat


@dataclass
class ReadOptions:
    """How to read an interaction file (see :func:`read_interactions`): what the jobs and
    the command line pass along. In a module of its own, so that a command can build it
    without loading pandas, pyarrow or torch first."""

    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    weight_col: str | None = None
    timestamp_col: str | None = None
    sep: str | None = None
    header: bool | None = None
    feedback: str | None = None
    encoding: str = "utf-8"
    skip_bad_rows: bool = False
    data_format: DataFormat = "auto"
