"""Full-ranking offline evaluation: every item is a candidate, training items excluded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.artifacts import OutputKind, table_with_columns
from recsys.data.interactions import Interactions
from recsys.embeddings import Embeddings, EmbeddingSource
from recsys.errors import ConfigError, InputError
from recsys.evaluation.beyond import BEYOND_METRICS, BeyondAccuracy
from recsys.evaluation.metrics import DEFAULT_KS, PER_USER_METRICS, user_metrics
from recsys.progress import progress_bar
from recsys.seeding import as_generator

PER_USER_TABLE = OutputKind("per-user metrics table", recognise=table_with_columns(["user", "n_relevant"]))

Search = Callable[[np.ndarray, int, sp.csr_matrix], tuple[np.ndarray, np.ndarray]]
"""(user indices, k, items to exclude per user) -> (item indices (B, k), scores (B, k))."""

@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    ``metrics`` maps names such as ``"recall@20"`` to the mean over evaluated users
    (``coverage@k``, ``gini@k``, ``rmse`` and ``mae`` are aggregates; the beyond-accuracy
    figures are defined in :mod:`recsys.evaluation.beyond`). ``per_user`` has one row per
    evaluated user (in their external ids) when asked for. ``sampled_from`` is set when only
    a sample of the users was evaluated: ``n_users`` of ``sampled_from``.
    """

    metrics: dict[str, float]
    ks: tuple[int, ...]
    n_users: int
    skipped_users: int = 0
    dropped_entries: int = 0
    retrieval: str = "exact"
    seconds: float = 0.0
    per_user: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sampled_from: int | None = None  # with a sample of users: how many could have been evaluated

    def table(self) -> pd.DataFrame:
        """Metrics as a table: one row per metric, one column per k (recall first)."""
        rows = {}
        for name in (*PER_USER_METRICS, *BEYOND_METRICS, *self.extra.get("table_metrics", ())):
            values = {f"@{k}": self.metrics.get(f"{name}@{k}") for k in self.ks}
            if any(v is not None for v in values.values()):
                rows[name] = values
        return pd.DataFrame.from_dict(rows, orient="index")


def _validate_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ConfigError(f"k must be positive integers, got {ks}")
    return tuple(sorted(set(ks)))


def ranking_hits(top: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """``hits[b, r]``: is ``top[b, r]`` among row ``b``'s stored items of ``relevant``.

    Vectorized: one searchsorted over row-major keys (CSR rows are sorted).
    """
    n_items = relevant.shape[1]
    b = top.shape[0]
    row_of = np.repeat(np.arange(b, dtype=np.int64), np.diff(relevant.indptr))
    keys = row_of * n_items + relevant.indices
    valid = top >= 0
    query = np.arange(b, dtype=np.int64)[:, None] * n_items + np.where(valid, top, 0)
    pos = np.searchsorted(keys, query)
    found = keys[np.minimum(pos, max(len(keys) - 1, 0))] == query if len(keys) else np.zeros_like(valid)
    return found & valid


BATCH_USERS = 16384
"""Users ranked per call of the search: its own blocks bound the scores' memory, and the
per-call costs (the seen rows' slice, the metrics, the lists' figures, the search's own
set-up) are paid 8 times less often than at 2,048 (the 10M log's evaluation: 7.5-8.2 s
against 8.9-9.0 s; ALS on amazon-book's own split: 2.8-3.0 s against 3.7-3.9 s); what a
batch holds besides is its lists, 16,384 x max(k) indices."""


def evaluate_search(
    search: Search,
    test: sp.csr_matrix,
    exclude: sp.csr_matrix,
    ks: Sequence[int],
    *,
    users: np.ndarray | None = None,
    batch_users: int = BATCH_USERS,
    progress: bool = False,
    on_lists: Callable[[np.ndarray], None] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-user metrics of ``search`` for ``users`` (default: every user with test entries
    and training history), ``batch_users`` at a time.

    Returns (per-user metric arrays, evaluated user indices). ``on_lists`` receives each
    batch's top-max(k) lists (item indices, -1 padding) as they are found, so figures over
    the lists accumulate in memory bounded by the batch, never by the users.
    """
    ks = _validate_ks(ks)
    max_k = max(ks)
    n_test = np.diff(test.indptr)
    n_train = np.diff(exclude.indptr)
    if users is None:
        users = np.flatnonzero((n_test > 0) & (n_train > 0))
    parts: dict[str, list[np.ndarray]] = {}
    with progress_bar(len(users), "evaluating", enabled=progress) as bar:
        for start in range(0, len(users), batch_users):
            batch = users[start:start + batch_users]
            top, _ = search(batch, max_k, exclude[batch])
            hits = ranking_hits(top, test[batch])
            for name, values in user_metrics(hits, n_test[batch], ks).items():
                parts.setdefault(name, []).append(values)
            if on_lists is not None:
                on_lists(top)
            bar.advance(len(batch))
    per_user = {name: np.concatenate(v) for name, v in parts.items()}
    if not per_user:
        per_user = {f"{m}@{k}": np.zeros(0) for m in PER_USER_METRICS for k in ks}
    return per_user, users


def evaluate(
    model: EmbeddingSource,
    test: Interactions,
    *,
    train: Interactions | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    search: Search | None = None,
    retrieval: str = "exact",
    per_user: bool = False,
    batch_users: int = BATCH_USERS,
    progress: bool = False,
    sample_users: int | None = None,
    seed: int = 0,
    ratings: Interactions | None = None,
) -> Evaluation:
    """Evaluate ``model`` (a fitted model or its :class:`~recsys.embeddings.Embeddings`) on
    held-out ``test`` by ranking the full catalogue.

    Each test user's items seen in training (``train``, or the model's own training data
    when omitted) are excluded from their ranking; every held-out entry counts as
    relevant. Users with test entries but no training entries are skipped and counted
    (no history to rank from). Test entries whose user or item the model does not know
    are dropped and counted; if none remain, :class:`InputError` is raised.

    ``sample_users`` evaluates a seeded (``seed``) random sample of that many of the users
    instead of all (each still ranks the whole catalogue: the users are sampled, never the
    items), for logs whose full evaluation costs more than the training: at 2M users by 500K
    items it is 10^12 scores. The result says so (``sampled_from``); the per-user metrics are
    unbiased estimates of the full ones, ``coverage@k`` and ``gini@k`` describe the sample's
    lists. Memory is bounded by ``batch_users`` at any scale.

    ``search`` replaces exact retrieval (e.g. an Annoy index); ``retrieval`` names it.
    Rating models (``model.predicts_ratings``) on rating data also get RMSE and MAE over
    all test ratings, those of unknown users and items included (:func:`rating_errors`);
    ``ratings`` gives those test ratings as read, for a caller whose ``test`` already lacks
    the entries of unknown users and items.
    """
    model = Embeddings.of(model)
    ks = _validate_ks(ks)
    start = time.perf_counter()
    rated = test if ratings is None else ratings
    errors = rating_errors(model, rated) if model.predicts_ratings and rated.feedback == "rating" else None
    test, dropped = test.reindex(model.users, model.items)
    if test.nnz == 0:
        raise InputError(
            "no test entry has a user and an item known to the model "
            f"({dropped} entries dropped); is this the right model and test file?",
            path=test.source,
        )
    if train is None:
        exclude = model.seen
    else:
        train, _ = train.reindex(model.users, model.items)
        exclude = train.matrix
    n_test = np.diff(test.matrix.indptr)
    has_train = np.diff(exclude.indptr) > 0
    skipped = int(((n_test > 0) & ~has_train).sum())
    users = np.flatnonzero((n_test > 0) & has_train)
    sampled_from = None
    if sample_users is not None:
        if isinstance(sample_users, bool) or sample_users < 1:
            raise ConfigError(f"the sample of users to evaluate must be at least 1, got {sample_users}")
        if sample_users < len(users):
            sampled_from = len(users)
            users = np.sort(as_generator(seed).choice(users, sample_users, replace=False))

    def exact(users: np.ndarray, k: int, excl: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        return model.search(users, k, excl)

    beyond = BeyondAccuracy(ks, model.item_popularity, model.item_embeddings)
    values, users = evaluate_search(
        search or exact, test.matrix, exclude, ks, users=users,
        batch_users=batch_users, progress=progress, on_lists=beyond.add,
    )
    metrics = {name: float(v.mean()) if len(v) else float("nan") for name, v in values.items()}
    metrics.update(beyond.result())
    if errors is not None:
        metrics["rmse"] = float(np.sqrt(np.mean(errors**2)))
        metrics["mae"] = float(np.mean(np.abs(errors)))
    table = None
    if per_user:
        table = pd.DataFrame({"user": model.users.ids[users], "n_relevant": n_test[users]})
        for name, v in values.items():
            table[name] = v
    ordered = {name: metrics[name] for name in _report_order(metrics, ks)}
    return Evaluation(
        metrics=ordered,
        ks=ks,
        n_users=len(users),
        skipped_users=skipped,
        dropped_entries=dropped,
        retrieval=retrieval,
        seconds=time.perf_counter() - start,
        per_user=table,
        sampled_from=sampled_from,
    )


def rating_errors(model: Embeddings, test: Interactions) -> np.ndarray:
    """Prediction minus rating for every test rating, shape (test.nnz,), float64; the model's
    score, clipped to the range of its training ratings as its ``predict`` is (what
    Surprise does with the rating scale). A model with biases rates a user without training entries ``mu + b_i``,
    an item without them ``mu + b_u``, both ``mu`` (what Surprise and the papers on ML-100K's
    splits do, so that RMSE is over all test ratings); a model without biases leaves such
    entries out."""
    u = model.users.index(test.users.ids)[test.row_indices]
    i = model.items.index(test.items.ids)[test.matrix.indices]
    known_u, known_i = u >= 0, i >= 0
    pred = np.full(test.nnz, np.nan)
    both = known_u & known_i
    pred[both] = model.score_pairs(u[both], i[both])
    if model.global_bias is not None:
        # Folded biases: a user vector ends with b_u + mu; an item vector with b_i, 1.
        pred[known_u & ~known_i] = model.user_vectors[u[known_u & ~known_i], -1]
        pred[~known_u & known_i] = model.item_vectors[i[~known_u & known_i], -2] + model.global_bias
        pred[~known_u & ~known_i] = model.global_bias
    err = model.as_ratings(pred) - test.matrix.data
    return err[~np.isnan(err)]


def _report_order(metrics: dict[str, float], ks: Sequence[int]) -> list[str]:
    names = [f"{m}@{k}" for m in (*PER_USER_METRICS, *BEYOND_METRICS) for k in ks]
    names = [n for n in names if n in metrics]
    return names + [n for n in metrics if n not in names]
