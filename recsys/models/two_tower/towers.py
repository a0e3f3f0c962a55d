"""The two towers: the torch module, how a pair is built for the hyper-parameters and the
feature encoders, their weights as arrays, and how their outputs become exported factors."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from recsys.checkpoint import check_arrays
from recsys.data.features import FeatureEncoder
from recsys.seeding import derive_seed


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
        self.feature_dim = feature_dim
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
        history_sum: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed a batch of B rows.

        ``ids`` (B,), ``keep_id`` (B,) 0/1 (0: unknown id or dropped), ``categorical``
        (B, C), ``multi`` C' tensors (B, L), ``numeric`` (B, N); ``history`` (B, H) item
        indices + 1 (0 = padding); ``drop_from_history`` (B,) item indices + 1 to leave
        out of the mean (the training target itself), 0 for none; ``history_sum`` (B, factors)
        the sum of each row's history embeddings when the caller has it already
        (:class:`HistorySums`), else it is summed here. Returns (B, factors).
        """
        parts = [self.ids(ids) * keep_id[:, None]]
        # Bags (gather and sum in one operation, index 0 contributing nothing) rather than
        # a (B, L, d) gather then a sum: the same numbers without the (B, L, d) tensor and
        # its scatter in the backward pass, most of a CPU step's non-matmul time.
        for emb, values in zip(self.multi, multi):
            count = (values > 0).sum(1, keepdim=True).clamp(min=1)
            parts.append(F.embedding_bag(values, emb.weight, mode="sum", padding_idx=0) / count)
        parts.append(numeric)
        if self.recent is not None:
            assert history is not None
            total = history_sum
            if total is None:
                total = F.embedding_bag(history, self.recent.weight, mode="sum", padding_idx=0)
            count = (history > 0).sum(1, keepdim=True)
            if drop_from_history is not None:
                # The target is in the user's own history during training: take it out so
                # the model cannot learn "recommend what is in the history".
                present = (history == drop_from_history[:, None]).any(1, keepdim=True) & (drop_from_history[:, None] > 0)
                total = total - self.recent(drop_from_history) * present
                count = count - present.long()
            parts.append(total / count.clamp(min=1))
        first, after = (self.mlp[0], self.mlp[1:]) if isinstance(self.mlp, nn.Sequential) else (self.mlp, None)
        # The first layer's input is [ids, categorical, multi, numeric, history]. For the
        # categorical features, its block of weights is applied to each embedding table (a
        # few rows) and the rows looked up: the same sum as multiplying the looked-up
        # embeddings, without a (B, feature_dim) x (feature_dim, width) product per feature.
        # Row 0 ("missing") is zero and, as padding, learns nothing in either form.
        start, dim = self.ids.embedding_dim, len(self.categorical) * self.feature_dim
        weight = first.weight
        # Summed in float32 under CUDA autocast (.float() is free on the CPU), as one product
        # over the whole input accumulates.
        hidden = F.linear(torch.cat(parts, dim=1), torch.cat([weight[:, :start], weight[:, start + dim:]], dim=1),
                          first.bias).float()
        for j, emb in enumerate(self.categorical):
            block = weight[:, start + j * self.feature_dim:start + (j + 1) * self.feature_dim]
            hidden = hidden + F.embedding(categorical[:, j], emb.weight @ block.T, padding_idx=0)
        return hidden if after is None else after(hidden)


class _SparseProduct(torch.autograd.Function):
    """``matrix @ weight``, its gradient ``transpose @ grad`` with the transpose made once
    (torch's own backward of a sparse product transposes the matrix at every call)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        with torch.autocast(weight.device.type, enabled=False):  # float32, as an embedding bag sums
            return matrix @ weight

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.transpose @ grad, None, None


class HistorySums:
    """Every user's recent items (the (n_users, H) matrix of item indices + 1, 0 padding, of
    :func:`~recsys.models.two_tower.encoding.recent_item_matrix`) as a sparse 0/1 matrix and
    its transpose, made once: :meth:`__call__` sums all users' history embeddings in one
    sparse product, each user's history once however often the batch holds them."""

    def __init__(self, recent: torch.Tensor, n_items: int) -> None:
        users, slots = torch.nonzero(recent, as_tuple=True)
        items = recent[users, slots]
        ones = torch.ones(len(users), device=recent.device)
        self.matrix = _csr(users, items, ones, (len(recent), n_items + 1))
        self.transpose = _csr(items, users, ones, (n_items + 1, len(recent)))

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        """Each user's sum of ``weight``'s rows (the history embeddings, row 0 the padding).
        Returns (n_users, weight.shape[1])."""
        return _SparseProduct.apply(weight, self.matrix, self.transpose)


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=True).coalesce()
    with warnings.catch_warnings():  # torch calls its CSR tensors beta; the product is all we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()

def build_towers(
    params: Mapping[str, Any], user_encoder: FeatureEncoder, item_encoder: FeatureEncoder, n_users: int, n_items: int
) -> tuple[Tower, Tower]:
    """The user and item towers for the hyper-parameters ``params`` and the encoders'
    feature cardinalities, initialized from the global torch RNG (see :func:`initial_towers`)."""
    ucat, umulti, unum = user_encoder.cardinalities
    icat, imulti, inum = item_encoder.cardinalities
    factors, feature_dim, hidden = params["factors"], params["feature_dim"], params["hidden"]
    user = Tower(n_users, ucat, umulti, unum, factors, feature_dim, hidden, n_items if params["recent"] else 0)
    item = Tower(n_items, icat, imulti, inum, factors, feature_dim, hidden, extra_outputs=int(params["tower_bias"]))
    return user, item


def initial_towers(
    params: Mapping[str, Any], user_encoder: FeatureEncoder, item_encoder: FeatureEncoder, n_users: int, n_items: int
) -> tuple[Tower, Tower]:
    """The towers training starts from, the same for the same ``random_state``."""
    # Built under a forked, seeded RNG: the global torch RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(params["random_state"]))
        return build_towers(params, user_encoder, item_encoder, n_users, n_items)


def trained_towers(
    params: Mapping[str, Any], user_encoder: FeatureEncoder, item_encoder: FeatureEncoder, n_users: int, n_items: int,
    arrays: dict[str, np.ndarray],
) -> tuple[Tower, Tower]:
    """The towers holding ``arrays`` (:func:`tower_arrays`), on the CPU in eval mode: what a
    fitted or loaded model embeds new users and items with."""
    # Built on the meta device and given memory after: the weights come from the arrays, so
    # none are initialized (and no random state is touched).
    with torch.device("meta"):
        user, item = build_towers(params, user_encoder, item_encoder, n_users, n_items)
    user, item = user.to_empty(device="cpu"), item.to_empty(device="cpu")
    load_tower_arrays(user, item, arrays)
    return user.eval(), item.eval()


def tower_arrays(user: Tower, item: Tower) -> dict[str, np.ndarray]:
    """Both towers' weights as ``user.<name>`` / ``item.<name>`` arrays (saved models,
    checkpoints and early-stopping snapshots share this form)."""
    return {f"{prefix}.{name}": tensor.detach().cpu().numpy().copy()
            for prefix, tower in (("user", user), ("item", item))
            for name, tensor in tower.state_dict().items()}


def load_tower_arrays(user: Tower, item: Tower, arrays: dict[str, np.ndarray]) -> None:
    """Copy :func:`tower_arrays` into towers of the same shapes (checked first)."""
    towers = (("user", user), ("item", item))
    check_arrays(arrays, {f"{prefix}.{name}": (tuple(t.shape), "f")
                          for prefix, tower in towers for name, t in tower.state_dict().items()})
    for prefix, tower in towers:
        device = next(tower.parameters()).device
        tower.load_state_dict({name: torch.as_tensor(arrays[f"{prefix}.{name}"], device=device)
                               for name in tower.state_dict()})


@dataclass(frozen=True)
class Output:
    """How tower outputs become exported factors (:meth:`finish`), for ``factors``,
    ``similarity``, ``temperature`` and ``tower_bias`` as the model was trained."""

    factors: int
    similarity: str
    temperature: float
    tower_bias: bool

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Output:
        return cls(params["factors"], params["similarity"], params["temperature"], params["tower_bias"])

    @property
    def width(self) -> int:
        """The dimension of the exported factors."""
        return self.factors + int(self.tower_bias)

    def finish(self, x: torch.Tensor, users: bool) -> torch.Tensor:
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


def embed_in_chunks(
    embed: Callable[[torch.Tensor], torch.Tensor], n: int, width: int, device: torch.device, chunk: int = 8192
) -> np.ndarray:
    """``embed(rows)`` (finished vectors) for rows 0..n-1, in chunks so that memory stays
    bounded for any ``n``. Returns float32 (n, width)."""
    out = []
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=device)
        out.append(embed(idx).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)
