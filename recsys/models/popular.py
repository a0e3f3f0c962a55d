"""The popularity baseline: every user gets the items with the most training users."""

from __future__ import annotations

import numpy as np

from recsys.data.interactions import Interactions
from recsys.models.base import Recommender


class Popular(Recommender):
    """Rank items by how many training users interacted with them.

    Expressed in the shared geometry: one factor, 1 for every user and the item's user
    count for every item, so retrieval, evaluation and saving need nothing special.
    """

    name = "popular"

    def __init__(self) -> None:
        pass

    def _fit(self, data: Interactions, **_: object) -> None:
        counts = data.item_counts().astype(np.float32)
        self.user_factors = np.ones((data.n_users, 1), dtype=np.float32)
        self.item_factors = counts[:, None]

    def _fold_in(self, matrix: object, feedback: str, **_: object) -> tuple[np.ndarray, None]:
        """Nothing to learn: every user's vector is the constant 1."""
        return np.ones((matrix.shape[0], 1), dtype=np.float32), None  # type: ignore[attr-defined]
