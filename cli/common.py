"""Shared pieces of the commands: error handling, data-reading options, output."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import os
import signal
import sys
import threading
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from recsys.errors import RecsysError

F = TypeVar("F", bound=Callable[..., Any])


class State:
    debug = False


_USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
                   errno.EISDIR, errno.ENOTDIR}


def command(fn: F) -> F:
    """Run a command so that errors a user can act on print one line and exit with status 2.

    Unexpected errors (bugs) print one line and exit 1; ``--debug`` shows tracebacks.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _show_library_warnings()
        try:
            with _terminate_as_interrupt():
                result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return result
        except typer.Exit:
            raise
        except BrokenPipeError:
            # The reader went away (``recsys ... | head``): stop quietly, like the shell's
            # tools. Point stdout at /dev/null so the interpreter's final flush stays silent.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except RecsysError as exc:
            if State.debug:
                traceback.print_exc()
            print(f"error: {exc}", file=sys.stderr)
            # A run stopped by a signal after saving a checkpoint (TrainingInterrupted)
            # exits like the shell would: 128 + the signal number.
            signum = getattr(exc, "signum", None)
            raise typer.Exit(2 if signum is None else 128 + signum) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            print("terminated" if signum == signal.SIGTERM else "interrupted", file=sys.stderr)
            raise typer.Exit(128 + signum) from None
        except Exception as exc:
            if State.debug:
                traceback.print_exc()
            if isinstance(exc, OSError) and exc.errno in _USER_OS_ERRORS:
                # The machine's conditions (permissions, a full or read-only disk): the user's
                # to fix, not a bug. Writes are atomic, so nothing half-written is left.
                where = f"{exc.filename}: " if exc.filename else ""
                print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
                raise typer.Exit(2) from None
            print(
                f"error: unexpected {type(exc).__name__}: {exc} "
                "(a bug in recsys; run with --debug for the traceback and please report it)",
                file=sys.stderr,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the command cleans up (temporary files, locks,
    its MLflow run marked KILLED) instead of dying where it stands."""

    signum = signal.SIGTERM


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def _terminate_as_interrupt() -> Any:
    """While a command runs, SIGTERM raises :class:`Terminated` (unless it is ignored or
    already handled). Training's own handler (a checkpoint first) takes over during epochs."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _StderrNotes(logging.Handler):
    """Prints the library's warnings (e.g. rows skipped by --skip-bad-rows) on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"warning: {record.getMessage()}", file=sys.stderr)  # the current stderr, always


def _show_library_warnings() -> None:
    logger = logging.getLogger("recsys")
    if not any(isinstance(h, _StderrNotes) for h in logger.handlers):
        logger.addHandler(_StderrNotes(logging.WARNING))
        logger.propagate = False


# -- options shared by commands that read interaction files ---------------------------------
_COLS = "Input columns"
_READ_PARAMS: list[tuple[str, Any, Any]] = [
    ("user_col", str | None, typer.Option("--user-col", help="User id column (default: detected).", rich_help_panel=_COLS)),
    ("item_col", str | None, typer.Option("--item-col", help="Item id column (default: detected).", rich_help_panel=_COLS)),
    ("rating_col", str | None, typer.Option("--rating-col", help="Explicit rating column.", rich_help_panel=_COLS)),
    ("weight_col", str | None, typer.Option("--weight-col", help="Implicit weight/count column.", rich_help_panel=_COLS)),
    ("timestamp_col", str | None, typer.Option("--timestamp-col", help="Timestamp column.", rich_help_panel=_COLS)),
    ("sep", str | None, typer.Option("--sep", help="Field separator (default: detected; '\\t' for tab).", rich_help_panel=_COLS)),
    ("header", bool | None, typer.Option("--header/--no-header", metavar="", help="Whether the file has a header row (default: detected).", rich_help_panel=_COLS, show_default=False)),
    ("feedback", Literal["rating", "count"] | None, typer.Option("--feedback", help="Treat values as explicit ratings or implicit counts (default: from the column name).", rich_help_panel=_COLS)),
    ("encoding", str, typer.Option("--encoding", help="Text encoding of the files.", rich_help_panel=_COLS)),
    ("skip_bad_rows", bool, typer.Option("--skip-bad-rows", metavar="", help="Skip malformed rows (and report how many) instead of stopping at the first.", rich_help_panel=_COLS)),
    # Not --format: that flag is the output format (table/json) on every command.
    ("data_format", Literal["auto", "table", "lists"], typer.Option("--data-format", help="auto (detected), table (one row per interaction), or lists (one line per user: user item item ...).", rich_help_panel=_COLS)),
]
_READ_DEFAULTS: dict[str, Any] = {"encoding": "utf-8", "skip_bad_rows": False, "data_format": "auto"}


def with_read_options(fn: F) -> F:
    """Add the input-column options to a command; it receives them as ``read_options``.

    One definition of the reader flags serves every command that reads a log.
    """
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)  # resolve string annotations
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in sig.parameters.values()
        if p.name != "read_options"
    ]
    for name, annotation, option in _READ_PARAMS:
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY,
                default=_READ_DEFAULTS.get(name), annotation=Annotated[annotation, option],
            )
        )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from recsys.data.options import ReadOptions

        values = {name: kwargs.pop(name, _READ_DEFAULTS.get(name)) for name, _, _ in _READ_PARAMS}
        if values["sep"] == "\\t":
            values["sep"] = "\t"
        return fn(*args, read_options=ReadOptions(**values), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


_FILTERS = "Filters (before the split)"
MinRating = Annotated[float | None, typer.Option("--min-rating", rich_help_panel=_FILTERS, help="Drop entries rated below this (ratings only).")]
MinUserCount = Annotated[int | None, typer.Option("--min-user-count", rich_help_panel=_FILTERS, help="Keep users with at least this many entries (with --min-item-count: the k-core).")]
MinItemCount = Annotated[int | None, typer.Option("--min-item-count", rich_help_panel=_FILTERS, help="Keep items with at least this many entries.")]

# Flags pass metavar="": Typer 0.29 prints "<bool>" after them in --help, as if they took a value.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress bars or notes; results only.")]
Format = Annotated[Literal["table", "json"], typer.Option("--format", help="Output: a table for people, JSON for scripts.")]
Ks = Annotated[str | None, typer.Option("--k", help="Cut-offs, comma-separated, e.g. 10,20,50 (default: a --config file's k, else 10,20,50).")]
_FEATURES = "Side information (two-tower)"
UserFeatures = Annotated[list[Path] | None, typer.Option("--user-features", help="User feature table(s), one row per user id (repeatable; joined on id). u.user is read as MovieLens.", rich_help_panel=_FEATURES)]
ItemFeatures = Annotated[list[Path] | None, typer.Option("--item-features", help="Item feature table(s) (repeatable): CSV/TSV with a header, or MovieLens u.item, movies.csv, tags.csv.", rich_help_panel=_FEATURES)]
UserFeaturesSpec = Annotated[str | None, typer.Option("--user-features-spec", help="Column types: 'age=numeric,country=categorical,id=user_id' or a TOML file.", rich_help_panel=_FEATURES)]
ItemFeaturesSpec = Annotated[str | None, typer.Option("--item-features-spec", help="Column types, e.g. 'genres=multi:|,year=numeric,title=skip', or a TOML file.", rich_help_panel=_FEATURES)]


_ENGINE = "Engine"
Engine = Annotated[Literal["local", "spark"], typer.Option("--engine", help="local (this process) or spark (Spark MLlib's ALS / top-k on Spark's executors; pip install 'recsys[spark]').", rich_help_panel=_ENGINE)]
SparkMaster = Annotated[str | None, typer.Option("--spark-master", help="Spark master URL: local[*] (the default), local[N], spark://HOST:7077, yarn, k8s://...", rich_help_panel=_ENGINE)]
SparkConf = Annotated[list[str] | None, typer.Option("--spark-conf", help="A Spark setting KEY=VALUE (repeatable), e.g. spark.executor.memory=8g.", rich_help_panel=_ENGINE)]


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
