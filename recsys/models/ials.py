"""iALS with frequency-scaled regularization, in torch (CPU or CUDA).

The model of Hu, Koren and Volinsky (2008) with the refinements of Rendle, Krichene,
Zhang and Koren, "Revisiting the Performance of iALS on Item Recommendation Benchmarks"
(RecSys 2022): an explicit weight on unobserved pairs and a regularization that grows
with each user's and item's frequency. It minimizes

    sum_{(u,i) observed} c_ui (p_u . q_i - 1)^2
      + alpha0 * sum_{all (u,i)} (p_u . q_i)^2
      + lambda * sum_u (n_u + alpha0 * |I|)^nu |p_u|^2
      + lambda * sum_i (n_i + alpha0 * |U|)^nu |q_i|^2

where ``c_ui`` is the confidence of an observed entry (1 for binary data), ``n_u`` and
``n_i`` are the numbers of observed entries of the user and the item.

With ``unobserved_exponent`` beta != 0 the unobserved weight depends on the item, as in
eALS (He, Zhang, Kan and Chua, "Fast Matrix Factorization for Online Recommendation with
Implicit Feedback", SIGIR 2016): ``alpha0`` becomes

    w_i = alpha0 * |I| * f_i^beta / sum_j f_j^beta,     f_i = max(n_i, 1)

(popular items weigh more as negatives for beta > 0; the mean weight stays alpha0), the
all-pairs term becomes ``sum_{all (u,i)} w_i (p_u . q_i)^2`` and the regularization of item
i uses ``(n_i + w_i |U|)^nu``; a user's stays ``(n_u + sum_i w_i)^nu = (n_u + alpha0 |I|)^nu``.
beta = 0 is the model above, computed exactly as before. Each half-epoch
solves every user's (then every item's) d x d system by a few conjugate-gradient steps
warm-started at the current factors, as implicit does; the sparse parts are two native
kernels (sampled dense-dense product and sparse-dense product), so one CG step costs
O(nnz * d + n * d^2) with no (nnz, d) intermediate.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from recsys.checkpoint import check_arrays
from recsys.data.interactions import Interactions
from recsys.device import cpu_budget, resolve_device
from recsys.errors import ConfigError
from recsys.models import auto
from recsys.models.als import Weighting, confidence
from recsys.models.auto import AUTO, DataShape
from recsys.models.training import IterativeRecommender
from recsys.seeding import derive_seed


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A torch CSR tensor from scipy's canonical parts (indptr, indices, data)."""
    with warnings.catch_warnings():
        # torch flags CSR tensors as beta and skips invariant checks; ours come from scipy's
        # canonical CSR, so both warnings are noise.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size)


class _Side:
    """One side's sparse structure on the device: rows are the entities being solved."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, conf: torch.Tensor, n_cols: int) -> None:
        self.n_rows, self.n_cols = len(crow) - 1, n_cols
        self.crow, self.col, self.conf = crow, col, conf
        shape = (self.n_rows, n_cols)
        # The pattern for the sampled product; values are overwritten by each call.
        self.pattern = csr_tensor(crow, col, torch.zeros_like(conf), shape)
        self.weighted = csr_tensor(crow, col, conf, shape)
        self.counts = (crow[1:] - crow[:-1]).to(torch.float32)

    @classmethod
    def of(cls, matrix: sp.csr_matrix, conf: np.ndarray, device: torch.device) -> _Side:
        return cls(torch.as_tensor(matrix.indptr.astype(np.int64), device=device),
                   torch.as_tensor(matrix.indices.astype(np.int64), device=device),
                   torch.as_tensor(conf, dtype=torch.float32, device=device), matrix.shape[1])

    def rows(self, start: int, stop: int) -> _Side:
        """The rows ``start:stop`` as a side of their own (views of this one's arrays)."""
        lo, hi = int(self.crow[start]), int(self.crow[stop])
        return _Side(self.crow[start:stop + 1] - lo, self.col[lo:hi], self.conf[lo:hi], self.n_cols)

    def blocks(self, n: int, factors: int) -> list[tuple[int, int, _Side]]:
        """At most ``n`` runs of rows of about equal work (a CG step costs about
        ``nnz * d + d^2`` per row), each ``(start, stop, side)``."""
        if n <= 1 or self.n_rows <= 1:
            return [(0, self.n_rows, self)]
        work = np.cumsum(np.diff(self.crow.cpu().numpy()) + factors, dtype=np.float64)
        cuts = np.searchsorted(work, work[-1] * np.arange(1, n) / n) + 1  # a block ends after its row
        bounds = np.unique(np.concatenate([[0], np.minimum(cuts, self.n_rows), [self.n_rows]]))
        return [(a, b, self.rows(a, b)) for a, b in itertools.pairwise(bounds.tolist())]

    def observed_term(self, x: torch.Tensor, fixed: torch.Tensor, fixed_t: torch.Tensor) -> torch.Tensor:
        """sum_i c_ui (q_i . x_u) q_i for every row u: sampled product, then sparse product."""
        dots = torch.sparse.sampled_addmm(self.pattern, x, fixed_t, beta=0.0)
        scaled = csr_tensor(self.crow, self.col, dots.values() * self.conf, dots.shape)
        return scaled @ fixed


class IALS(IterativeRecommender):
    """Implicit-feedback ALS with an unobserved weight and frequency-scaled regularization.

    Parameters
    ----------
    factors : int
        Embedding dimension.
    epochs : int
        Alternating sweeps (users, then items).
    regularization : float
        lambda, scaled per user and item by ``(n + unobserved_weight * N) ** regularization_exponent``.
    unobserved_weight : float or "auto"
        alpha0, the weight of every unobserved (user, item) pair relative to an observed
        one. ``"auto"`` sets it from the data: ``UNOBSERVED_RATIO`` (10) times the
        confidence density, so that a user's unobserved pairs together weigh ten times the
        mean user's observed confidence on any catalogue size and density (a fixed alpha0
        suits one density only; see :mod:`recsys.models.auto`).
    regularization_exponent : float
        nu: 0 gives plain L2; 1 scales with frequency (Rendle et al. recommend 1).
    weighting : {"auto", "binary", "linear", "log"}
        Confidence of observed entries (see :func:`recsys.models.als.confidence`);
        ``auto`` is binary for ratings, log for counts.
    alpha : float
        Scale of the confidence of observed entries.
    unobserved_exponent : float
        beta: item i's unobserved weight is proportional to ``max(n_i, 1) ** beta`` with mean
        ``unobserved_weight`` (eALS's popularity-aware weights; see the module docstring);
        0 (the default) weighs every unobserved pair the same.
    cg_steps : int
        Conjugate-gradient steps per half-epoch (warm-started, so few suffice).
    init_scale : float
        Initial factors are normal with standard deviation ``init_scale / sqrt(factors)``.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    random_state : int
        Seed of the initial factors.

    The defaults come from the leave-one-data-set-out search in ``experiments/quality``.
    """

    name = "ials"

    def __init__(
        self,
        factors: int = 256,
        epochs: int = 8,
        regularization: float = 0.01,
        unobserved_weight: float | Literal["auto"] = AUTO,
        regularization_exponent: float = 1.0,
        weighting: Weighting = "auto",
        alpha: float = 1.0,
        cg_steps: int = 3,
        unobserved_exponent: float = 0.0,
        init_scale: float = 0.1,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.epochs = epochs
        self.regularization = regularization
        self.unobserved_weight = unobserved_weight
        self.regularization_exponent = regularization_exponent
        self.weighting = weighting
        self.alpha = alpha
        self.cg_steps = cg_steps
        self.unobserved_exponent = unobserved_exponent
        self.init_scale = init_scale
        self.device = device
        self.random_state = random_state

    def _resolve_params(self, data: Interactions) -> tuple[dict[str, Any], DataShape | None]:
        params = self.get_params()
        if self.unobserved_weight != AUTO:
            return super()._resolve_params(data)
        if not isinstance(self.alpha, int | float) or self.alpha <= 0:
            raise ConfigError(f"alpha must be a number > 0, got {self.alpha!r}")
        conf = confidence(data.matrix, data.feedback, self.weighting, self.alpha)
        shape = DataShape.of(data.matrix, data.feedback, conf)
        params["unobserved_weight"] = auto.unobserved_weight(shape)
        return params, shape

    def _validate_params(self) -> None:
        a0 = self.fitted_params["unobserved_weight"]
        if int(self.factors) < 1 or int(self.epochs) < 1 or int(self.cg_steps) < 1:
            raise ConfigError("factors, epochs and cg_steps must be at least 1")
        if not isinstance(a0, int | float):
            raise ConfigError(f"unobserved_weight must be a number or 'auto', got {a0!r}")
        if self.regularization < 0 or a0 < 0 or self.alpha <= 0:
            raise ConfigError("regularization and unobserved_weight must be >= 0, alpha > 0")
        if self.regularization == 0 and a0 == 0:
            raise ConfigError("regularization and unobserved_weight cannot both be 0 (the systems are singular)")
        if not np.isfinite(self.unobserved_exponent):
            raise ConfigError("unobserved_exponent must be a finite number")

    def create_trainer(self, data: Interactions, params: Mapping[str, Any]) -> IALSTrainer:
        return IALSTrainer(data, params)

    def _fold_in(self, matrix: sp.csr_matrix, feedback: str, **_: object) -> tuple[np.ndarray, None]:
        """The user half-epoch solved exactly (not by CG):
        (alpha0 Q'Q + sum_i c_ui q_i q_i' + lambda (n_u + alpha0 |I|)^nu I) p = sum_i c_ui q_i,
        with ``Q' diag(w) Q`` for ``alpha0 Q'Q`` when the unobserved weights depend on the item
        (recomputed from the saved training counts, ``item_popularity``)."""
        from recsys.models.fold_in import weighted_least_squares

        conf = confidence(matrix, feedback, self.weighting, self.alpha)
        q = self.item_factors.astype(np.float64)
        a0 = self.fitted_params["unobserved_weight"]
        if self.unobserved_exponent != 0:
            w = unobserved_weights(self.item_popularity, a0, self.unobserved_exponent)
            gram = (q * w[:, None]).T @ q
        else:
            gram = a0 * (q.T @ q)
        reg = self.regularization * (np.diff(matrix.indptr) + a0 * matrix.shape[1]) ** self.regularization_exponent
        return weighted_least_squares(q, gram, conf, 0.0, reg), None


class IALSTrainer:
    """One fit of :class:`IALS`: both sides' sparse structure, the factors and the
    regularization weights on the device; an epoch solves users, then items."""

    def __init__(self, data: Interactions, params: Mapping[str, Any]) -> None:
        dev = resolve_device(params["device"])
        self.device = dev
        self.factors, self.cg_steps = int(params["factors"]), int(params["cg_steps"])
        self.step_work = math.inf  # an epoch is one step: whole-table solves, worth every CPU
        conf = confidence(data.matrix, data.feedback, params["weighting"], params["alpha"])
        transposed = conf.T.tocsr()
        self.users = _Side.of(conf, conf.data, dev)
        self.items = _Side.of(transposed, transposed.data, dev)
        # On the CPU each half-epoch's rows are solved in blocks, one worker thread and one
        # torch thread each, as implicit solves its users: no barrier between the operations
        # of a CG step, so a worker the scheduler puts aside on a busy machine holds up no
        # other (whole-table operations on two threads stalled there; experiments/speed).
        workers = cpu_budget() if dev.type == "cpu" else 1
        self.user_blocks = self.users.blocks(workers, self.factors)
        self.item_blocks = self.items.blocks(workers, self.factors)
        self._pool: ThreadPoolExecutor | None = None
        gen = torch.Generator(device="cpu").manual_seed(derive_seed(params["random_state"]))
        std = params["init_scale"] / np.sqrt(params["factors"])
        # Drawn on the CPU and moved, so CPU and CUDA runs start from the same factors.
        self.P = (torch.randn(data.n_users, params["factors"], generator=gen) * std).to(dev)
        self.Q = (torch.randn(data.n_items, params["factors"], generator=gen) * std).to(dev)
        n_users, n_items = data.shape
        a0, lam, nu = params["unobserved_weight"], params["regularization"], params["regularization_exponent"]
        self.a0 = a0
        self.reg_users = lam * (self.users.counts + a0 * n_items) ** nu
        # Per-item unobserved weights (eALS) or None: one alpha0 for all, the original path.
        self.item_weights: torch.Tensor | None = None
        if params["unobserved_exponent"] != 0:
            w = unobserved_weights(data.item_counts(), a0, params["unobserved_exponent"])
            self.item_weights = torch.as_tensor(w, dtype=torch.float32, device=dev)
            self.reg_items = lam * (self.items.counts + self.item_weights * n_users) ** nu
        else:
            self.reg_items = lam * (self.items.counts + a0 * n_users) ** nu

    def solve(self, blocks: list[tuple[int, int, _Side]], x: torch.Tensor, fixed: torch.Tensor, reg: torch.Tensor, *,
              fixed_weights: torch.Tensor | None = None, row_weights: torch.Tensor | None = None) -> torch.Tensor:
        """A few CG steps on (a0 Q'Q + sum_i c q q' + reg I) x = sum_i c q, for all rows at once
        (each block of rows on its own worker when there are several).

        With per-item unobserved weights w: solving users, ``fixed_weights`` = w gives the gram
        ``Q' diag(w) Q``; solving items, ``row_weights`` = w scales item i's gram ``P'P`` by w_i.
        """
        if fixed_weights is not None:
            gram = (fixed * fixed_weights[:, None]).T @ fixed
        elif row_weights is not None:
            gram = fixed.T @ fixed
        else:
            gram = self.a0 * (fixed.T @ fixed)
        fixed_t = fixed.T.contiguous()

        def block(part: tuple[int, int, _Side]) -> torch.Tensor:
            start, stop, side = part
            weights = None if row_weights is None else row_weights[start:stop]
            return self._cg(side, x[start:stop], fixed, fixed_t, gram, reg[start:stop], weights)

        threads = torch.get_num_threads()
        if len(blocks) == 1 or threads == 1:
            parts = [block(part) for part in blocks]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(blocks), thread_name_prefix="recsys-ials")
            try:
                parts = list(self._pool.map(lambda part: _one_thread(block, part), blocks))
            finally:
                torch.set_num_threads(threads)  # the workers' setting is the process's too
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _cg(self, side: _Side, x: torch.Tensor, fixed: torch.Tensor, fixed_t: torch.Tensor, gram: torch.Tensor,
            reg: torch.Tensor, row_weights: torch.Tensor | None) -> torch.Tensor:
        rhs = side.weighted @ fixed

        def matvec(v: torch.Tensor) -> torch.Tensor:
            unobserved = v @ gram if row_weights is None else row_weights[:, None] * (v @ gram)
            return unobserved + side.observed_term(v, fixed, fixed_t) + reg[:, None] * v

        residual = rhs - matvec(x)
        direction = residual.clone()
        rs = (residual * residual).sum(1)
        for _ in range(self.cg_steps):
            ad = matvec(direction)
            step = rs / (direction * ad).sum(1).clamp_min(1e-20)
            x = x + step[:, None] * direction
            residual = residual - step[:, None] * ad
            rs_new = (residual * residual).sum(1)
            direction = residual + (rs_new / rs.clamp_min(1e-20))[:, None] * direction
            rs = rs_new
        return x

    def train_epoch(self, epoch: int) -> dict[str, float]:
        w = self.item_weights
        self.P = self.solve(self.user_blocks, self.P, self.Q, self.reg_users, fixed_weights=w)
        self.Q = self.solve(self.item_blocks, self.Q, self.P, self.reg_items, row_weights=w)
        return {}

    def export(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.P.cpu().numpy().copy(), "item_factors": self.Q.cpu().numpy().copy()}

    def state_dict(self) -> dict[str, np.ndarray]:
        # The sweeps are deterministic given the factors: nothing else to keep.
        return {"P": self.P.cpu().numpy().copy(), "Q": self.Q.cpu().numpy().copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_arrays(state, {"P": (tuple(self.P.shape), "f"), "Q": (tuple(self.Q.shape), "f")})
        self.P = torch.from_numpy(state["P"]).to(self.device)
        self.Q = torch.from_numpy(state["Q"]).to(self.device)

    def finalize(self) -> None:
        """Stop the block workers (the tensors go with the trainer)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _one_thread(solve: Any, part: Any) -> torch.Tensor:
    """``solve(part)`` with torch on one thread in this worker (a thread's OpenMP count is its own)."""
    torch.set_num_threads(1)
    return solve(part)


def unobserved_weights(item_counts: np.ndarray, unobserved_weight: float, exponent: float) -> np.ndarray:
    """eALS's per-item unobserved weights, shape (n_items,), float64:
    ``alpha0 * |I| * f_i^beta / sum_j f_j^beta`` with ``f_i = max(n_i, 1)`` (an item nobody
    used in training counts as used once, so that every weight is finite and positive)."""
    # In log space: f ** beta overflows for large counts and exponents.
    log_f = exponent * np.log(np.maximum(np.asarray(item_counts, dtype=np.float64), 1.0))
    f = np.exp(log_f - log_f.max())
    return unobserved_weight * len(f) * f / f.sum()
