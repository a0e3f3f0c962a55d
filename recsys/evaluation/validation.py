"""Validation during training: a metric on held-out data after each epoch, for early stopping.

The shared epoch loop (:mod:`recsys.models.training`) calls :meth:`Validation.score`; the
metric is computed here, by the same code as the final evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.evaluation.full_ranking import evaluate_search

if TYPE_CHECKING:
    from recsys.models.base import Recommender


@dataclass
class Validation:
    """Per-epoch validation: ``metric`` (e.g. ``recall@20``) on held-out ``data``.

    With ``patience``, training stops after that many epochs without improvement and the
    best epoch's factors are restored.
    """

    data: Interactions
    metric: str = "recall@20"
    patience: int | None = None
    every: int = 1

    def score(self, model: Recommender) -> float:
        """Mean :attr:`metric` of ``model`` on :attr:`data` (exact, full ranking)."""
        return validation_score(model, self)

    @property
    def k(self) -> int:
        try:
            return int(self.metric.split("@")[1])
        except (IndexError, ValueError):
            raise ConfigError(f"validation metric must look like 'recall@20', got {self.metric!r}") from None


def validation_score(model: Recommender, validation: Validation) -> float:
    """Mean ``validation.metric`` of ``model`` on ``validation.data`` (exact, full ranking)."""
    name = validation.metric

    def search(users, k, exclude):
        return model.recommend_indices(users, k, exclude=exclude)

    values, _users = evaluate_search(search, validation.data.matrix, model.seen, [validation.k])
    if name not in values:
        raise ConfigError(f"unknown validation metric {name!r}")
    v = values[name]
    return float(v.mean()) if len(v) else float("nan")
