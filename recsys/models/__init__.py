"""Models: small estimators sharing one interface (fit, recommend, similar_items, save, load)."""

from __future__ import annotations

from typing import Any

from recsys.errors import ConfigError
from recsys.models.als import ALS
from recsys.models.base import Recommender
from recsys.models.bpmf import BayesianMF
from recsys.models.ials import IALS
from recsys.models.mf import MatrixFactorization
from recsys.models.popular import Popular
from recsys.models.training import IterativeRecommender
from recsys.models.two_tower import TwoTower

MODELS: dict[str, type[Recommender]] = {
    Popular.name: Popular,
    ALS.name: ALS,
    IALS.name: IALS,
    MatrixFactorization.name: MatrixFactorization,
    BayesianMF.name: BayesianMF,
    TwoTower.name: TwoTower,
}


def create_model(name: str, **params: Any) -> Recommender:
    """A model by its name (``als``, ``ials``, ``mf``, ``bpmf``, ``two-tower``, ``popular``) with the given hyper-parameters."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name].from_params(params)


def load_model(path: Any) -> Recommender:
    """Load any saved model directory."""
    return Recommender.load(path)


__all__ = [
    "ALS",
    "IALS",
    "MODELS",
    "BayesianMF",
    "IterativeRecommender",
    "MatrixFactorization",
    "Popular",
    "Recommender",
    "TwoTower",
    "create_model",
    "load_model",
]
