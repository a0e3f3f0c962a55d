"""Recommendations for many users at once, written to a file as they are computed.

:func:`recommend_to_file` is the engine of the ``recsys recommend`` job
(:func:`recsys.jobs.recommend`, which reads the files and reports to a run): resolve the
users (known to the model, folded in from a history, or unknown; :mod:`recsys.models.queries`),
retrieve top-k in chunks (exact or Annoy), and stream ``user, item, rank, score, fallback`` rows to Parquet or CSV through a
temporary file that is renamed into place only when complete.

Unknown users (neither in the model nor in the history) get the most popular training
items; their rows have ``fallback = true`` and a NaN score, and they are counted in the
result, so a fallback is never mistaken for a personal recommendation.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from recsys.artifacts import OutputKind, atomic_file, table_with_columns
from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError
from recsys.models.queries import answer, plan_users
from recsys.progress import progress_bar

if TYPE_CHECKING:
    from recsys.models.base import Recommender

RetrievalName = Literal["exact", "annoy", "auto"]
COLUMNS = ("user", "item", "rank", "score", "fallback")
RECOMMENDATIONS = OutputKind("recommendations table", recognise=table_with_columns(COLUMNS))


def open_retrieval(
    model: Recommender,
    retrieval: RetrievalName = "exact",
    model_dir: str | os.PathLike | None = None,
    *,
    search_k: int | None = None,
    n_jobs: int | None = -1,
    device: str = "auto",
) -> Any:
    """The retrieval a job asked for: :class:`ExactRetrieval` or the saved :class:`AnnoyIndex`
    (``"auto"``: the index when ``model_dir`` has one, else exact).

    Both answer ``search(user_vectors, k, exclude)`` and ``similar(item_index, k)``.
    """
    from recsys.retrieval.annoy_index import INDEX_DIR, META_FILE, AnnoyIndex
    from recsys.retrieval.exact import ExactRetrieval

    if retrieval == "auto":
        saved = model_dir is not None and (Path(model_dir) / INDEX_DIR / META_FILE).is_file()
        retrieval = "annoy" if saved else "exact"

    if retrieval == "exact":
        return ExactRetrieval(model, device)
    if retrieval == "annoy":
        if model_dir is None:
            raise ConfigError("Annoy retrieval reads the index saved in the model directory; give the directory")
        return AnnoyIndex.load(model, model_dir, search_k=search_k, n_jobs=n_jobs)
    raise ConfigError(f"unknown retrieval {retrieval!r}; use exact or annoy")


# -- the batch job -----------------------------------------------------------------------------
@dataclass
class RecommendResult:
    """What :func:`recommend_to_file` wrote."""

    path: Path
    k: int
    retrieval: str
    users: int
    rows: int
    known_users: int
    folded_users: int
    fallback_users: int
    dropped_history_entries: int
    seconds: float
    run_id: str | None = None  # the run that recorded the job, when one did

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def similar_table(model: Recommender, items: Any, k: int, index: Any = None,
                  item_titles: np.ndarray | None = None) -> tuple[list[dict[str, Any]], list[Any]]:
    """``recsys similar``: rows (item, rank, similar, similarity) for the known ``items``,
    every id as the model's own (an integer id given as text comes back as an integer), and
    the unknown ones. None known: an error naming them. ``item_titles`` (one per model
    item) adds ``title`` and ``similar_title``."""
    queries = np.asarray(list(items), dtype=object)
    rows_of = model.items.index(queries)
    unknown = [q for q, row in zip(queries.tolist(), rows_of) if row < 0]
    if len(unknown) == len(queries):
        raise ConfigError(f"none of the items is in the model: {', '.join(map(str, unknown))}")
    ids, sims = model.similar_items(queries, k, index=index)
    own = model.items.ids

    def plain(value: Any) -> Any:  # numpy scalars as Python's, for JSON
        return value.item() if isinstance(value, np.generic) else value

    rows = [
        {"item": plain(own[row]), "rank": r + 1, "similar": plain(ids[i, r]), "similarity": float(sims[i, r])}
        for i, row in enumerate(rows_of) if row >= 0
        for r in range(k) if not np.isnan(sims[i, r])
    ]
    if item_titles is not None:
        found = model.items.index(np.asarray([row["similar"] for row in rows], dtype=object))
        queried = model.items.index(np.asarray([row["item"] for row in rows], dtype=object))
        for row, q, s in zip(rows, queried, found):
            row["title"], row["similar_title"] = item_titles[q], item_titles[s]
    return rows, unknown


def _typed_ids(ids: np.ndarray) -> np.ndarray:
    """Requested ids as the output column: int64 when all are integers, else text."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if len(ids) and all(isinstance(x, (int, np.integer)) for x in ids):
        return ids.astype(np.int64)
    return Vocabulary.from_strings(ids.astype(str).astype(object)).ids


def unique_in_order(ids: Any) -> np.ndarray:
    """Drop repeated ids, keeping the first occurrence of each."""
    arr = np.asarray(ids)
    return arr if arr.size == 0 else np.asarray(pd.unique(pd.Series(arr, dtype=arr.dtype)))


def chunk_table(
    user_ids: np.ndarray, items: Any, idx: np.ndarray, scores: np.ndarray, fallback: np.ndarray,
    titles: Any = None,
) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    n, k = idx.shape
    valid = (idx >= 0).ravel()
    rows = np.repeat(np.arange(n), k)[valid]
    user = user_ids[rows]
    taken = pa.array(idx.ravel()[valid])
    columns = {
        "user": pa.array(user, pa.int64()) if user.dtype == np.int64 else pa.array(user, pa.string()),
        "item": pc.take(items, taken),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)[valid]),
        "score": pa.array(scores.ravel()[valid].astype(np.float32)),
        "fallback": pa.array(np.repeat(fallback, k)[valid]),
    }
    if titles is not None:
        columns["title"] = pc.take(titles, taken)
    return pa.table(columns)


class _Writer:
    """Parquet or CSV, one chunk at a time."""

    def __init__(self, sink: Any, fmt: str, schema: Any, csv_options: Any) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        sink = str(sink) if isinstance(sink, Path) else sink  # a path, or a binary stream (stdout)
        if fmt == "parquet":
            self._writer = pq.ParquetWriter(sink, schema)
        else:
            self._writer = pacsv.CSVWriter(sink, schema, write_options=csv_options)

    def write(self, table: Any) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def read_user_ids(path: str | os.PathLike) -> np.ndarray:
    """User ids from a file: one per line (a ``user`` header is skipped), or the ``user``
    (else first) column of a Parquet or CSV file with a header."""
    from recsys.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
        column = "user" if "user" in frame.columns else frame.columns[0]
        return frame[column].to_numpy()
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc})", path=path) from None
    lines = [line for line in lines if line]
    if not lines:
        return np.asarray([], dtype=object)
    sep = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else None)
    header = [h.strip().lower() for h in (lines[0].split(sep) if sep else [lines[0]])]
    col = 0
    if any(h in ("user", "user_id", "userid") for h in header):
        col = next(i for i, h in enumerate(header) if h in ("user", "user_id", "userid"))
        lines = lines[1:]
    return np.asarray([line.split(sep)[col].strip() if sep else line for line in lines], dtype=object)


def parse_users(text: str | None) -> Any:
    """``all``, a file of ids, or comma-separated ids (the CLI's ``--users``)."""
    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    if os.path.isfile(text):
        return read_user_ids(text)
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise ConfigError("--users takes 'all', a file of ids, or comma-separated ids")
    return np.asarray(ids, dtype=object)


STDOUT = "-"


def output_format(path: str | os.PathLike) -> str:
    if os.fspath(path) == STDOUT:
        return "csv"
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ConfigError(f"{path}: the output must end in .parquet or .csv")


@dataclass
class BatchUsers:
    """Whom a batch job answers and the columns of its output: the ``plan``
    (:func:`recsys.models.queries.plan_users`), the ``user`` column's values, the model's
    item ids as an Arrow array and the output's Arrow ``schema``."""

    plan: Any
    user_ids: np.ndarray
    items: Any
    schema: Any


def plan_batch(model: Recommender, users: Any, history: Interactions | None = None, *,
                with_titles: bool = False) -> BatchUsers:
    """The users of a batch job (``"all"``, None or ids; repeats dropped) and its output's
    columns, for the local writer and Spark's alike."""
    import pyarrow as pa

    given = users is not None and not (isinstance(users, str) and users == "all")
    if given:
        users = unique_in_order(users)
    plan = plan_users(model, users, history)
    # Ids typed by the caller (text from a command line) become integers when they all are;
    # the model's own ids keep their type.
    user_ids = _typed_ids(plan.ids) if given else plan.ids
    # One vectorized conversion (not a Python loop over every user).
    user_ids = user_ids.astype(np.int64) if user_ids.dtype.kind in "iu" else user_ids.astype(str).astype(object)
    items = pa.array(model.items.ids, pa.int64() if model.items.is_integer else pa.string())
    schema = pa.schema([
        ("user", pa.int64() if user_ids.dtype == np.int64 else pa.string()),
        ("item", items.type),
        ("rank", pa.int32()),
        ("score", pa.float32()),
        ("fallback", pa.bool_()),
        *([("title", pa.string())] if with_titles else []),
    ])
    return BatchUsers(plan, user_ids, items, schema)


def recommend_to_file(
    model: Recommender,
    out: str | os.PathLike,
    users: Any = None,
    k: int = 10,
    *,
    retrieval: RetrievalName = "exact",
    model_dir: str | os.PathLike | None = None,
    index: Any = None,
    include_seen: bool = False,
    history: Interactions | None = None,
    batch_users: int = 4096,
    search_k: int | None = None,
    n_jobs: int | None = -1,
    device: str = "auto",
    progress: bool = False,
    item_titles: np.ndarray | None = None,
) -> RecommendResult:
    """Write the top-``k`` items of each user to ``out`` (``.parquet`` or ``.csv``; ``"-"``:
    CSV to standard output, for people and pipes).

    Columns: ``user``, ``item`` (the ids of the data), ``rank`` (1 = best), ``score`` (the
    model's score; NaN for fallback rows) and ``fallback`` (true where the user was unknown
    and got the popular items). ``users``: ``"all"``, ``None`` (all, or the history's
    users when a history is given) or a sequence of ids (repeats dropped). ``history``
    folds its users in (see :meth:`Recommender.fold_in`).

    Retrieval is ``exact`` (blocked torch product, all cores) or ``annoy`` (the index saved
    in ``model_dir``; ``n_jobs`` threads), or a ready ``index``. Chunks of ``batch_users``
    are written as they are computed (writing overlaps the next chunk's search) into a
    temporary file that replaces ``out`` only when complete; a run that fails or is killed
    leaves no ``out`` (or the previous one). ``item_titles`` (one per model item) adds a
    ``title`` column, for people reading the output.
    """
    import pyarrow as pa

    from recsys.data.io import csv_write_options

    model.check_fitted()
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if batch_users < 1:
        raise ConfigError("batch_users must be at least 1")
    fmt = output_format(out)
    start = time.perf_counter()
    if index is None:
        index = open_retrieval(model, retrieval, model_dir, search_k=search_k, n_jobs=n_jobs, device=device)
    batch = plan_batch(model, users, history, with_titles=item_titles is not None)
    plan, user_ids, items, schema = batch.plan, batch.user_ids, batch.items, batch.schema
    titles = None if item_titles is None else pa.array(item_titles, pa.string())
    csv_options = csv_write_options(model.items, Vocabulary(user_ids)) if fmt == "csv" else None
    if csv_options is not None and item_titles is not None:
        csv_options.quoting_style = "needed"  # titles hold commas ("Usual Suspects, The (1995)")
    n_rows = 0
    path = Path(out)
    to_stdout = os.fspath(out) == STDOUT
    target = contextlib.nullcontext(sys.stdout.buffer) if to_stdout else atomic_file(path, kind=RECOMMENDATIONS)
    if to_stdout:
        sys.stdout.flush()
    with target as tmp, ThreadPoolExecutor(1) as pool, \
            progress_bar(plan.n, "recommending", enabled=progress) as bar:
        writer = _Writer(tmp, fmt, schema, csv_options)
        pending = None
        try:
            for begin in range(0, plan.n, batch_users):
                rows = np.arange(begin, min(begin + batch_users, plan.n))
                idx, scores, fallback = answer(model, index, plan, rows, k, include_seen=include_seen)
                table = chunk_table(user_ids[rows], items, idx, scores, fallback, titles)
                if pending is not None:
                    pending.result()
                # Writing (pyarrow, GIL released) overlaps the next chunk's search.
                pending = pool.submit(writer.write, table)
                n_rows += table.num_rows
                bar.advance(len(rows))
            if pending is not None:
                pending.result()
            if plan.n == 0:
                writer.write(schema.empty_table())
        finally:
            writer.close()
    fallback = plan.fallback
    folded = plan.folded_index >= 0
    return RecommendResult(
        path=path,
        k=k,
        retrieval=getattr(index, "name", retrieval),
        users=plan.n,
        rows=n_rows,
        known_users=int(((plan.model_index >= 0) & ~folded).sum()),
        folded_users=int(folded.sum()),
        fallback_users=int(fallback.sum()),
        dropped_history_entries=0 if plan.folded is None else plan.folded.dropped_entries,
        seconds=time.perf_counter() - start,
    )

