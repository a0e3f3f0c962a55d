"""Matrix factorization in PyTorch: explicit (MSE with biases) and implicit (BPR, sampled softmax).

Everything per batch happens on the device: shuffling, negative sampling, the loss. The
only host sync per epoch is reading the summed loss at its end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recsys.checkpoint import check_arrays
from recsys.data.interactions import Interactions
from recsys.device import resolve_device
from recsys.errors import ConfigError
from recsys.models.training import (
    IterativeRecommender,
    minibatch_epoch,
    optimizer_state,
    set_optimizer_state,
)
from recsys.seeding import derive_seed

Loss = Literal["softmax", "bpr", "mse"]
Sampling = Literal["uniform", "popularity"]


class NegativeSampler:
    """Draws negative items on the device: uniform, or by popularity^power (logQ known).

    ``log_q(items)`` is the log-probability of drawing each item, for the sampling-bias
    correction of sampled softmax (Yi et al., 2019; Bengio and Senecal, 2008).
    """

    def __init__(
        self,
        item_counts: np.ndarray,
        kind: Sampling,
        generator: torch.Generator,
        device: torch.device,
        power: float = 0.75,
    ) -> None:
        self.kind = kind
        self.n_items = len(item_counts)
        self.generator = generator
        self.device = device
        if kind == "popularity":
            weights = np.power(item_counts.astype(np.float64) + 1.0, power)
            probs = weights / weights.sum()
            self._cdf = torch.as_tensor(np.cumsum(probs), dtype=torch.float64, device=device)
            self._log_q = torch.as_tensor(np.log(probs), dtype=torch.float32, device=device)
        elif kind == "uniform":
            self._log_q = None
        else:
            raise ConfigError(f"unknown sampling {kind!r}; use uniform or popularity")

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.randint(self.n_items, shape, generator=self.generator, device=self.device)
        u = torch.rand(shape, generator=self.generator, device=self.device, dtype=torch.float64)
        return torch.searchsorted(self._cdf, u).clamp_(max=self.n_items - 1)

    def log_q(self, items: torch.Tensor) -> torch.Tensor | float:
        if self._log_q is None:
            return 0.0  # uniform: a constant shift, which softmax ignores
        return self._log_q[items]


def regularization_in_effect(loss: Loss, regularization: float | None) -> float:
    """The L2 weight: ``regularization``, or the loss's default when None (0.1 for MSE,
    0.01 for softmax and BPR)."""
    if regularization is not None:
        return float(regularization)
    return 0.1 if loss == "mse" else 1e-2


class MatrixFactorization(IterativeRecommender):
    """Dot-product matrix factorization trained with minibatch SGD (SparseAdam) in torch.

    Parameters
    ----------
    factors : int
        Embedding dimension.
    epochs : int
        Passes over the training entries.
    learning_rate : float
        SparseAdam step size.
    regularization : float, optional
        L2 weight on the embeddings (and biases) touched by each batch; None picks the
        loss's default (0.01 for softmax and BPR, 0.1 for MSE).
    loss : {"softmax", "bpr", "mse"}
        ``softmax``: sampled softmax over the positive and ``negatives`` sampled items,
        with the logQ correction when sampling by popularity. ``bpr``: pairwise
        log-sigmoid loss of each positive against each of the ``negatives``. ``mse``:
        explicit ratings with global, user and item biases (predicts ratings).
    negatives : int
        Sampled negative items per batch, shared by the batch's positives.
    sampling : {"uniform", "popularity"}
        How negatives are drawn (popularity: proportional to count^0.75).
    batch_size : int
        Training entries per step.
    init_scale : float
        Standard deviation of the initial embeddings.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    random_state : int
        Seed; on the CPU the same seed gives the same factors.
    """

    name = "mf"

    def __init__(
        self,
        factors: int = 64,
        epochs: int = 20,
        learning_rate: float = 0.01,
        regularization: float | None = None,
        loss: Loss = "bpr",
        negatives: int = 256,
        sampling: Sampling = "uniform",
        batch_size: int = 1024,
        init_scale: float = 0.1,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.loss = loss
        self.negatives = negatives
        self.sampling = sampling
        self.batch_size = batch_size
        self.init_scale = init_scale
        self.device = device
        self.random_state = random_state

    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        return self.loss == "mse"

    def _validate_params(self) -> None:
        if self.loss not in ("softmax", "bpr", "mse"):
            raise ConfigError(f"unknown loss {self.loss!r}; use softmax, bpr or mse")
        if self.sampling not in ("uniform", "popularity"):
            raise ConfigError(f"unknown sampling {self.sampling!r}; use uniform or popularity")
        for name in ("factors", "epochs", "batch_size", "negatives"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.learning_rate <= 0 or self.reg < 0 or self.init_scale <= 0:
            raise ConfigError("learning_rate and init_scale must be > 0, regularization >= 0")

    @property
    def reg(self) -> float:
        """The L2 weight in effect (``regularization``, or the loss's default)."""
        return regularization_in_effect(self.loss, self.regularization)

    def create_trainer(self, data: Interactions, params: Mapping[str, Any]) -> MFTrainer:
        return MFTrainer(data, params)

    def _fold_in(
        self, matrix: sp.csr_matrix, feedback: str, *, steps: int = 100, learning_rate: float = 0.05, **_: object
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """MSE: the user's ridge regression with item factors and biases fixed (closed form).
        BPR and softmax: ``steps`` Adam steps on the user's loss (see
        :func:`recsys.models.fold_in.ranking_gradient_fold_in`)."""
        from recsys.models.fold_in import ranking_gradient_fold_in, ridge_with_bias

        if self.loss == "mse":
            if feedback != "rating":
                raise ConfigError("this model predicts ratings; fold in a history of ratings (feedback 'rating')")
            return ridge_with_bias(self.item_factors, self.item_bias, self.global_bias, matrix, self.reg)
        factors = ranking_gradient_fold_in(
            self.item_factors, matrix, self.loss, self.reg, steps=steps, learning_rate=learning_rate,
            negatives=self.negatives, seed=derive_seed(self.random_state),
        )
        return factors, None


class MFTrainer:
    """One fit of :class:`MatrixFactorization`: the embeddings (and biases), SparseAdam, the
    training entries on the device and the generator that shuffles and draws negatives."""

    def __init__(self, data: Interactions, params: Mapping[str, Any]) -> None:
        self.loss: Loss = params["loss"]
        if self.loss == "mse" and data.feedback != "rating":
            raise ConfigError("loss 'mse' predicts ratings and needs rating data (feedback 'rating')")
        self.batch_size, self.negatives = int(params["batch_size"]), int(params["negatives"])
        self.reg = regularization_in_effect(self.loss, params["regularization"])
        dev = resolve_device(params["device"])
        gen = torch.Generator(device=dev)
        gen.manual_seed(derive_seed(params["random_state"]))
        self.gen = gen
        d = params["factors"]
        self.P = torch.nn.Embedding(data.n_users, d, sparse=True, device=dev)
        self.Q = torch.nn.Embedding(data.n_items, d, sparse=True, device=dev)
        with torch.no_grad():
            self.P.weight.normal_(0.0, params["init_scale"], generator=gen)
            self.Q.weight.normal_(0.0, params["init_scale"], generator=gen)
        tables = [self.P.weight, self.Q.weight]
        self.bu: torch.nn.Embedding | None = None
        self.bi: torch.nn.Embedding | None = None
        self.mu = 0.0
        if self.loss == "mse":
            self.bu = torch.nn.Embedding(data.n_users, 1, sparse=True, device=dev)
            self.bi = torch.nn.Embedding(data.n_items, 1, sparse=True, device=dev)
            with torch.no_grad():
                self.bu.weight.zero_()
                self.bi.weight.zero_()
            tables += [self.bu.weight, self.bi.weight]
            self.mu = float(data.matrix.data.mean())
        self.opt = torch.optim.SparseAdam(tables, lr=params["learning_rate"])
        self.rows = torch.as_tensor(data.row_indices, device=dev)
        self.cols = torch.as_tensor(data.matrix.indices.astype(np.int64), device=dev)
        self.vals = torch.as_tensor(data.matrix.data, device=dev)
        self.sampler = NegativeSampler(data.item_counts(), params["sampling"], gen, dev)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        return minibatch_epoch(self.rows.shape[0], self.batch_size, self.gen, self.opt,
                               lambda b: self.batch_loss(self.rows[b], self.cols[b], self.vals[b]))

    def batch_loss(self, users: torch.Tensor, items: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        p = self.P(users)
        q = self.Q(items)
        reg = (p.pow(2).sum(1) + q.pow(2).sum(1)).mean()
        if self.bu is not None and self.bi is not None:  # mse
            bu, bi = self.bu(users).squeeze(1), self.bi(items).squeeze(1)
            pred = (p * q).sum(1) + bu + bi + self.mu
            reg = reg + (bu.pow(2) + bi.pow(2)).mean()
            return F.mse_loss(pred, values) + self.reg * reg
        # Negatives are shared across the batch: one (B, d) x (d, n) product instead of a
        # (B, n, d) gather, which is what keeps many negatives cheap on a CPU.
        neg_items = self.sampler.sample((self.negatives,))
        qn = self.Q(neg_items)
        reg = reg + qn.pow(2).sum(1).mean() * (self.negatives / len(users))
        pos = (p * q).sum(1)
        neg = p @ qn.T
        hit = neg_items[None, :] == items[:, None]  # accidental hits: the positive itself
        if self.loss == "bpr":
            pairs = F.logsigmoid(pos[:, None] - neg).masked_fill(hit, 0.0)
            return -pairs.sum() / (~hit).sum().clamp(min=1) + self.reg * reg
        neg = (neg - self.sampler.log_q(neg_items)).masked_fill(hit, -math.inf)
        logits = torch.cat([(pos - self.sampler.log_q(items))[:, None], neg], dim=1)
        return -F.log_softmax(logits, dim=1)[:, 0].mean() + self.reg * reg

    def _tables(self) -> dict[str, torch.nn.Embedding]:
        tables = {"P": self.P, "Q": self.Q, "bu": self.bu, "bi": self.bi}
        return {k: t for k, t in tables.items() if t is not None}

    def export(self) -> dict[str, np.ndarray]:
        learned = {"user_factors": _array(self.P), "item_factors": _array(self.Q)}
        if self.bu is not None and self.bi is not None:
            learned.update(user_bias=_array(self.bu)[:, 0].copy(), item_bias=_array(self.bi)[:, 0].copy(),
                           global_bias=np.asarray(self.mu))
        return learned

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {k: _array(t) for k, t in self._tables().items()}
        state["generator"] = self.gen.get_state().numpy().copy()  # negatives and shuffles
        state.update(optimizer_state(self.opt))
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        tables = self._tables()
        expected = {k: (tuple(t.weight.shape), "f") for k, t in tables.items()}
        check_arrays(state, {**expected, "generator": (tuple(self.gen.get_state().shape), "u")})
        with torch.no_grad():
            for k, t in tables.items():
                t.weight.copy_(torch.from_numpy(state[k]))
        self.gen.set_state(torch.from_numpy(state["generator"]))
        set_optimizer_state(self.opt, state)

    def finalize(self) -> None:
        """Nothing to release: the tensors go with the trainer."""


def _array(table: torch.nn.Embedding) -> np.ndarray:
    """An embedding table's weights as a numpy copy."""
    return table.weight.detach().cpu().numpy().copy()
