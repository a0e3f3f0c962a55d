"""Shared pieces of the commands: error handling, data-reading options, output."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from recsys.errors import RecsysError

F = TypeVar("F", bound=Callable[..., Any])


class State:
    debug = False


def command(fn: F) -> F:
    """Run a command so that errors a user can act on print one line and exit with status 2.

    Unexpected errors (bugs) print one line and exit 1; ``--debug`` shows tracebacks.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except RecsysError as exc:
            if State.debug:
                traceback.print_exc()
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except Exception as exc:
            if State.debug:
                traceback.print_exc()
            print(
                f"error: unexpected {type(exc).__name__}: {exc} "
                "(a bug in recsys; run with --debug for the traceback and please report it)",
                file=sys.stderr,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


# -- options shared by commands that read interaction files ---------------------------------
_COLS = "Input columns"
UserCol = Annotated[str | None, typer.Option("--user-col", help="User id column (default: detected).", rich_help_panel=_COLS)]
ItemCol = Annotated[str | None, typer.Option("--item-col", help="Item id column (default: detected).", rich_help_panel=_COLS)]
RatingCol = Annotated[str | None, typer.Option("--rating-col", help="Explicit rating column.", rich_help_panel=_COLS)]
WeightCol = Annotated[str | None, typer.Option("--weight-col", help="Implicit weight/count column.", rich_help_panel=_COLS)]
TimestampCol = Annotated[str | None, typer.Option("--timestamp-col", help="Timestamp column.", rich_help_panel=_COLS)]
Sep = Annotated[str | None, typer.Option("--sep", help="Field separator (default: detected; '\\t' for tab).", rich_help_panel=_COLS)]
Header = Annotated[bool | None, typer.Option("--header/--no-header", help="Whether the file has a header row (default: detected).", rich_help_panel=_COLS, show_default=False)]
FeedbackOpt = Annotated[
    Literal["rating", "count"] | None,
    typer.Option("--feedback", help="Treat values as explicit ratings or implicit counts (default: from the column name).", rich_help_panel=_COLS),
]
Encoding = Annotated[str, typer.Option("--encoding", help="Text encoding of the file.", rich_help_panel=_COLS)]
SkipBadRows = Annotated[
    bool,
    typer.Option("--skip-bad-rows", help="Skip malformed rows (and report how many) instead of stopping at the first.", rich_help_panel=_COLS),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes; results only.")]
Format = Annotated[Literal["table", "json"], typer.Option("--format", help="Output: a table for people, JSON for scripts.")]
Ks = Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated, e.g. 10,20,50.")]


def read_options(
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    header: bool | None = None,
    feedback: str | None = None,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
) -> Any:
    from recsys.workflows import ReadOptions

    if sep == "\\t":
        sep = "\t"
    return ReadOptions(user_col, item_col, rating_col, weight_col, timestamp_col, sep, header, feedback, encoding, skip_bad_rows)


def parse_ks(text: str) -> tuple[int, ...]:
    from recsys.errors import ConfigError

    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--k takes comma-separated positive integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k takes comma-separated positive integers, got {text!r}")
    return ks


def note(message: str, quiet: bool) -> None:
    """An informational line on stderr (silenced by --quiet), keeping stdout for results."""
    if not quiet:
        print(message, file=sys.stderr)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_default))


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def metrics_table(evaluation: Any) -> str:
    table = evaluation.table()
    text = table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="")
    extra = {k: v for k, v in evaluation.metrics.items() if "@" not in k}
    for name, value in extra.items():
        text += f"\n{name:<10} {value:.4f}"
    return text
