"""Embedding new users against fixed item factors, each model by its own objective.

With the item side fixed, a user's part of the ALS and iALS objectives is a weighted
ridge regression with a closed-form solution; the explicit MF objective (MSE with
biases) is a plain ridge regression; the ranking losses of MF (BPR, softmax) are solved by
a few gradient steps. No retraining, no change to the saved model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F


def weighted_least_squares(
    fixed: np.ndarray,
    gram: np.ndarray,
    weights: sp.csr_matrix,
    offset: float,
    regularization: float | np.ndarray,
) -> np.ndarray:
    """Solve ``(gram + sum_i (w_ui + offset) y_i y_i' + reg_u I) x_u = sum_i w_ui y_i`` per row.

    ``fixed`` (n_items, d): the item factors; ``weights`` (n, n_items): each row's observed
    entries and their weights; ``regularization``: one value or one per row. ALS (implicit's
    objective) is ``gram = Y'Y, offset = -1``: observed entries weigh ``c`` in total, the
    ``1`` of the all-pairs term included. iALS is ``gram = alpha0 Y'Y, offset = 0``.
    Returns (n, d) float32.
    """
    y = np.asarray(fixed, dtype=np.float64)
    d = y.shape[1]
    n = weights.shape[0]
    reg = np.broadcast_to(np.asarray(regularization, dtype=np.float64), (n,))
    out = np.zeros((n, d), dtype=np.float64)
    eye = np.eye(d)
    for u in range(n):
        lo, hi = weights.indptr[u], weights.indptr[u + 1]
        if lo == hi:
            continue  # no history: the solution is 0
        yu = y[weights.indices[lo:hi]]
        w = weights.data[lo:hi].astype(np.float64)
        a = gram + (yu.T * (w + offset)) @ yu + reg[u] * eye
        out[u] = np.linalg.solve(a, yu.T @ w)
    return out.astype(np.float32)


def ridge_with_bias(
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    global_bias: float,
    ratings: sp.csr_matrix,
    regularization: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Explicit MF's user side: minimize mean_i (mu + b_u + b_i + p.q_i - r_ui)^2 + reg (|p|^2 + b_u^2).

    The exact minimizer of what the training loss asks of one user with the items fixed
    (ridge regression on ``[q_i, 1]``). Returns (factors (n, d), biases (n,)).
    """
    q = np.asarray(item_factors, dtype=np.float64)
    n, d = ratings.shape[0], q.shape[1]
    factors = np.zeros((n, d), dtype=np.float64)
    bias = np.zeros(n, dtype=np.float64)
    for u in range(n):
        lo, hi = ratings.indptr[u], ratings.indptr[u + 1]
        if lo == hi:
            continue
        items = ratings.indices[lo:hi]
        x = np.hstack([q[items], np.ones((hi - lo, 1))])
        target = ratings.data[lo:hi] - global_bias - item_bias[items]
        w = np.linalg.solve(x.T @ x + (hi - lo) * regularization * np.eye(d + 1), x.T @ target)
        factors[u], bias[u] = w[:d], w[d]
    return factors.astype(np.float32), bias.astype(np.float32)


def ranking_gradient_fold_in(
    item_factors: np.ndarray,
    history: sp.csr_matrix,
    loss: str,
    regularization: float,
    *,
    steps: int = 100,
    learning_rate: float = 0.05,
    negatives: int = 256,
    seed: int = 0,
    batch_users: int = 1024,
) -> np.ndarray:
    """BPR or softmax user factors by ``steps`` full-batch Adam steps against fixed items.

    ``softmax``: the full softmax over the catalogue (what training's sampled softmax with
    the logQ correction estimates); ``bpr``: each history item against ``negatives``
    uniformly drawn items per step, as in training. Plus ``regularization * |p|^2``.
    Starts from zero, so the result depends only on the history and the seed.
    """
    q = torch.as_tensor(np.asarray(item_factors, dtype=np.float32))
    n_items, d = q.shape
    n = history.shape[0]
    out = np.zeros((n, d), dtype=np.float32)
    gen = torch.Generator().manual_seed(int(seed))
    for start in range(0, n, batch_users):
        block = history[start:start + batch_users]
        counts = np.diff(block.indptr)
        if counts.sum() == 0:
            continue
        width = int(counts.max())
        # Histories padded to one width; mask marks the real entries.
        pos = np.zeros((block.shape[0], width), dtype=np.int64)
        mask = np.arange(width)[None, :] < counts[:, None]
        pos[mask] = block.indices
        pos_t, mask_t = torch.as_tensor(pos), torch.as_tensor(mask, dtype=torch.float32)
        n_pos = mask_t.sum(1).clamp_min(1.0)
        p = torch.zeros(block.shape[0], d, requires_grad=True)
        opt = torch.optim.Adam([p], lr=learning_rate)
        for _ in range(steps):
            if loss == "softmax":
                scores = p @ q.T
                pos_scores = scores.gather(1, pos_t)
                per_entry = torch.logsumexp(scores, 1, keepdim=True) - pos_scores
            else:
                neg = torch.randint(n_items, (negatives,), generator=gen)
                pos_scores = (p[:, None, :] * q[pos_t]).sum(-1)
                neg_scores = p @ q[neg].T
                pairs = -F.logsigmoid(pos_scores[:, :, None] - neg_scores[:, None, :])
                real = neg[None, None, :] != pos_t[:, :, None]  # a draw of the positive itself is no negative
                per_entry = (pairs * real).sum(-1) / real.sum(-1).clamp_min(1)
            objective = ((per_entry * mask_t).sum(1) / n_pos).sum() + regularization * p.pow(2).sum()
            opt.zero_grad()
            objective.backward()
            opt.step()
        out[start:start + block.shape[0]] = p.detach().numpy()
    return out
