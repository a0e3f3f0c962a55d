"""Two-tower training: in-batch sampled softmax with the logQ correction, optional uniform
negatives, id dropout, a cosine learning-rate schedule and bfloat16 autocast on CUDA."""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from recsys import distributed
from recsys.checkpoint import check_arrays
from recsys.data.features import FeatureEncoder
from recsys.data.interactions import Interactions
from recsys.device import resolve_device
from recsys.models.mf import NegativeSampler
from recsys.models.training import (
    minibatch_epoch,
    optimizer_state,
    optimizer_step,
    set_optimizer_state,
)
from recsys.models.two_tower.encoding import FeatureRows, recent_item_matrix
from recsys.models.two_tower.towers import (
    HistorySums,
    Output,
    embed_in_chunks,
    initial_towers,
    load_tower_arrays,
    tower_arrays,
)
from recsys.seeding import derive_seed


def cosine_decay(base: float, step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total``: ``base`` at 0, down to 0 at ``total``."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class _SampledSoftmax(torch.autograd.Function):
    """See :func:`sampled_softmax`. The (B, N) logits are made once and become their own
    gradient in place: one matrix per step instead of the five that logits, shift, mask,
    log-softmax and their backward passes allocate and sweep."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, v: torch.Tensor, shift: torch.Tensor, target: torch.Tensor,
                target_shift: torch.Tensor, excluded_rows: torch.Tensor, excluded_cols: torch.Tensor) -> torch.Tensor:
        with torch.autocast(u.device.type, enabled=False):  # float32 logits under CUDA autocast too
            logits = torch.addmm(shift, u, v.T)
        rows = torch.arange(len(u), device=u.device)
        logits[excluded_rows, excluded_cols] = -math.inf
        logits[rows, target] += target_shift
        log_p = torch.log_softmax(logits, dim=1)
        del logits
        ctx.save_for_backward(u, v, log_p, target)
        ctx.spent = False
        return -log_p[rows, target].mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.spent:  # the saved log-probabilities were turned into the gradient below
            raise RuntimeError("sampled_softmax: backward through the same loss twice is not supported")
        ctx.spent = True
        u, v, log_p, target = ctx.saved_tensors
        probs = log_p.exp_()
        probs[torch.arange(len(u), device=u.device), target] -= 1.0  # d loss / d logits, times B
        scale = grad / len(u)
        return (probs @ v) * scale, (probs.T @ u) * scale, None, None, None, None, None


def sampled_softmax(
    u: torch.Tensor, v: torch.Tensor, shift: torch.Tensor, target: torch.Tensor, target_shift: torch.Tensor,
    excluded_rows: torch.Tensor, excluded_cols: torch.Tensor,
) -> torch.Tensor:
    """Mean over the B rows of ``u`` of the cross-entropy of the logits ``u @ v.T + shift``
    with column ``target[i]`` as row i's answer, ``target_shift[i]`` added to that logit,
    and the entries (``excluded_rows``, ``excluded_cols``) left out (the entries given are
    never targets). ``u`` (B, d), ``v`` (N, d), ``shift`` (N,), ``target`` (B,) int64,
    ``target_shift`` (B,). Returns a scalar; gradients flow to ``u`` and ``v`` only."""
    return _SampledSoftmax.apply(u, v, shift, target, target_shift, excluded_rows, excluded_cols)


class _BatchLoss(nn.Module):
    """Both towers as one module whose forward is a batch's loss: what DistributedDataParallel
    wraps, so that one forward and one backward average both towers' gradients (the item
    tower runs twice in a step with uniform negatives; autograd sums its gradients first)."""

    def __init__(self, trainer: TwoTowerTrainer) -> None:
        super().__init__()
        self.user_tower, self.item_tower = trainer.user_tower, trainer.item_tower
        self.loss = trainer.batch_loss

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.loss(users, items)


class TwoTowerTrainer:
    """One fit of :class:`~recsys.models.two_tower.TwoTower`: the towers on the device, their
    optimizer, the feature and history tensors, the training entries, the in-batch sampler
    and the generator that shuffles, drops ids and draws negatives."""

    def __init__(
        self, data: Interactions, params: Mapping[str, Any], user_encoder: FeatureEncoder, item_encoder: FeatureEncoder
    ) -> None:
        dev = resolve_device(params["device"])
        self.device = dev
        self.output = Output.of(params)
        self.batch_size, self.learning_rate = int(params["batch_size"]), params["learning_rate"]
        self.cosine_schedule = params["lr_schedule"] == "cosine"
        self.id_dropout, self.logq = params["id_dropout"], float(params["logq"])
        self.uniform_negatives, self.reads_history = int(params["uniform_negatives"]), bool(params["recent"])
        self.user_tower, self.item_tower = initial_towers(params, user_encoder, item_encoder, data.n_users, data.n_items)
        self.user_tower.to(dev)
        self.item_tower.to(dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(derive_seed(params["random_state"]) + 1)
        self.gen = gen
        self.users = FeatureRows(user_encoder.transform(data.user_features, data.n_users), dev)
        self.items = FeatureRows(item_encoder.transform(data.item_features, data.n_items), dev)
        self.recent = torch.as_tensor(recent_item_matrix(data, params["recent"]), device=dev)
        # The history sums of all users in one sparse product (and one back) cost less than
        # summing a batch's rows (a gather, and a sort of the indices in the backward pass)
        # while the users' history entries are not many more than a batch's history slots
        # (ML-100K u1: 37k entries, 51k slots); with many more users, the batch's rows.
        entries, slots = int(self.recent.count_nonzero()), self.batch_size * self.recent.shape[1]
        self.history_sums = HistorySums(self.recent, data.n_items) if self.reads_history and entries <= 2 * slots else None
        self.n_users, self.n_items = data.n_users, data.n_items
        self.rows = torch.as_tensor(data.row_indices, device=dev)
        self.cols = torch.as_tensor(data.matrix.indices.astype(np.int64), device=dev)
        counts = data.item_counts()
        # In-batch negatives are the batch's positives: item j turns up with probability
        # count_j / nnz per row, so B * that is its expected count (the logQ term).
        self.inbatch = NegativeSampler(counts, "popularity", gen, dev, power=1.0)
        self.warm = torch.as_tensor(np.flatnonzero(counts > 0), device=dev)
        # Data-parallel, each process steps through its shard of the pairs.
        self.steps_per_epoch = math.ceil(distributed.shard_size(data.matrix.nnz) / self.batch_size)
        self.total_steps = params["epochs"] * self.steps_per_epoch
        weights = [*self.user_tower.parameters(), *self.item_tower.parameters()]
        self.opt = torch.optim.AdamW(weights, lr=self.learning_rate, weight_decay=params["regularization"], fused=True)
        use_amp = params["mixed_precision"] and dev.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
        # The in-batch logits: (B, d) x (d, B + uniform negatives), the towers' MLPs beside them.
        self.step_work = float(self.batch_size * (self.batch_size + self.uniform_negatives) * params["factors"])
        # Data-parallel: DDP averages the towers' gradients (in-batch negatives stay per
        # process: each softmax sees its own B pairs). Alone: the plain method.
        self.step_loss = self.batch_loss if distributed.current() is None else distributed.data_parallel(_BatchLoss(self))

    def _embed_users(self, users: torch.Tensor, keep: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        cat, multi, num = self.users.rows(users)
        history = self.recent[users] if self.reads_history else None
        sums = None if self.history_sums is None else self.history_sums(self.user_tower.recent.weight)[users]
        return self.user_tower(users, keep, cat, multi, num, history, drop, sums)

    def _embed_items(self, items: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        cat, multi, num = self.items.rows(items)
        return self.item_tower(items, keep, cat, multi, num)

    def _keep(self, n: int) -> torch.Tensor:
        if self.id_dropout <= 0:
            return torch.ones(n, device=self.device)
        return (torch.rand(n, generator=self.gen, device=self.device) >= self.id_dropout).float()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.user_tower.train()
        self.item_tower.train()
        n = self.rows.shape[0]
        done = (epoch - 1) * self.steps_per_epoch

        def schedule(step: int) -> None:
            for group in self.opt.param_groups:
                group["lr"] = cosine_decay(self.learning_rate, done + step, self.total_steps)

        train_step = optimizer_step(self.opt, lambda b: self.step_loss(self.rows[b], self.cols[b]),
                                    before_step=schedule if self.cosine_schedule else None,
                                    autocast=self.autocast)
        return minibatch_epoch(n, self.batch_size, self.gen, train_step)

    def batch_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        b = len(users)
        u = self._embed_users(users, self._keep(b), items + 1 if self.reads_history else None)
        keep = self._keep(b)
        # Rows with the same item and the same id-dropout draw have the same item vector: the
        # item tower runs once per distinct (item, draw), and each such column of the softmax
        # stands for its `count` in-batch copies (+ log count on its logits), the same sum as
        # one column per row at about half the width on ML-100K.
        key, column, count = torch.unique(items * 2 + keep.long(), return_inverse=True, return_counts=True)
        distinct = key // 2
        v = self._embed_items(distinct, (key % 2).float())
        u, v = self.output.finish(u.float(), users=True), self.output.finish(v.float(), users=False)
        shift = count.log()
        strength = self.logq
        if strength:
            shift = shift - strength * (self.inbatch.log_q(distinct) + math.log(b))
        # The same item again is not a negative: of a row's own item only the row itself
        # counts (its column once, not `count` times; the other draw's column not at all).
        twin = torch.searchsorted(key, key ^ 1).clamp_(max=len(key) - 1)
        twin = torch.where(key[twin] == key ^ 1, twin, -1)[column]
        excluded_rows = torch.nonzero(twin >= 0).squeeze(1)
        excluded_cols = twin[excluded_rows]
        if self.uniform_negatives:
            pick = torch.randint(len(self.warm), (self.uniform_negatives,), generator=self.gen, device=self.device)
            neg = self.warm[pick]
            vn = self.output.finish(self._embed_items(neg, self._keep(len(neg))).float(), users=False)
            v = torch.cat([v, vn])
            extra = -strength * math.log(self.uniform_negatives / len(self.warm)) if strength else 0.0
            shift = torch.cat([shift, torch.full_like(vn[:, 0], extra)])
            rows, cols = torch.nonzero(neg[None, :] == items[:, None], as_tuple=True)
            excluded_rows, excluded_cols = torch.cat([excluded_rows, rows]), torch.cat([excluded_cols, cols + len(key)])
        return sampled_softmax(u, v, shift, column, -count.log()[column], excluded_rows, excluded_cols)

    @torch.no_grad()
    def export(self) -> dict[str, np.ndarray]:
        """Both sides' factors through the towers as they stand, and the towers' weights
        under ``tower.`` (the model keeps its own towers for new users and items)."""
        self.user_tower.eval()
        self.item_tower.eval()
        out, dev = self.output, self.device

        def users(idx: torch.Tensor) -> torch.Tensor:
            return out.finish(self._embed_users(idx, torch.ones(len(idx), device=dev)).float(), users=True)

        def items(idx: torch.Tensor) -> torch.Tensor:
            return out.finish(self._embed_items(idx, torch.ones(len(idx), device=dev)).float(), users=False)

        learned = {"user_factors": embed_in_chunks(users, self.n_users, out.width, dev),
                   "item_factors": embed_in_chunks(items, self.n_items, out.width, dev)}
        # Early stopping restores the best epoch: the towers too, not only the factors, so
        # that new users are scored by the same model as the exported factors.
        # Plain arrays under "tower.", so that a checkpoint can keep the best epoch too.
        learned.update({f"tower.{k}": v for k, v in tower_arrays(self.user_tower, self.item_tower).items()})
        return learned

    def state_dict(self) -> dict[str, np.ndarray]:
        state = tower_arrays(self.user_tower, self.item_tower)
        # The generator draws the shuffles, id dropout and negatives.
        state["generator"] = self.gen.get_state().numpy().copy()
        state.update(optimizer_state(self.opt))
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_arrays(state, {"generator": (tuple(self.gen.get_state().shape), "u")})
        load_tower_arrays(self.user_tower, self.item_tower, state)
        self.gen.set_state(torch.from_numpy(state["generator"]))
        set_optimizer_state(self.opt, state)

    def finalize(self) -> None:
        """Nothing to release: the towers and tensors go with the trainer."""
