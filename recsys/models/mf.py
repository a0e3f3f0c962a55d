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

from recsys import distributed
from recsys.checkpoint import check_arrays
from recsys.data.interactions import Interactions
from recsys.device import resolve_device
from recsys.errors import ConfigError
from recsys.models.row_adam import RowAdam
from recsys.models.training import IterativeRecommender, minibatch_epoch
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
    """Dot-product matrix factorization trained with minibatch lazy Adam in torch.

    Parameters
    ----------
    factors : int
        Embedding dimension.
    epochs : int
        Passes over the training entries.
    learning_rate : float
        Adam step size (lazy: a step moves only the rows its batch touched).
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
    data_parallel = True

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
    """One fit of :class:`MatrixFactorization`: one table holding the user rows then the item
    rows (with a bias column for MSE), its lazy Adam, the training entries on the device and
    the generator that shuffles and draws negatives.

    One table, so that a step gathers, differentiates and updates once rather than once per
    table; MSE's biases as the last column, so that the L2 term and Adam treat them exactly
    as before they shared the table (rows ``[p, b_u]`` and ``[q, b_i]``).
    """

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
        self.n_users, self.n_items, self.d = data.n_users, data.n_items, int(params["factors"])
        width = self.d + (1 if self.loss == "mse" else 0)
        self.table = torch.zeros((data.n_users + data.n_items, width), device=dev)
        with torch.no_grad():
            self.table[:data.n_users, :self.d].normal_(0.0, params["init_scale"], generator=gen)
            self.table[data.n_users:, :self.d].normal_(0.0, params["init_scale"], generator=gen)
        self.mu = float(data.matrix.data.mean()) if self.loss == "mse" else 0.0
        self.opt = RowAdam(self.table, lr=params["learning_rate"])
        self.rows = torch.as_tensor(data.row_indices, device=dev)
        self.cols = torch.as_tensor(data.matrix.indices.astype(np.int64), device=dev)
        self.vals = torch.as_tensor(data.matrix.data, device=dev)
        self.sampler = NegativeSampler(data.item_counts(), params["sampling"], gen, dev)
        self.step_work = float(self.batch_size * self.d * (1 if self.loss == "mse" else self.negatives))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        figures = minibatch_epoch(self.rows.shape[0], self.batch_size, self.gen, self.train_step)
        distributed.resync(self.table, self.opt.exp_avg, self.opt.exp_avg_sq)  # GPUs only; see there
        return figures

    def train_step(self, batch: torch.Tensor, _step: int) -> torch.Tensor:
        users, items = self.rows[batch], self.cols[batch]
        negatives = None if self.loss == "mse" else self.sampler.sample((self.negatives,))
        parts = [users, items + self.n_users] + ([] if negatives is None else [negatives + self.n_users])
        indices = torch.cat(parts)
        if self.loss == "bpr":
            loss, grad = self.bpr_loss_and_gradient(self.table[indices], items, negatives)
        else:
            rows = self.opt.gather(indices)
            loss = self.batch_loss(rows, items, negatives, self.vals[batch] if negatives is None else None)
            loss.backward()
            loss, grad = loss.detach(), rows.grad
        # Data-parallel, every process applies every process's rows (the table is not an
        # nn.Module for DDP, and a dense all-reduce would send all of it); alone, its own.
        self.opt.apply(*distributed.gather_rows(indices, grad))
        return loss

    @torch.no_grad()
    def bpr_loss_and_gradient(
        self, rows: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`batch_loss` for BPR and its gradient with respect to ``rows``, by hand.

        The loss is ``sum softplus(x) / pairs`` over ``x = p.qn - p.q`` (users by negatives),
        so its gradient is ``sigmoid(x) / pairs``, taken in place of ``x``: two passes over
        the (B, n) matrix fewer than autograd's, and none of its bookkeeping, per step."""
        b = len(items)
        p, q, qn = rows[:b], rows[b:2 * b], rows[2 * b:]
        drawn = negatives.sort().values
        hits = (torch.searchsorted(drawn, items, right=True) - torch.searchsorted(drawn, items)).sum()
        pairs = (b * len(negatives) - hits).clamp(min=1)
        pos = (p * q).sum(1)
        x = torch.mm(p, qn.T).sub_(pos[:, None])
        pair_loss = F.softplus(x).sum()
        slope = torch.sigmoid_(x).div_(pairs)  # d loss / d x
        pulled = slope.sum(1, keepdim=True)
        reg = (p.pow(2).sum() + q.pow(2).sum() + qn.pow(2).sum()) / b
        loss = (pair_loss - hits * math.log(2.0)) / pairs + self.reg * reg
        decay = 2.0 * self.reg / b
        grad = torch.empty_like(rows)
        torch.addmm(p, slope, qn, beta=decay, out=grad[:b]).sub_(pulled * q)
        torch.mul(p, -pulled, out=grad[b:2 * b]).add_(q, alpha=decay)
        torch.addmm(qn, slope.T, p, beta=decay, out=grad[2 * b:])
        return loss, grad

    def batch_loss(
        self, rows: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor | None, values: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss of one batch from its gathered rows: the users', the items', then (BPR and
        softmax) the sampled negatives'; ``values`` are the ratings (MSE only). Training
        differentiates it with autograd for softmax and MSE; for BPR it is the definition
        that :meth:`bpr_loss_and_gradient` computes by hand (and is tested against)."""
        b = len(items)
        p, q = rows[:b], rows[b:2 * b]
        reg = (p.pow(2).sum(1) + q.pow(2).sum(1)).mean()
        if negatives is None:  # mse: the bias column is the last
            assert values is not None
            d = self.d
            pred = (p[:, :d] * q[:, :d]).sum(1) + p[:, d] + q[:, d] + self.mu
            return F.mse_loss(pred, values) + self.reg * reg
        # Negatives are shared across the batch: one (B, d) x (d, n) product instead of a
        # (B, n, d) gather, which is what keeps many negatives cheap on a CPU.
        qn = rows[2 * b:]
        reg = reg + qn.pow(2).sum() / b
        pos = (p * q).sum(1)
        neg = p @ qn.T
        if self.loss == "bpr":
            # An accidental hit (the positive drawn as a negative) is the same table row on
            # both sides: its pair scores exactly 0, adds log 2 to the sum and nothing to the
            # gradient (the row's two halves cancel in the update). So it is counted out of
            # the mean rather than masked, which would cost two (B, n) passes a step; counted
            # by binary search in the sorted negatives (not a catalogue-sized bincount).
            drawn = negatives.sort().values
            hits = (torch.searchsorted(drawn, items, right=True) - torch.searchsorted(drawn, items)).sum()
            pairs = b * len(negatives) - hits
            return (F.softplus(neg - pos[:, None]).sum() - hits * math.log(2.0)) / pairs.clamp(min=1) + self.reg * reg
        hit = negatives[None, :] == items[:, None]
        neg = (neg - self.sampler.log_q(negatives)).masked_fill(hit, -math.inf)
        logits = torch.cat([(pos - self.sampler.log_q(items))[:, None], neg], dim=1)
        return -F.log_softmax(logits, dim=1)[:, 0].mean() + self.reg * reg

    def export(self) -> dict[str, np.ndarray]:
        table = self.table.detach().cpu().numpy()
        users, items = table[:self.n_users], table[self.n_users:]
        learned = {"user_factors": users[:, :self.d].copy(), "item_factors": items[:, :self.d].copy()}
        if self.loss == "mse":
            learned.update(user_bias=users[:, self.d].copy(), item_bias=items[:, self.d].copy(),
                           global_bias=np.asarray(self.mu))
        return learned

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"table": self.table.detach().cpu().numpy().copy()}
        state["generator"] = self.gen.get_state().numpy().copy()  # negatives and shuffles
        state.update(self.opt.state_dict())
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_arrays(state, {"table": (tuple(self.table.shape), "f"),
                             "generator": (tuple(self.gen.get_state().shape), "u")})
        self.opt.load_state_dict(state)
        with torch.no_grad():
            self.table.copy_(torch.from_numpy(state["table"]))
        self.gen.set_state(torch.from_numpy(state["generator"]))

    def finalize(self) -> None:
        """Nothing to release: the tensors go with the trainer."""


