"""The two-tower estimator: hyper-parameters, the learned factors, towers and feature
encoders, the one path for new users (features and/or history), new items, persistence."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureEncoder, rows_with_values
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError, ModelFormatError
from recsys.models.base import FoldIn
from recsys.models.training import IterativeRecommender
from recsys.models.two_tower.encoding import FeatureRows, first_items, history_pairs, recent_pairs
from recsys.models.two_tower.towers import (
    Output,
    Tower,
    embed_in_chunks,
    tower_arrays,
    trained_towers,
)
from recsys.models.two_tower.trainer import TwoTowerTrainer

Similarity = Literal["dot", "cosine"]
Schedule = Literal["constant", "cosine"]


@dataclass
class FeatureFoldIn(FoldIn):
    """A :class:`FoldIn` where users with features but no usable history still count."""

    with_features: np.ndarray | None = None

    def has_history(self) -> np.ndarray:
        rows = super().has_history()
        return rows if self.with_features is None else rows | self.with_features


class TwoTower(IterativeRecommender):
    """Two-tower model with user and item features (see :mod:`recsys.models.two_tower`).

    Parameters
    ----------
    factors : int
        Output dimension of both towers (the dimension of the factors).
    hidden : int
        Width of each tower's hidden layer; 0 makes the towers linear.
    feature_dim : int
        Embedding dimension of each categorical or multi-valued feature.
    recent : int
        How many of a user's most recent items are mean-pooled into the user tower
        (0: none).
    epochs, learning_rate, batch_size : int, float, int
        Adam training; large batches give more in-batch negatives.
    regularization : float
        Decoupled weight decay (AdamW).
    similarity : {"cosine", "dot"}
        Score: cosine divided by ``temperature``, or plain dot product.
    temperature : float
        Softmax temperature for ``cosine``.
    lr_schedule : {"constant", "cosine"}
        Learning rate over training: constant, or cosine decay from ``learning_rate`` to
        zero over all ``epochs`` (steadier final embeddings).
    tower_bias : bool
        The item tower also outputs a bias added to the score (a popularity prior the
        unit-length cosine vectors cannot express; predicted from features for cold
        items). Exported as one more dimension of the factors (1 for every user).
    logq : bool or float
        Subtract log of each item's in-batch sampling probability (the popularity bias of
        in-batch negatives, Yi et al. 2019), times this strength (True = 1, the unbiased
        full softmax; False = 0). Above 1 it over-corrects: training pushes popular items
        down harder, so the model learns to score them higher, which favours popular items
        in the recommendations.
    uniform_negatives : int
        Extra uniformly sampled (warm) negative items per batch, shared by its rows.
    id_dropout : float
        Share of rows whose id embedding is dropped in training, so the towers also learn
        from features and history alone (cold items, new users).
    max_values : int
        At most this many values per row of a multi-valued feature.
    mixed_precision : bool
        bfloat16 autocast on CUDA (never on the CPU).
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    random_state : int
        Seed; on the CPU the same seed gives the same factors.
    """

    name = "two-tower"
    data_parallel = True
    uses_features = True
    # Models saved before these hyper-parameters existed were trained without them.
    legacy_params: ClassVar[dict[str, Any]] = {"tower_bias": False, "lr_schedule": "constant"}

    def __init__(
        self,
        factors: int = 128,
        hidden: int = 256,
        feature_dim: int = 32,
        recent: int = 50,
        epochs: int = 20,
        learning_rate: float = 0.003,
        regularization: float = 0.0,
        batch_size: int = 1024,
        similarity: Similarity = "cosine",
        temperature: float = 0.1,
        lr_schedule: Schedule = "cosine",
        tower_bias: bool = True,
        logq: bool | float = 1.5,
        uniform_negatives: int = 0,
        id_dropout: float = 0.25,
        max_values: int = 32,
        mixed_precision: bool = True,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.hidden = hidden
        self.feature_dim = feature_dim
        self.recent = recent
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.batch_size = batch_size
        self.similarity = similarity
        self.temperature = temperature
        self.lr_schedule = lr_schedule
        self.tower_bias = tower_bias
        self.logq = logq
        self.uniform_negatives = uniform_negatives
        self.id_dropout = id_dropout
        self.max_values = max_values
        self.mixed_precision = mixed_precision
        self.device = device
        self.random_state = random_state

    @property
    def scores_cold_items(self) -> bool:
        """Whether items without interactions get meaningful scores (only from item features)."""
        enc = self.__dict__.get("item_encoder")
        return enc is not None and bool(enc.categorical or enc.multi or enc.numeric)

    def _validate_params(self) -> None:
        for name in ("factors", "epochs", "batch_size", "feature_dim", "max_values"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("hidden", "recent", "uniform_negatives"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be 0 or more")
        if self.similarity not in ("dot", "cosine"):
            raise ConfigError(f"unknown similarity {self.similarity!r}; use cosine or dot")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; use constant or cosine")
        if self.learning_rate <= 0 or self.temperature <= 0 or self.regularization < 0:
            raise ConfigError("learning_rate and temperature must be > 0, regularization >= 0")
        if not isinstance(self.logq, bool | int | float) or not (math.isfinite(self.logq) and self.logq >= 0):
            raise ConfigError(f"logq must be true, false or a strength >= 0, got {self.logq!r}")
        if not isinstance(self.tower_bias, bool):
            raise ConfigError(f"tower_bias must be true or false, got {self.tower_bias!r}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError("id_dropout must be in [0, 1)")

    def _check_resume(self, checkpoint: Any) -> None:
        super()._check_resume(checkpoint)
        if self.lr_schedule == "cosine" and checkpoint.meta.get("epochs") != self.epochs:
            raise ConfigError(f"{checkpoint.directory}: the learning rate decays over the run's "
                              f"{checkpoint.meta.get('epochs')} epochs; resume with that many, not {self.epochs}")

    # -- training ------------------------------------------------------------------------------
    def create_trainer(self, data: Interactions, params: Mapping[str, Any]) -> TwoTowerTrainer:
        # The encoders are learned from the training data's feature tables: the towers are
        # shaped by them, and new users and items are encoded by them after training.
        self.user_encoder = FeatureEncoder.fit(data.user_features, params["max_values"])
        self.item_encoder = FeatureEncoder.fit(data.item_features, params["max_values"])
        return TwoTowerTrainer(data, params, self.user_encoder, self.item_encoder)

    def _set_learned(self, learned: Mapping[str, Any]) -> None:
        super()._set_learned(learned)
        towers = {k[len("tower."):]: v for k, v in learned.items() if k.startswith("tower.")}
        if towers:
            self._set_towers(towers, len(self.users), len(self.items))

    def _set_towers(self, arrays: dict[str, np.ndarray], n_users: int, n_items: int) -> None:
        """The towers as trained (``user.<name>``, ``item.<name>`` arrays), on the CPU."""
        self._user_tower, self._item_tower = trained_towers(
            self.fitted_params, self.user_encoder, self.item_encoder, n_users, n_items, arrays)

    def item_embeddings(self) -> np.ndarray:
        """The item vectors without the tower bias column (item-to-item geometry)."""
        factors = super().item_embeddings()
        return factors[:, :-1] if self.tower_bias else factors

    def user_embeddings(self) -> np.ndarray:
        """The user vectors without the constant column that meets the items' bias."""
        factors = super().user_embeddings()
        return factors[:, :-1] if self.tower_bias else factors

    # -- new users and items ---------------------------------------------------------------------
    @torch.no_grad()
    def embed_new_users(
        self,
        features: pd.DataFrame | None = None,
        histories: Sequence[Sequence[Any]] | None = None,
    ) -> np.ndarray:
        """Query vectors for users not seen in training, from their features and/or history.

        ``features``: one row per user, columns named as in training (typed as
        :func:`recsys.data.features.read_features` gives them; absent columns count as
        missing). ``histories``: per user, the item ids they interacted with, most recent
        first (unknown ids are ignored). Returns float32 (n, factors): the scores against
        :meth:`item_vectors`.
        """
        return self._embed_new(features, histories)[0]

    def _embed_new(
        self, features: pd.DataFrame | None, histories: Sequence[Sequence[Any]] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`embed_new_users`, and the (row, item index) pairs of the histories."""
        self.check_fitted()
        n = len(features) if features is not None else len(histories or [])
        if histories is not None and len(histories) != n:
            raise ConfigError(f"{len(histories)} histories for {n} users with features")
        rows, idx = history_pairs(histories or [], self.items)
        return self._new_user_vectors(features, rows, idx, n), rows, idx

    def _new_user_vectors(self, features: pd.DataFrame | None, rows: np.ndarray, items: np.ndarray, n: int) -> np.ndarray:
        """The one new-user path (:meth:`embed_new_users`, :meth:`recommend_new_users`,
        :meth:`fold_in`): the user tower without an id, reading ``features`` (n rows, or None)
        and each row's first ``recent`` items of the (row, item index) pairs ``rows``,
        ``items``, given in order of preference (newest first)."""
        history = torch.as_tensor(first_items(rows, items, n, self.recent)) if self.recent else None
        enc = self.user_encoder.transform(features.reset_index(drop=True) if features is not None else None, n)
        return self._embed_without_ids(self._user_tower, FeatureRows(enc, torch.device("cpu")), history, n, users=True)

    @torch.no_grad()
    def _embed_without_ids(
        self, tower: Tower, side: FeatureRows, history: torch.Tensor | None, n: int, users: bool
    ) -> np.ndarray:
        """``n`` rows through ``tower`` from their features (and history) alone, as exported
        factors: new users, new items."""
        output = Output.of(self.fitted_params)

        def embed(idx: torch.Tensor) -> torch.Tensor:
            none = torch.zeros(len(idx))  # no id: these rows were not in training
            x = tower(none.long(), none, *side.rows(idx), None if history is None else history[idx])
            return output.finish(x.float(), users)

        return embed_in_chunks(embed, n, output.width, torch.device("cpu"))  # memory bounded for any n

    def check_user_features(self, columns: Sequence[str], source: Any = "the user feature table") -> None:
        """Refuse new users' features that the user tower cannot read: a model trained
        without user features, or a table sharing no column with training (every user
        would get the same featureless embedding)."""
        enc = self.user_encoder
        known = {*enc.categorical, *enc.multi, *enc.numeric}
        if not known:
            raise ConfigError(f"this {self.name} model was trained without user features; "
                              "drop the user features (a --history alone is embedded)")
        if not known & set(columns):
            raise ConfigError(f"{source}: no column the model was trained with (it knows {', '.join(sorted(known))})")

    def fold_in(self, history: Interactions, **options: Any) -> FoldIn:
        """New users from a history and, when attached to it, their features.

        ``history.user_features`` (see :func:`recsys.data.features.with_new_users`) feeds
        the user tower; users with features and no history entries are embedded too.
        """
        features = history.user_features
        # The user tower reads each user's latest items, as in training (by timestamp when
        # the history has them), not the first ``recent`` item columns.
        pairs = recent_pairs(history.reindex(history.users, self.items)[0])
        folded = super().fold_in(history, user_features=features, pairs=pairs, **options)
        if features is None:
            return folded
        return FeatureFoldIn(folded.users, folded.vectors, folded.seen, folded.dropped_entries,
                             rows_with_values(features))

    def _fold_in(
        self, matrix: sp.csr_matrix, feedback: str, user_features: pd.DataFrame | None = None,
        pairs: tuple[np.ndarray, np.ndarray] | None = None, **options: Any
    ) -> tuple[np.ndarray, None]:
        """New users from history rows of ``matrix`` (n, n_items) and, optionally, their
        ``user_features`` (n rows, aligned with ``matrix``): no retraining, the towers as trained.
        ``pairs``: the (row, item index) entries of the history, each row's newest first
        (:func:`~recsys.models.two_tower.encoding.recent_pairs`); by default the matrix's, in its order."""
        n = matrix.shape[0]
        if pairs is None:
            pairs = (np.repeat(np.arange(n), np.diff(matrix.indptr)), matrix.indices)
        return self._new_user_vectors(user_features, *pairs, n), None

    def embed_new_items(self, features: pd.DataFrame) -> np.ndarray:
        """Item vectors from features alone (no id embedding), shape (n, factors).

        For items that arrive after training: their dot products with
        :meth:`user_vectors` rank them like any catalogue item.
        """
        self.check_fitted()
        n = len(features)
        side = FeatureRows(self.item_encoder.transform(features.reset_index(drop=True), n), torch.device("cpu"))
        return self._embed_without_ids(self._item_tower, side, None, n, users=False)

    def recommend_new_users(
        self,
        features: pd.DataFrame | None = None,
        histories: Sequence[Sequence[Any]] | None = None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (item ids, scores), each (n, k), for new users (see :meth:`embed_new_users`).

        Items in a user's history are left out when ``exclude_seen``.
        """
        vectors, rows, cols = self._embed_new(features, histories)
        n = len(vectors)
        exclude = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, len(self.items)))
        exclude.sum_duplicates()
        idx, scores = self.recommend_indices(
            np.zeros(n, np.int64), k, exclude_seen=exclude_seen, user_vectors=vectors, exclude=exclude
        )
        return self.item_ids(idx), scores

    # -- persistence ---------------------------------------------------------------------------
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        spec = {
            "user_encoder": self.user_encoder.to_dict(),
            "item_encoder": self.item_encoder.to_dict(),
            "n_users": len(self.users),
            "n_items": len(self.items),
        }
        return {"towers_json": np.frombuffer(json.dumps(spec).encode("utf-8"), dtype=np.uint8),
                **tower_arrays(self._user_tower, self._item_tower)}

    def _load_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "towers_json" not in arrays:
            raise ModelFormatError("two-tower model lacks its tower description (towers_json)")
        try:
            spec = json.loads(arrays["towers_json"].tobytes().decode("utf-8"))
            self.user_encoder = FeatureEncoder.from_dict(spec["user_encoder"])
            self.item_encoder = FeatureEncoder.from_dict(spec["item_encoder"])
            self._set_towers(arrays, int(spec["n_users"]), int(spec["n_items"]))
        except (ValueError, KeyError, TypeError, RuntimeError, ConfigError) as exc:
            raise ModelFormatError(f"two-tower weights do not match their description ({exc})") from None
