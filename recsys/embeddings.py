"""Vectors and the exact search over them: below the models, which score by dot product.

Exact top-k by dot product: users in blocks, seen items masked per block, torch on CPU or
GPU. Memory is bounded by the block: ``block_users x n_items`` scores at a time, never the
dense users-by-items matrix. The block size follows a byte budget, so 100K users by 1M
items runs in the same few hundred MB as 1K by 10K. Models answer queries with it;
approximate indices (:mod:`recsys.retrieval`) answer the same ``search`` and are judged
against it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.vocabulary import Vocabulary
from recsys.device import resolve_device

DEFAULT_BLOCK_BYTES = 256 * 2**20


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def block_size_for(n_items: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Users per block so that one block of float32 scores fits in ``block_bytes``."""
    return int(max(1, min(65536, block_bytes // (4 * max(n_items, 1)))))


def iter_blocks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class ExactIndex:
    """All-items dot-product search over a fixed item matrix kept on one device.

    Exact, and pruned where it can be: items are scanned in chunks from the longest vector
    to the shortest (the first an eighth of the catalogue, each next one as large as all
    before it), and a user leaves the scan once its ``k``-th best score beats its own
    length times the longest vector left, which no item left can then score above
    (Cauchy-Schwarz). Where vector length follows popularity, as it does for factorization
    models, most users stop after the first chunk or two (ALS on lastfm-2k, MovieLens and a
    power-law synthetic log: 2-3 times faster); where lengths are alike (amazon-book) every
    user scans the rest in one more pass, about 5% slower than a single pass.

    Where the CPU multiplies bfloat16 natively (AVX512-BF16, AMX: 6.7 times torch's float32
    rate on this product on an AMD EPYC), each chunk after the first is screened first: bfloat16 scores, plus
    what rounding may have cost them, say which users might find an item there, and only
    those are scored exactly (the 10M synthetic log: 2% of the users in the second chunk).
    The result is the same exact top-k.

    Parameters
    ----------
    item_vectors : ndarray, shape (n_items, d)
    device : "auto", "cpu", "cuda" or a torch.device
    block_bytes : int
        Budget for one block of scores (float32, and the bfloat16 ones when screening);
        bounds memory.
    screen : bool or None
        Screen chunks in bfloat16; None (default): where the CPU does bfloat16 natively
        (``torch.cpu``'s AVX512-BF16 and AMX probes). CPU only: on CUDA, cuBLAS may sum
        bfloat16 products in bfloat16, beyond the screen's bound.

    Examples
    --------
    >>> index = ExactIndex(np.eye(3, dtype=np.float32))
    >>> index.search(np.array([[0.0, 1.0, 0.5]], dtype=np.float32), k=2)[0]
    array([[1, 2]])
    """

    SLACK = 1e-4  # relative margin on the bound: float32 dot products round either way
    REST_SHARE = 0.9  # when more of a chunk's users than this might need the last chunk: the rest in one
    FEW_ROWS = 64  # fewer rows: no screen, whose fixed costs would outweigh it

    def __init__(
        self,
        item_vectors: np.ndarray,
        device: str | torch.device | None = "auto",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        screen: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        items = torch.as_tensor(np.ascontiguousarray(item_vectors, dtype=np.float32)).to(self.device)
        self.n_items, self.dim = items.shape
        norms = lengths_of(items).cpu().numpy()
        # Longest first (ties by index, so that the result does not depend on the device)...
        order = np.lexsort((np.arange(self.n_items), -norms))
        sorted_norms = norms[order]
        self._chunks = chunk_bounds(self.n_items)
        if sorted_norms[self._chunks[0][1] % self.n_items] * (1.0 + self.SLACK) >= sorted_norms[0]:
            # The items after the first chunk are as long as the longest (unit vectors for
            # cosine, or lengths alike): no user could ever stop early; one pass.
            self._chunks = [(0, self.n_items)]
        # The longest vector from each chunk on (0 past the last): the bound a chunk's users
        # are held to, and what a user still needs to beat once past a chunk.
        self._longest_from = [float(sorted_norms[start]) for start, _ in self._chunks] + [0.0]
        # ...but within a chunk in index order: scores that fall along a row are a slow case
        # for torch's top-k (a third slower), and the bound needs only each chunk's longest.
        for start, end in self._chunks:
            order[start:end].sort()
        self._order = torch.as_tensor(order, device=self.device)
        self._rank = np.empty(self.n_items, dtype=np.int64)
        self._rank[order] = np.arange(self.n_items)
        self._items = items[self._order]
        self._chunk_ends = np.array([end for _, end in self._chunks])
        if screen and self.device.type != "cpu":
            # cuBLAS may sum bfloat16 products in bfloat16 (split-K), beyond the bound below.
            raise ValueError(f"screening in bfloat16 is for the CPU, not {self.device}")
        wanted = fast_bfloat16(self.device) if screen is None else bool(screen)
        self._screen_items = self._items.bfloat16() if wanted and len(self._chunks) > 1 else None
        self.screens = self._screen_items is not None
        # Two bytes more a score where chunks are screened (their bfloat16 scores beside the exact ones).
        self.block_users = block_size_for(self.n_items, block_bytes * 2 // 3 if self.screens else block_bytes)
        # What a bfloat16 score may be off by, per unit of user length and of item length:
        # both inputs rounded to 8 bits (2^-8 each), the output rounded (2^-8), float32 sums on
        # both sides (d 2^-24 each: the exact scores it is compared with are float32 too), and
        # 2^-10 to spare for the second-order terms, the rounding of the unit user vectors and
        # of the item lengths, and the comparison's own.
        self._screen_error = 3 * 2.0**-8 + 2.0**-10 + 2 * self.dim * 2.0**-24

    def search(
        self,
        user_vectors: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each row of ``user_vectors`` (shape (B, d)).

        ``exclude`` (CSR, shape (B, n_items)) lists items to skip per row. Returns
        ``(indices, scores)``, each of shape (B, k), best first. Where fewer than ``k``
        items remain, the tail is padded with index -1 and score -inf.
        """
        user_vectors = np.asarray(user_vectors, dtype=np.float32)
        n = user_vectors.shape[0]
        k_eff = min(k, self.n_items)
        out_idx = np.full((n, k), -1, dtype=np.int64)
        out_scores = np.full((n, k), -np.inf, dtype=np.float32)
        if n == 0 or k_eff == 0:
            return out_idx, out_scores
        with torch.inference_mode():
            # One score buffer for all blocks and chunks: a fresh allocation per block is a
            # fresh mmap whose pages all fault in again (a third of the time at 1M items).
            rows = min(n, self.block_users)
            buffer = torch.empty(rows * self.n_items, device=self.device)
            screen_buffer = None if self._screen_items is None else torch.empty(
                rows * (self.n_items - self._chunks[0][1]), dtype=torch.bfloat16, device=self.device)
            for block in iter_blocks(n, self.block_users):
                users = torch.as_tensor(user_vectors[block]).to(self.device)
                top_scores, top_idx = self._search_block(users, k_eff, None if exclude is None else exclude[block],
                                                         buffer, screen_buffer)
                # One device-to-host copy per block (a sync point on CUDA).
                out_idx[block, :k_eff] = self._order[top_idx].cpu().numpy()
                out_scores[block, :k_eff] = top_scores.cpu().numpy()
        out_idx[~np.isfinite(out_scores)] = -1
        return out_idx, out_scores

    def _search_block(self, users: torch.Tensor, k: int, exclude: sp.csr_matrix | None, buffer: torch.Tensor,
                      screen_buffer: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` scores and positions (in the length order) for one block of users."""
        b = users.shape[0]
        top_scores = torch.full((b, k), -torch.inf, device=self.device)
        top_idx = torch.zeros((b, k), dtype=torch.int64, device=self.device)
        excluded = None if exclude is None or not exclude.nnz else self._by_chunk(exclude)
        lengths = lengths_of(users)
        # Scores against unit users, for the screen; ``scale`` (the lengths, or the smallest
        # float32 for a zero user) turns them back into scores.
        scale = lengths.clamp_min(torch.finfo(torch.float32).tiny)
        unit = None if screen_buffer is None or b < self.FEW_ROWS else (users / scale[:, None]).bfloat16()
        active = torch.arange(b, device=self.device)
        start, chunk, rest_at_once = 0, 0, False
        while True:
            end = self._chunks[chunk][1]
            if rest_at_once:
                end, chunk = self.n_items, len(self._chunks) - 1
            rows = active
            # Not the rest at once (most rows need it), nor a few rows (the exact product is cheap).
            if start > 0 and unit is not None and not rest_at_once and len(active) >= self.FEW_ROWS:
                rows = self._screened(unit, scale, active, top_scores[:, k - 1], start, end, chunk, excluded,
                                      screen_buffer)
            m = len(rows)
            if m:
                scores = self._scores(users if m == b else users[rows], start, end, buffer)
                self._mask(scores, rows, b, start, end, excluded)
                if start == 0 or rest_at_once:
                    found_scores, found = torch.topk(scores, min(k, end - start), dim=1, sorted=start == 0)
                else:
                    # Only rows with a score above their k-th best so far can change: usually a
                    # few (the 10M synthetic log: 0.4% of those in the second chunk), and a
                    # comparison costs a fraction of a top-k.
                    better = torch.nonzero((scores > top_scores[rows, k - 1, None]).any(1)).squeeze(1)
                    if 2 * len(better) > m:  # most rows: no copy (it would take memory beyond the block's)
                        found_scores, found = torch.topk(scores, min(k, end - start), dim=1, sorted=False)
                    else:
                        found_scores, found = torch.topk(scores[better], min(k, end - start), dim=1, sorted=False)
                        rows = rows[better]
                if start == 0 and found.shape[1] == k:
                    top_scores, top_idx = found_scores, found
                elif len(rows):
                    merged_scores, pick = torch.topk(torch.cat([top_scores[rows], found_scores], 1), k, dim=1)
                    top_idx[rows] = torch.gather(torch.cat([top_idx[rows], found + start], 1), 1, pick)
                    top_scores[rows] = merged_scores
            if end == self.n_items:
                break
            # Still in the scan: a user whose k-th best might yet be beaten by an item left.
            kth = top_scores[active, k - 1]
            reach = lengths[active] * (1.0 + self.SLACK)
            active = active[kth < reach * self._longest_from[chunk + 1]]
            if len(active) == 0:
                break
            # Where (nearly) every user left might yet need the last chunk too, as when
            # lengths are alike, chunks only add overhead: the rest in one.
            rest_at_once = bool((kth < reach * self._longest_from[-2]).float().mean() > self.REST_SHARE)
            start, chunk = end, chunk + 1
        return top_scores, top_idx

    def _scores(self, users: torch.Tensor, start: int, end: int, buffer: torch.Tensor) -> torch.Tensor:
        """Float32 scores of ``users`` against the items [start, end), in ``buffer``. (oneDNN's
        packed product was 1.2-1.3x faster here on an AMD CPU, but it returns a fresh tensor
        each call, and those fragmented the heap: +0.9 GiB over the 20M log's evaluation.)"""
        m = len(users)
        scores = buffer[: m * (end - start)].view(m, end - start)
        return torch.matmul(users, self._items[start:end].T, out=scores)

    def _screened(self, unit: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, kth: torch.Tensor,
                  start: int, end: int, chunk: int, excluded: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None,
                  screen_buffer: torch.Tensor) -> torch.Tensor:
        """The ``rows`` whose ``kth`` best score an item of the chunk [start, end) might beat,
        judged by bfloat16 scores and what they may be off by: a sixth of the exact product's
        cost where the CPU multiplies bfloat16 natively, and most rows go no further."""
        m, width = len(rows), end - start
        approx = screen_buffer[: m * width].view(m, width)
        torch.matmul(unit[rows], self._screen_items[start:end].T, out=approx)
        self._mask(approx, rows, len(unit), start, end, excluded)
        # Inputs flushed to zero where tiny (below 2^-126) cost at most that much per term.
        off_by = self._screen_error * self._longest_from[chunk] + self.dim * 2.0**-120
        best = torch.nan_to_num(approx.amax(1).float(), nan=torch.inf)  # a NaN item: scored exactly, as unscreened
        return rows[(best + off_by) * scale[rows] >= kth[rows]]

    def _chunk_of(self, positions: Any) -> Any:
        """The chunk of each position in the length order."""
        return np.searchsorted(self._chunk_ends, positions, side="right")

    def _by_chunk(self, exclude: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """A block's excluded entries as (rows, positions in the length order), grouped by
        chunk, and where each chunk's group starts (one more: the end), so that masking a
        chunk reads only its own entries."""
        rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        positions = self._rank[exclude.indices]
        chunk_of = self._chunk_of(positions).astype(np.min_scalar_type(len(self._chunks)))
        grouped = np.argsort(chunk_of, kind="stable")  # a radix sort on one byte (chunks double: a few)
        bounds = np.searchsorted(chunk_of[grouped], np.arange(len(self._chunks) + 1))
        return (torch.from_numpy(rows[grouped]).to(self.device), torch.from_numpy(positions[grouped]).to(self.device),
                bounds)

    def _mask(self, scores: torch.Tensor, rows: torch.Tensor, b: int, start: int, end: int,
              excluded: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None) -> None:
        """Excluded items of the chunks [start, end) to -inf in ``scores`` (one row per entry of ``rows``)."""
        if excluded is None:
            return
        excluded_rows, excluded_positions, bounds = excluded
        first, last = bounds[self._chunk_of(start)], bounds[self._chunk_of(end - 1) + 1]
        entry_rows, columns = excluded_rows[first:last], excluded_positions[first:last] - start
        if len(rows) < b:
            alive = torch.zeros(b, dtype=torch.bool, device=self.device)
            alive[rows] = True
            kept = alive[entry_rows]
            slot = torch.empty(b, dtype=torch.int64, device=self.device)  # a row's place among ``rows``
            slot[rows] = torch.arange(len(rows), device=self.device)
            entry_rows, columns = slot[entry_rows[kept]], columns[kept]
        scores[entry_rows, columns] = -torch.inf


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (AVX512-BF16 or AMX on the CPU),
    so that screening with them pays: ``torch.cpu``'s own probes, private, so a torch
    without them means no. Never on CUDA (see :class:`ExactIndex`)."""
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def lengths_of(vectors: torch.Tensor) -> torch.Tensor:
    """Row lengths, scaled by each row's largest component first: float32 squares of
    components below about 1e-19 go subnormal or to zero, and a length that comes out short
    would let the search stop a user too early (as BLAS's nrm2 scales, for the same reason)."""
    scale = vectors.abs().amax(1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)
    return torch.linalg.vector_norm(vectors / scale, dim=1) * scale.squeeze(1)


def chunk_bounds(n_items: int, first: int = 8, smallest: int = 4096) -> list[tuple[int, int]]:
    """The chunks of a length-ordered catalogue that :class:`ExactIndex` scans in turn:
    a ``first``-th of it (at least ``smallest`` items: torch's top-k pays about 8 us a row
    whatever its width, so narrow chunks cost more than they save), then each chunk as
    large as everything before it."""
    bounds, size = [0], max(smallest, -(-n_items // first))
    while bounds[-1] < n_items:
        bounds.append(min(n_items, bounds[-1] + size))
        size = bounds[-1] - bounds[0]  # double: the next chunk as large as everything before it
    return list(itertools.pairwise(bounds))


def cosine_neighbours(factors: np.ndarray, item_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of highest cosine with each row ``item_index`` of ``factors``, itself left out.

    Returns ``(indices, cosines)``, each of shape (len(item_index), k), padded with -1 and
    NaN where there are fewer than ``k`` other rows.
    """
    item_index = np.asarray(item_index, dtype=np.int64)
    normed = unit_rows(factors)
    exclude = sp.csr_matrix(
        (np.ones(len(item_index)), item_index, np.arange(len(item_index) + 1)),
        shape=(len(item_index), len(normed)),
    )
    found, sims = ExactIndex(normed, "cpu").search(normed[item_index], k, exclude)
    sims = sims.astype(np.float32)
    sims[found < 0] = np.nan
    return found, sims


@dataclass(frozen=True, eq=False)
class Embeddings:
    """A fitted model's vectors and what queries need, as plain arrays: what retrieval,
    evaluation and diagnostics take (from :meth:`recsys.models.Recommender.embeddings`, or
    assembled from factors trained elsewhere).

    ``user_vectors`` (n_users, d') and ``item_vectors`` (n_items, d') are the two sides of
    the score: their dot product is the model's score (biases folded into extra
    dimensions). ``item_embeddings`` (n_items, d) place items relative to each other
    (similar items, maps, clusters, diversity), ``user_embeddings`` (n_users, d) users. ``seen`` (n_users, n_items) holds the
    training entries to exclude; ``item_popularity`` (n_items,) the training users per item.
    ``fingerprint`` names the training data (it ties an index to the model).
    """

    users: Vocabulary
    items: Vocabulary
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_embeddings: np.ndarray
    user_embeddings: np.ndarray
    seen: sp.csr_matrix
    item_popularity: np.ndarray
    name: str = ""
    fingerprint: str = ""
    predicts_ratings: bool = False
    scores_cold_items: bool = False
    global_bias: float | None = None
    """The global term of a score with folded biases (``[p_u, 1, b_u + mu]`` against
    ``[q_i, b_i, 1]``), which rates a user or item without training entries from the other
    side's bias alone; None when the score has no biases."""
    rating_range: tuple[float, float] | None = None
    """The (min, max) of the ratings a rating model was trained on: its predicted ratings
    are clipped to it (rankings use the scores as they are)."""
    _indices: dict[Any, ExactIndex] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, source: Embeddings | HasEmbeddings) -> Embeddings:
        """``source`` itself, or the embeddings of a fitted model."""
        return source if isinstance(source, Embeddings) else source.embeddings()

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def exact_index(self, device: str | torch.device | None = "auto") -> ExactIndex:
        """The exact dot-product index over :attr:`item_vectors` (built once per device)."""
        device = resolve_device(device)  # "auto" and the device it means share one copy
        if device not in self._indices:
            self._indices[device] = ExactIndex(self.item_vectors, device)
        return self._indices[device]

    def search(self, user_index: np.ndarray, k: int, exclude: sp.csr_matrix | None = None,
               index: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores of known users, shape (n, k) each (``exclude``:
        items to skip per user; ``index``: any retrieval with ``search``, exact by default)."""
        index = self.exact_index() if index is None else index
        return index.search(self.user_vectors[np.asarray(user_index, dtype=np.int64)], k, exclude)

    def score_pairs(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """Scores of (user, item) index pairs, shape (n,)."""
        u, i = self.user_vectors[user_index], self.item_vectors[item_index]
        return np.einsum("ij,ij->i", u, i).astype(np.float32)

    def as_ratings(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` as predicted ratings: within :attr:`rating_range`, clipped in place
        (unchanged without one); NaN stays NaN."""
        if self.rating_range is not None:
            np.clip(scores, *self.rating_range, out=scores)
        return scores

    def popular_items(self, k: int) -> np.ndarray:
        """Indices of the ``k`` items with the most training users, padded with -1."""
        order = np.argsort(-self.item_popularity, kind="stable")[:k]
        return np.pad(order, (0, k - len(order)), constant_values=-1)

    def item_ids(self, item_index: np.ndarray) -> np.ndarray:
        """External item ids for indices; -1 (padding) becomes -1 or None."""
        item_index = np.asarray(item_index)
        pad = item_index < 0
        ids = self.items.ids[np.where(pad, 0, item_index)]
        if pad.any():
            ids = ids.astype(object) if not self.items.is_integer else ids
            ids[pad] = -1 if self.items.is_integer else None
        return ids


class HasEmbeddings(Protocol):
    """Anything that gives :class:`Embeddings` (a fitted model)."""

    def embeddings(self) -> Embeddings: ...


EmbeddingSource = Embeddings | HasEmbeddings
"""What retrieval, evaluation and diagnostics take: embeddings, or a fitted model."""
