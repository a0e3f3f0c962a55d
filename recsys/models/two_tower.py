"""Two-tower retrieval model: users and items embedded from ids, features and history.

User tower: user-id embedding, user feature embeddings (categorical, multi-valued, numeric)
and the mean of the embeddings of the user's most recent items, through an MLP to ``d``.
Item tower: item-id embedding and item feature embeddings through an MLP to ``d``. The
score is the dot product (or the cosine divided by a temperature).

Training: in-batch sampled softmax, each batch's other positives serving as negatives,
with the sampling-bias (logQ) correction for popular items (Yi et al., 2019), optional
extra uniformly sampled negatives (mixed negative sampling, Yang et al., 2020), and
bfloat16 autocast on CUDA. Id embeddings start at zero and are dropped at random during
training (``id_dropout``), so the towers also learn to embed from features alone: that is
what gives items without interactions (cold items) and new users useful embeddings.

After ``fit``, ``user_factors`` and ``item_factors`` are the towers' outputs, so exact and
approximate search, evaluation, ``recommend`` and ``similar_items`` work unchanged; cold
items are in the catalogue with embeddings from their features.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recsys.checkpoint import check_arrays
from recsys.data.features import EncodedFeatures, FeatureEncoder, rows_with_values
from recsys.data.interactions import Interactions
from recsys.device import resolve_device
from recsys.errors import ConfigError, ModelFormatError
from recsys.models.base import FoldIn
from recsys.models.mf import NegativeSampler
from recsys.models.training import (
    IterativeRecommender,
    minibatch_epoch,
    optimizer_state,
    set_optimizer_state,
)
from recsys.seeding import derive_seed

Similarity = Literal["dot", "cosine"]
Schedule = Literal["constant", "cosine"]


class Tower(nn.Module):
    """Id embedding + feature embeddings (+ pooled history) -> MLP -> ``factors``.

    Index 0 of every feature table means "missing" and embeds to zero.
    """

    def __init__(
        self,
        n_ids: int,
        categorical: Sequence[int],
        multi: Sequence[int],
        n_numeric: int,
        factors: int,
        feature_dim: int,
        hidden: int,
        history_items: int = 0,
        extra_outputs: int = 0,
    ) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_ids, factors)
        nn.init.zeros_(self.ids.weight)  # rows never trained (cold ids) stay at zero
        self.categorical = nn.ModuleList(nn.Embedding(c, feature_dim, padding_idx=0) for c in categorical)
        self.multi = nn.ModuleList(nn.Embedding(c, feature_dim, padding_idx=0) for c in multi)
        self.recent = nn.Embedding(history_items + 1, factors, padding_idx=0) if history_items else None
        if self.recent is not None:
            nn.init.normal_(self.recent.weight, 0.0, 0.01)
            with torch.no_grad():
                self.recent.weight[0].zero_()
        width = factors + feature_dim * (len(categorical) + len(multi)) + n_numeric
        width += factors if self.recent is not None else 0
        out = factors + extra_outputs
        if hidden:
            self.mlp: nn.Module = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out))
        else:
            self.mlp = nn.Linear(width, out)

    def forward(
        self,
        ids: torch.Tensor,
        keep_id: torch.Tensor,
        categorical: torch.Tensor,
        multi: Sequence[torch.Tensor],
        numeric: torch.Tensor,
        history: torch.Tensor | None = None,
        drop_from_history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed a batch of B rows.

        ``ids`` (B,), ``keep_id`` (B,) 0/1 (0: unknown id or dropped), ``categorical``
        (B, C), ``multi`` C' tensors (B, L), ``numeric`` (B, N); ``history`` (B, H) item
        indices + 1 (0 = padding); ``drop_from_history`` (B,) item indices + 1 to leave
        out of the mean (the training target itself), 0 for none. Returns (B, factors).
        """
        parts = [self.ids(ids) * keep_id[:, None]]
        parts += [emb(categorical[:, j]) for j, emb in enumerate(self.categorical)]
        for emb, values in zip(self.multi, multi):
            count = (values > 0).sum(1, keepdim=True).clamp(min=1)
            parts.append(emb(values).sum(1) / count)
        parts.append(numeric)
        if self.recent is not None:
            assert history is not None
            total = self.recent(history).sum(1)
            count = (history > 0).sum(1, keepdim=True)
            if drop_from_history is not None:
                # The target is in the user's own history during training: take it out so
                # the model cannot learn "recommend what is in the history".
                present = (history == drop_from_history[:, None]).any(1, keepdim=True) & (drop_from_history[:, None] > 0)
                total = total - self.recent(drop_from_history) * present
                count = count - present.long()
            parts.append(total / count.clamp(min=1))
        return self.mlp(torch.cat(parts, dim=1))


class _Side:
    """One side's encoded feature tables as device tensors, gathered per batch."""

    def __init__(self, enc: EncodedFeatures, device: torch.device) -> None:
        self.categorical = torch.as_tensor(enc.categorical, device=device)
        self.multi = [torch.as_tensor(m, device=device) for m in enc.multi]
        self.numeric = torch.as_tensor(enc.numeric, device=device)

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        return self.categorical[index], [m[index] for m in self.multi], self.numeric[index]


def cosine_decay(base: float, step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total``: ``base`` at 0, down to 0 at ``total``."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def first_items(rows: np.ndarray, items: np.ndarray, n_rows: int, length: int) -> np.ndarray:
    """Each row's first ``length`` items (+1; 0 pads), from (row, item index) pairs grouped
    by row in order of preference. Returns int64 (n_rows, max(1, length))."""
    out = np.zeros((n_rows, max(1, length)), dtype=np.int64)
    if length <= 0 or len(rows) == 0:
        return out
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)  # rank within its row
    keep = position < length
    out[rows[keep], position[keep]] = np.asarray(items)[keep].astype(np.int64) + 1
    return out


def recent_item_matrix(data: Interactions, length: int) -> np.ndarray:
    """Each user's ``length`` most recent items (+1; 0 pads), by timestamp when known.

    Returns int64 (n_users, max(1, length)).
    """
    rows = data.row_indices
    time = data.timestamps if data.timestamps is not None else np.zeros(len(rows), dtype=np.int64)
    order = np.lexsort((-time, rows))  # by user, newest first
    return first_items(rows[order], data.matrix.indices[order], data.n_users, length)


@dataclass
class FeatureFoldIn(FoldIn):
    """A :class:`FoldIn` where users with features but no usable history still count."""

    with_features: np.ndarray | None = None

    def has_history(self) -> np.ndarray:
        rows = super().has_history()
        return rows if self.with_features is None else rows | self.with_features


class TwoTower(IterativeRecommender):
    """Two-tower model with user and item features (see the module notes).

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

    # -- building ------------------------------------------------------------------------------
    def _build(self, n_users: int, n_items: int) -> None:
        ucat, umulti, unum = self.user_encoder.cardinalities
        icat, imulti, inum = self.item_encoder.cardinalities
        # Built under a forked, seeded RNG: the global torch RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.random_state))
            self._user_tower = Tower(n_users, ucat, umulti, unum, self.factors, self.feature_dim, self.hidden, n_items if self.recent else 0)
            self._item_tower = Tower(n_items, icat, imulti, inum, self.factors, self.feature_dim, self.hidden,
                                     extra_outputs=int(self.tower_bias))

    def _init_training(self, data: Interactions) -> None:
        dev = resolve_device(self.device)
        self._device = dev
        self.user_encoder = FeatureEncoder.fit(data.user_features, self.max_values)
        self.item_encoder = FeatureEncoder.fit(data.item_features, self.max_values)
        self._build(data.n_users, data.n_items)
        self._user_tower.to(dev)
        self._item_tower.to(dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(derive_seed(self.random_state) + 1)
        self._gen = gen
        self._users = _Side(self.user_encoder.transform(data.user_features, data.n_users), dev)
        self._items = _Side(self.item_encoder.transform(data.item_features, data.n_items), dev)
        self._recent = torch.as_tensor(recent_item_matrix(data, self.recent), device=dev)
        self._rows = torch.as_tensor(data.row_indices, device=dev)
        self._cols = torch.as_tensor(data.matrix.indices.astype(np.int64), device=dev)
        counts = data.item_counts()
        # In-batch negatives are the batch's positives: item j turns up with probability
        # count_j / nnz per row, so B * that is its expected count (the logQ term).
        self._inbatch = NegativeSampler(counts, "popularity", gen, dev, power=1.0)
        self._warm = torch.as_tensor(np.flatnonzero(counts > 0), device=dev)
        self._total_steps = self.epochs * math.ceil(data.matrix.nnz / self.batch_size)
        params = [*self._user_tower.parameters(), *self._item_tower.parameters()]
        self._opt = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.regularization)
        use_amp = self.mixed_precision and dev.type == "cuda"
        self._autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext

    def _embed_users(self, users: torch.Tensor, keep: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        cat, multi, num = self._users.rows(users)
        history = self._recent[users] if self.recent else None
        return self._user_tower(users, keep, cat, multi, num, history, drop)

    def _embed_items(self, items: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        cat, multi, num = self._items.rows(items)
        return self._item_tower(items, keep, cat, multi, num)

    def _keep(self, n: int) -> torch.Tensor:
        if self.id_dropout <= 0:
            return torch.ones(n, device=self._device)
        return (torch.rand(n, generator=self._gen, device=self._device) >= self.id_dropout).float()


    # -- training ------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self._user_tower.train()
        self._item_tower.train()
        n = self._rows.shape[0]
        done = (epoch - 1) * math.ceil(n / self.batch_size)

        def schedule(step: int) -> None:
            for group in self._opt.param_groups:
                group["lr"] = cosine_decay(self.learning_rate, done + step, self._total_steps)

        return minibatch_epoch(n, self.batch_size, self._gen, self._opt,
                               lambda b: self._batch_loss(self._rows[b], self._cols[b]),
                               before_step=schedule if self.lr_schedule == "cosine" else None,
                               autocast=self._autocast)

    def _batch_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        b = len(users)
        u = self._embed_users(users, self._keep(b), items + 1 if self.recent else None)
        v = self._embed_items(items, self._keep(b))
        u, v = self._finish(u.float(), users=True), self._finish(v.float(), users=False)
        logits = u @ v.T
        hit = (items[None, :] == items[:, None]) & ~torch.eye(b, dtype=torch.bool, device=self._device)
        strength = float(self.logq)
        if strength:
            logits = logits - strength * (self._inbatch.log_q(items) + math.log(b))[None, :]
        logits = logits.masked_fill(hit, -math.inf)  # the same item again is not a negative
        if self.uniform_negatives:
            pick = torch.randint(len(self._warm), (self.uniform_negatives,), generator=self._gen, device=self._device)
            neg = self._warm[pick]
            vn = self._finish(self._embed_items(neg, self._keep(len(neg))).float(), users=False)
            extra = u @ vn.T
            if strength:
                extra = extra - strength * math.log(self.uniform_negatives / len(self._warm))
            extra = extra.masked_fill(neg[None, :] == items[:, None], -math.inf)
            logits = torch.cat([logits, extra], dim=1)
        target = torch.arange(b, device=self._device)
        return F.cross_entropy(logits, target)

    def _tower_arrays(self) -> dict[str, np.ndarray]:
        """Both towers' weights as ``user.<name>`` / ``item.<name>`` arrays (saved models,
        checkpoints and early-stopping snapshots share this form)."""
        return {f"{prefix}.{name}": tensor.detach().cpu().numpy().copy()
                for prefix, tower in (("user", self._user_tower), ("item", self._item_tower))
                for name, tensor in tower.state_dict().items()}

    def _load_tower_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        towers = (("user", self._user_tower), ("item", self._item_tower))
        check_arrays(arrays, {f"{prefix}.{name}": (tuple(t.shape), "f")
                              for prefix, tower in towers for name, t in tower.state_dict().items()})
        for prefix, tower in towers:
            device = next(tower.parameters()).device
            tower.load_state_dict({name: torch.as_tensor(arrays[f"{prefix}.{name}"], device=device)
                                   for name in tower.state_dict()})

    def _training_state(self) -> dict[str, np.ndarray]:
        state = self._tower_arrays()
        # The generator draws the shuffles, id dropout and negatives.
        state["generator"] = self._gen.get_state().numpy().copy()
        state.update(optimizer_state(self._opt))
        return state

    def _set_training_state(self, state: dict[str, np.ndarray]) -> None:
        check_arrays(state, {"generator": (tuple(self._gen.get_state().shape), "u")})
        self._load_tower_arrays(state)
        self._gen.set_state(torch.from_numpy(state["generator"]))
        set_optimizer_state(self._opt, state)

    @torch.no_grad()
    def _export(self) -> None:
        self._user_tower.eval()
        self._item_tower.eval()
        self.user_factors = self._all(self._embed_users, self._recent.shape[0], users=True)
        self.item_factors = self._all(self._embed_items, self._items.numeric.shape[0], users=False)

    def _all(self, embed: Any, n: int, users: bool, chunk: int = 8192) -> np.ndarray:
        """``embed(rows, keep)`` for rows 0..n-1 in chunks, finished into exported factors."""
        out = []
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(start + chunk, n), device=self._device)
            x = embed(idx, torch.ones(len(idx), device=self._device)).float()
            out.append(self._finish(x, users).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.factors + int(self.tower_bias)), np.float32)

    def item_embeddings(self) -> np.ndarray:
        """The item vectors without the tower bias column (item-to-item geometry)."""
        factors = super().item_embeddings()
        return factors[:, :-1] if self.tower_bias else factors

    def _finish(self, x: torch.Tensor, users: bool) -> torch.Tensor:
        """Tower output to exported factors: with cosine, unit items and users scaled by
        1/temperature, so a plain dot product is the model's score. With ``tower_bias`` the
        item tower's last output is the item's bias, matched by a constant 1 in the users'
        vectors."""
        bias = None
        if self.tower_bias:
            if users:
                bias = torch.ones(len(x), 1, device=x.device, dtype=x.dtype)
            else:
                x, bias = x[:, :-1], x[:, -1:]
        if self.similarity == "cosine":
            x = F.normalize(x, dim=1)
            x = x / self.temperature if users else x
        return x if bias is None else torch.cat([x, bias], dim=1)

    def _snapshot(self) -> dict[str, Any]:
        # Early stopping restores the best epoch: the towers too, not only the factors, so
        # that new users are scored by the same model as the exported factors.
        # Plain arrays under "tower.", so that a checkpoint can keep the best epoch too.
        snap = super()._snapshot()
        snap.update({f"tower.{k}": v for k, v in self._tower_arrays().items()})
        return snap

    def _restore(self, snapshot: dict[str, Any]) -> None:
        towers = {k[len("tower."):]: v for k, v in snapshot.items() if k.startswith("tower.")}
        super()._restore({k: v for k, v in snapshot.items() if not k.startswith("tower.")})
        if towers:
            self._load_tower_arrays(towers)

    def _end_training(self) -> None:
        for name in ("_opt", "_rows", "_cols", "_inbatch", "_warm", "_total_steps", "_gen", "_users", "_items", "_recent", "_autocast"):
            self.__dict__.pop(name, None)
        self._user_tower.cpu().eval()
        self._item_tower.cpu().eval()
        self._device = torch.device("cpu")

    # -- new users -----------------------------------------------------------------------------
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
        rows, idx = self._history_pairs(histories or [])
        return self._new_user_vectors(features, first_items(rows, idx, n, self.recent)), rows, idx

    def _history_pairs(self, histories: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(row, item index) of every known item of the histories, in their given order."""
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        flat = list(itertools.chain.from_iterable(histories))
        if not flat:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows = np.repeat(np.arange(len(histories)), lengths)
        idx = np.atleast_1d(self.items.index(flat))  # one lookup for all users
        known = idx >= 0
        rows, idx = rows[known], idx[known].astype(np.int64)
        # An item repeated in a history counts once, as in training (the matrix dedupes it).
        _, first = np.unique(rows * len(self.items) + idx, return_index=True)
        first.sort()
        return rows[first], idx[first]

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

    @torch.no_grad()
    def _new_user_vectors(self, features: pd.DataFrame | None, hist: np.ndarray) -> np.ndarray:
        """The user tower without an id: ``features`` rows and ``hist`` (n, H) item indices + 1."""
        n = len(hist)
        enc = self.user_encoder.transform(features.reset_index(drop=True) if features is not None else None, n)
        side, history = _Side(enc, torch.device("cpu")), torch.as_tensor(hist)

        def embed(idx: torch.Tensor, _keep: torch.Tensor) -> torch.Tensor:
            none = torch.zeros(len(idx))  # no id: these users were not in training
            return self._user_tower(none.long(), none, *side.rows(idx), history[idx] if self.recent else None)

        return self._all(embed, n, users=True)  # in chunks: memory bounded for any number of users

    def fold_in(self, history: Interactions, **options: Any) -> FoldIn:
        """New users from a history and, when attached to it, their features.

        ``history.user_features`` (see :func:`recsys.data.features.with_new_users`) feeds
        the user tower; users with features and no history entries are embedded too.
        """
        features = history.user_features
        # The user tower reads each user's latest items, as in training (by timestamp when
        # the history has them), not the first ``recent`` item columns.
        recent = recent_item_matrix(history.reindex(history.users, self.items)[0], self.recent)
        folded = super().fold_in(history, user_features=features, recent_items=recent, **options)
        if features is None:
            return folded
        return FeatureFoldIn(folded.users, folded.vectors, folded.seen, folded.dropped_entries,
                             rows_with_values(features))

    def _fold_in(
        self, matrix: sp.csr_matrix, feedback: str, user_features: pd.DataFrame | None = None,
        recent_items: np.ndarray | None = None, **options: Any
    ) -> tuple[np.ndarray, None]:
        """New users from history rows of ``matrix`` (n, n_items) and, optionally, their
        ``user_features`` (n rows, aligned with ``matrix``): no retraining, the towers as trained.
        ``recent_items`` (n, recent): each row's latest item indices + 1 (:func:`recent_item_matrix`)."""
        if recent_items is None:
            n = matrix.shape[0]
            rows = np.repeat(np.arange(n), np.diff(matrix.indptr))
            recent_items = first_items(rows, matrix.indices, n, self.recent)
        return self._new_user_vectors(user_features, recent_items), None

    @torch.no_grad()
    def embed_new_items(self, features: pd.DataFrame) -> np.ndarray:
        """Item vectors from features alone (no id embedding), shape (n, factors).

        For items that arrive after training: their dot products with
        :meth:`user_vectors` rank them like any catalogue item.
        """
        self.check_fitted()
        n = len(features)
        side = _Side(self.item_encoder.transform(features.reset_index(drop=True), n), torch.device("cpu"))

        def embed(idx: torch.Tensor, _keep: torch.Tensor) -> torch.Tensor:
            none = torch.zeros(len(idx))
            return self._item_tower(none.long(), none, *side.rows(idx))

        return self._all(embed, n, users=False)

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
                **self._tower_arrays()}

    def _load_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "towers_json" not in arrays:
            raise ModelFormatError("two-tower model lacks its tower description (towers_json)")
        try:
            spec = json.loads(arrays["towers_json"].tobytes().decode("utf-8"))
            self.user_encoder = FeatureEncoder.from_dict(spec["user_encoder"])
            self.item_encoder = FeatureEncoder.from_dict(spec["item_encoder"])
            self._build(int(spec["n_users"]), int(spec["n_items"]))
            self._load_tower_arrays(arrays)
            self._user_tower.eval()
            self._item_tower.eval()
        except (ValueError, KeyError, TypeError, RuntimeError, ConfigError) as exc:
            raise ModelFormatError(f"two-tower weights do not match their description ({exc})") from None
        self._device = torch.device("cpu")
