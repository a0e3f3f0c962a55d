"""Train/test splits: functions from :class:`Interactions` to a ``(train, test)`` pair.

Both halves keep the full vocabularies, so index ``u`` is the same user in train and test
and a model fitted on train can be evaluated on test directly.

Users and items that appear only in test
----------------------------------------
A user whose every entry went to test (possible with ``temporal`` and ``random``) has an
empty training row: evaluation skips such users and reports how many were skipped, since
no model of past behaviour can rank for them. An item seen only in test stays in the
catalogue: every model ranks it from what it learned (factors it never updated), which is
the honest cost of a cold item. ``user`` holdout, ``last-n`` and ``leave-one-out`` always
leave each user at least one training entry.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError, InputError
from recsys.seeding import Seed, as_generator

Strategy = Literal["user", "random", "temporal", "last-n", "leave-one-out", "cold-items"]
STRATEGIES: tuple[str, ...] = ("user", "random", "temporal", "last-n", "leave-one-out", "cold-items")
# The settings each strategy reads (a record of a split names only these).
SETTINGS: dict[str, tuple[str, ...]] = {
    "user": ("test_fraction",), "random": ("test_fraction",), "temporal": ("test_fraction",),
    "last-n": ("n",), "leave-one-out": (), "cold-items": ("test_fraction",),
}


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test fraction must be between 0 and 1, got {test_fraction}")


def tie_values(seed: int, start: int, count: int) -> np.ndarray:
    """Values ``start`` to ``start + count`` of the uniform stream a split seeded with ``seed``
    breaks its ties with (``as_generator(seed).random(nnz)``: one value per entry, entries in
    CSR order), without drawing the ones before them: PCG64 jumps ahead. Each Spark task
    draws its own share with it (:mod:`recsys.spark.data`), so a split made on a cluster holds
    out the same entries as the one made here."""
    bits = np.random.PCG64(seed)
    bits.advance(start)
    return np.random.Generator(bits).random(count)


def _rank_within_users(data: Interactions, primary: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Each entry's position inside its user's row when sorted by ``primary`` (None: no
    order of its own), ties broken at random.

    Two sorts, not a three-key ``lexsort``: the global rank of (``primary``, tie), then one
    sort of unique int64 keys ``user * nnz + rank`` (3x faster at 10M entries).
    """
    tie = rng.random(data.nnz)
    by_value = np.argsort(tie) if primary is None else np.lexsort((tie, primary))
    rank = np.empty(data.nnz, dtype=np.int64)
    rank[by_value] = np.arange(data.nnz)
    del by_value
    rows = data.row_indices
    rank += rows * data.nnz
    order = np.argsort(rank)  # the keys are distinct
    position = np.empty(data.nnz, dtype=np.int64)
    # Rows are in user order already, so the k-th entry of the order is at row rows[k].
    position[order] = np.arange(data.nnz) - data.matrix.indptr[:-1][rows]
    return position


def random_split(data: Interactions, test_fraction: float = 0.2, seed: Seed = 0) -> tuple[Interactions, Interactions]:
    """Hold out a uniformly random ``test_fraction`` of all entries."""
    _check_fraction(test_fraction)
    rng = as_generator(seed)
    n_test = int(np.floor(test_fraction * data.nnz + 0.5))
    test = np.zeros(data.nnz, dtype=bool)
    test[rng.permutation(data.nnz)[:n_test]] = True
    return data.select(~test), data.select(test)


def user_split(data: Interactions, test_fraction: float = 0.2, seed: Seed = 0) -> tuple[Interactions, Interactions]:
    """Per-user holdout: each user keeps ``1 - test_fraction`` of their entries in train.

    The protocol of LightGCN and Mult-VAE. A user with ``n`` entries gives
    ``round(test_fraction * n)`` of them to test, at most ``n - 1``, so every user keeps at
    least one training entry (a user with one entry has none in test).
    """
    _check_fraction(test_fraction)
    rng = as_generator(seed)
    counts = data.user_counts()
    n_test = np.minimum(np.floor(test_fraction * counts + 0.5), np.maximum(counts - 1, 0))
    position = _rank_within_users(data, None, rng)
    test = position < n_test[data.row_indices]
    return data.select(~test), data.select(test)


def _require_timestamps(data: Interactions, strategy: str) -> np.ndarray:
    if data.timestamps is None:
        raise ConfigError(f"the {strategy!r} split needs timestamps, and this data has none")
    return data.timestamps


def temporal_split(
    data: Interactions,
    test_fraction: float = 0.2,
    cutoff: int | None = None,
) -> tuple[Interactions, Interactions]:
    """Global time cutoff: entries after ``cutoff`` are test.

    Without ``cutoff``, it is the time that puts ``test_fraction`` of the entries after it.
    Users who first appear after the cutoff have no training entries (see module notes).
    """
    ts = _require_timestamps(data, "temporal")
    if cutoff is None:
        _check_fraction(test_fraction)
        cutoff = int(np.quantile(ts, 1.0 - test_fraction, method="lower"))
    test = ts > cutoff
    return data.select(~test), data.select(test)


def last_n_split(data: Interactions, n: int = 1, seed: Seed = 0) -> tuple[Interactions, Interactions]:
    """Each user's ``n`` latest entries are test (never all of them: one stays in train).

    Ties in time are broken at random with ``seed``.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    ts = _require_timestamps(data, "last-n")
    rng = as_generator(seed)
    counts = data.user_counts()
    position = _rank_within_users(data, -ts, rng)  # 0 = the latest
    n_test = np.minimum(n, np.maximum(counts - 1, 0))
    test = position < n_test[data.row_indices]
    return data.select(~test), data.select(test)


def leave_one_out_split(data: Interactions, seed: Seed = 0) -> tuple[Interactions, Interactions]:
    """One entry per user (with two or more) is test: the latest, or a random one without timestamps."""
    if data.timestamps is not None:
        return last_n_split(data, 1, seed)
    rng = as_generator(seed)
    counts = data.user_counts()
    position = _rank_within_users(data, None, rng)
    test = (position == 0) & (counts[data.row_indices] >= 2)
    return data.select(~test), data.select(test)


def cold_item_split(data: Interactions, test_fraction: float = 0.2, seed: Seed = 0) -> tuple[Interactions, Interactions]:
    """Hold out a random ``test_fraction`` of the items that have interactions, with all of them.

    The held-out items stay in the vocabulary with no training entries: only a model that
    embeds items from their features can rank them (see
    :func:`recsys.evaluation.cold.evaluate_cold_items`).
    """
    _check_fraction(test_fraction)
    rng = as_generator(seed)
    warm = np.flatnonzero(data.item_counts() > 0)
    n_cold = int(np.floor(test_fraction * len(warm) + 0.5))
    cold = np.zeros(data.n_items, dtype=bool)
    cold[rng.permutation(warm)[:n_cold]] = True
    test = cold[data.matrix.indices]
    return data.select(~test), data.select(test)


def split(
    data: Interactions,
    strategy: Strategy = "user",
    *,
    test_fraction: float = 0.2,
    n: int = 1,
    cutoff: int | None = None,
    seed: Seed = 0,
) -> tuple[Interactions, Interactions]:
    """Split by name: ``user`` (per-user fraction), ``random``, ``temporal`` (global cutoff),
    ``last-n`` (per user, by time), ``leave-one-out`` or ``cold-items`` (a share of items
    held out with all their entries)."""
    if strategy == "user":
        return user_split(data, test_fraction, seed)
    if strategy == "random":
        return random_split(data, test_fraction, seed)
    if strategy == "temporal":
        return temporal_split(data, test_fraction, cutoff)
    if strategy == "last-n":
        return last_n_split(data, n, seed)
    if strategy == "leave-one-out":
        return leave_one_out_split(data, seed)
    if strategy == "cold-items":
        return cold_item_split(data, test_fraction, seed)
    raise ConfigError(f"unknown split {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def keep_trained(train: Interactions, test: Interactions) -> tuple[Interactions, Interactions, int]:
    """Both parts of a split on the users and items that have training entries, and the number
    of test entries dropped for lack of them: the model knows only what it trained on (the
    rule of :func:`recsys.jobs.settings.split_for_training`, for a split made here or on Spark)."""
    users = Vocabulary(train.users.ids[train.user_counts() > 0])
    items = Vocabulary(train.items.ids[train.item_counts() > 0])
    train, _ = train.reindex(users, items)
    test, dropped = test.reindex(users, items)
    return train, test, dropped


def on_training_ids(given: Interactions, train: Interactions, path: object = None) -> tuple[Interactions, int]:
    """A given test part (``--test FILE``) on the training data's users and items, and the
    number of its entries dropped for lack of them; the one rule of a local and a Spark run.

    Raises :class:`~recsys.errors.InputError` (naming ``path``) when no entry is left: most
    likely the wrong test file for this training data.
    """
    test, dropped = given.reindex(train.users, train.items)
    if test.nnz == 0:
        raise InputError(f"no test entry has a user and an item in the training data ({dropped} entries "
                         "dropped); is this the right test file for this training data?", path=path)
    return test, dropped
