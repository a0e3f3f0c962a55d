"""``recsys recommend --engine spark``: top-k for every user, scored on Spark's executors.

The item vectors are broadcast; the users (their query vectors and seen items) are
partitioned; each task runs the local exact search (:class:`recsys.embeddings.ExactIndex`:
users in blocks, one matrix product per block, seen items masked, ``topk``) and builds its
rows with the local writer's :func:`recsys.retrieval.batch.chunk_table`, so the lists are the
local ones (up to the order of equal scores). Users the model does not know get the popular
items (``fallback`` true, NaN score), as locally. The output is a directory of Parquet parts
with the local columns ``user, item, rank, score, fallback``.

Where it is written: a path without a scheme, under a local master, is built beside its
target and moved into place when complete (as every recsys output); a URI (``hdfs://``,
``s3a://``) or any path under a cluster master is written by Spark itself, which refuses an
existing one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.artifacts import OutputKind, atomic_directory, check_output
from recsys.errors import ConfigError
from recsys.retrieval.batch import COLUMNS, RecommendResult, chunk_table, plan_batch
from recsys.spark.session import SparkSettings, spark_session

if TYPE_CHECKING:
    from recsys.models.base import Recommender

SUCCESS = "_SUCCESS"
# Users per partition: enough that each task's item matrix and setup are amortized.
USERS_PER_PARTITION = 50_000


def _spark_recommendations(marker: Path) -> bool:
    """A directory Spark wrote with the recommendation columns (its marker is empty: the
    parts tell)."""
    import pyarrow.parquet as pq

    parts = sorted(marker.parent.glob("part-*.parquet"))
    return bool(parts) and tuple(pq.read_schema(parts[0]).names[: len(COLUMNS)]) == COLUMNS


RECOMMENDATIONS_DIRECTORY = OutputKind("recommendations directory (Spark)", directory=True, marker=SUCCESS,
                                       recognise=_spark_recommendations)


def writes_locally(out: str | os.PathLike, settings: SparkSettings) -> bool:
    """Whether ``out`` is a local path this process builds and moves into place."""
    return settings.local and "://" not in os.fspath(out)


def recommend_on_spark(
    model: Recommender,
    out: str | os.PathLike,
    users: Any,
    k: int,
    settings: SparkSettings,
    *,
    include_seen: bool = False,
    progress: bool = False,
) -> RecommendResult:
    """Write the top-``k`` items of ``users`` (``"all"``, None or ids) to the Parquet
    directory ``out``, scored on Spark (see the module's notes)."""
    model.check_fitted()
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if os.fspath(out) == "-" or os.fspath(out).lower().endswith(".csv"):
        raise ConfigError(f"{out}: Spark writes a directory of Parquet parts; give a directory path "
                          "(e.g. recs.parquet or recs/)")
    local = writes_locally(out, settings)
    if local:
        check_output(out, RECOMMENDATIONS_DIRECTORY)
    start = time.perf_counter()
    batch = plan_batch(model, users)
    plan = batch.plan
    with spark_session(settings, progress=progress) as spark:
        frame = _scored(spark, model, batch, k, include_seen)
        if local:
            with atomic_directory(out, kind=RECOMMENDATIONS_DIRECTORY) as tmp:
                frame.write.mode("overwrite").parquet(Path(tmp).resolve().as_uri())
        else:
            frame.write.mode("errorifexists").parquet(os.fspath(out))
        rows = spark.read.parquet(Path(out).resolve().as_uri() if local else os.fspath(out)).count()
    return RecommendResult(
        path=Path(out), k=k, retrieval="exact (spark)", users=plan.n, rows=int(rows),
        known_users=int((plan.model_index >= 0).sum()), folded_users=0, fallback_users=int(plan.fallback.sum()),
        dropped_history_entries=0, seconds=time.perf_counter() - start,
    )


def _scored(spark: Any, model: Recommender, batch: Any, k: int, include_seen: bool) -> Any:
    """The recommendation rows as a Spark DataFrame: users partitioned, items broadcast."""
    from pyspark import TaskContext
    from pyspark.sql.pandas.types import from_arrow_schema

    embeddings = model.embeddings()
    context = spark.sparkContext
    item_vectors = context.broadcast(np.ascontiguousarray(embeddings.item_vectors, dtype=np.float32))
    item_ids = context.broadcast(batch.items)
    popular = embeddings.popular_items(k)
    users = _user_table(batch, embeddings, include_seen)
    parts = max(context.defaultParallelism, math.ceil(len(batch.user_ids) / USERS_PER_PARTITION))
    frame = spark.createDataFrame(users)
    if frame.rdd.getNumPartitions() < parts:
        frame = frame.repartition(parts)

    def score(batches: Any) -> Any:
        import torch

        from recsys.embeddings import ExactIndex

        context = TaskContext.get()
        torch.set_num_threads(max(1, int(context.cpus()) if context is not None else 1))
        index = ExactIndex(item_vectors.value, "cpu")
        for part in batches:
            rows = part.column("row").to_numpy()
            known = rows >= 0
            idx = np.full((len(rows), k), -1, dtype=np.int64)
            scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
            if known.any():
                vectors = _matrix(part.column("vector"), index.dim)[known]
                exclude = None if include_seen else _csr(part.column("seen"), index.n_items)[known]
                idx[known], scores[known] = index.search(vectors, k, exclude)
            idx[~known] = popular
            scores[~known] = np.nan
            user = np.asarray(part.column("user").to_numpy(zero_copy_only=False))
            yield from chunk_table(user, item_ids.value, idx, scores, ~known).to_batches()

    return frame.mapInArrow(score, from_arrow_schema(batch.schema))


def _user_table(batch: Any, embeddings: Any, include_seen: bool) -> Any:
    """One row per requested user: the id, the model's row (-1: unknown, the fallback), the
    query vector and the seen items (empty for unknown users and with ``include_seen``)."""
    import pyarrow as pa

    rows = np.where(batch.plan.fallback, -1, batch.plan.model_index)
    vectors = embeddings.user_vectors[np.maximum(rows, 0)].astype(np.float32)
    d = vectors.shape[1]
    seen = _seen_rows(embeddings.seen, rows, include_seen)
    user = pa.array(batch.user_ids, batch.schema.field("user").type)
    return pa.table({
        "user": user,
        "row": pa.array(rows, pa.int64()),
        "vector": pa.ListArray.from_arrays(pa.array(np.arange(0, len(rows) * d + 1, d, dtype=np.int32)),
                                           pa.array(vectors.ravel())),
        "seen": pa.ListArray.from_arrays(pa.array(seen.indptr.astype(np.int32)),
                                         pa.array(seen.indices.astype(np.int32))),
    })


def _seen_rows(seen: sp.csr_matrix, rows: np.ndarray, include_seen: bool) -> sp.csr_matrix:
    """The seen items of each model row in ``rows`` (none for -1, an unknown user), one row per
    entry; none at all with ``include_seen``, without gathering them first."""
    if include_seen:
        return sp.csr_matrix((len(rows), seen.shape[1]), dtype=np.float32)
    known = (rows >= 0).astype(np.float32)
    picked = sp.csr_matrix(sp.diags(known) @ seen[np.maximum(rows, 0)])
    picked.eliminate_zeros()
    return picked


def _matrix(column: Any, d: int) -> np.ndarray:
    """A list<float> column of equal-length vectors as an (n, d) array."""
    flat = column.combine_chunks().flatten() if hasattr(column, "combine_chunks") else column.flatten()
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)


def _csr(column: Any, n_items: int) -> sp.csr_matrix:
    """A list<int> column of item indices as a CSR matrix (one row per entry)."""
    lists = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    offsets = offsets - offsets[0]
    indices = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, offsets), shape=(len(lists), n_items))
