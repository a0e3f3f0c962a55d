"""The filters users of implicit and RecBole expect before training: a minimum rating and
minimum counts per user and per item (k-core), and a one-line account of the values read.

Users and items left without entries leave the vocabularies too, so a model never holds
rows it cannot learn and a test file's entries for them are dropped (and counted) like any
unknown id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError


@dataclass(frozen=True)
class Filters:
    """``min_rating``: entries rated below it are dropped (ratings only). ``min_user_count``
    and ``min_item_count``: users and items with fewer entries are dropped, repeatedly, until
    every one left has at least that many (the k-core)."""

    min_rating: float | None = None
    min_user_count: int = 1
    min_item_count: int = 1

    def check(self) -> None:
        if self.min_rating is not None and (isinstance(self.min_rating, bool) or not isinstance(self.min_rating, int | float)
                                            or not math.isfinite(self.min_rating)):
            raise ConfigError(f"min_rating must be a finite number, got {self.min_rating!r}")
        for name in ("min_user_count", "min_item_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")

    @property
    def active(self) -> bool:
        return self.min_rating is not None or self.min_user_count > 1 or self.min_item_count > 1

    def describe(self) -> str:
        given = []
        if self.min_rating is not None:
            given.append(f"rating >= {self.min_rating:g}")
        if self.min_user_count > 1:
            given.append(f"users with >= {self.min_user_count} entries")
        if self.min_item_count > 1:
            given.append(f"items with >= {self.min_item_count} entries")
        return ", ".join(given)


@dataclass(frozen=True)
class FilterReport:
    entries: int  # entries dropped
    users: int  # users dropped
    items: int  # items dropped

    def describe(self, filters: Filters) -> str:
        return f"kept {filters.describe()}: dropped {self.entries:,} entries, {self.users:,} users, {self.items:,} items"


def apply_filters(data: Interactions, filters: Filters) -> tuple[Interactions, FilterReport]:
    """``data`` filtered (vocabularies compacted to the users and items left)."""
    filters.check()
    if not filters.active:
        return data, FilterReport(0, 0, 0)
    keep = np.ones(data.nnz, dtype=bool)
    if filters.min_rating is not None:
        if data.feedback != "rating":
            raise ConfigError("--min-rating filters ratings; this log holds counts (use --min-user-count / "
                              "--min-item-count, or read its values as ratings with --feedback rating)")
        keep &= data.matrix.data >= filters.min_rating
    rows, cols = data.row_indices, data.matrix.indices
    while True:  # a handful of rounds: each drops what the previous one left short
        users = np.bincount(rows[keep], minlength=data.n_users) >= filters.min_user_count
        items = np.bincount(cols[keep], minlength=data.n_items) >= filters.min_item_count
        now = keep & users[rows] & items[cols]
        if now.sum() == keep.sum():
            break
        keep = now
    if not keep.any():
        raise ConfigError(f"the filters ({filters.describe()}) leave no entries")
    kept = data.select(keep)
    user_left = kept.user_counts() > 0
    item_left = kept.item_counts() > 0
    compact, _ = kept.reindex(Vocabulary(data.users.ids[user_left]), Vocabulary(data.items.ids[item_left]))
    report = FilterReport(int(data.nnz - keep.sum()), int((~user_left).sum()), int((~item_left).sum()))
    return compact, report


def describe_values(data: Interactions) -> str:
    """What the values read are, in a few words: ``ratings 0.5-5`` or ``counts 1-352,698``
    (``binary`` when every value is 1)."""
    values = data.matrix.data
    if values.size == 0:
        return "no entries"
    low, high = float(values.min()), float(values.max())
    if data.feedback == "count":
        return "binary (every value 1)" if low == high == 1 else f"counts {low:,g}-{high:,g}"
    return f"ratings {low:g}-{high:g}"
