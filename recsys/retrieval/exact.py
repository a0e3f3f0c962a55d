"""Exact retrieval for a fitted model: the interface of :class:`~recsys.retrieval.AnnoyIndex`
over the exact kernel of :mod:`recsys.embeddings`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.embeddings import Embeddings, EmbeddingSource, cosine_neighbours


class ExactRetrieval:
    """Exact retrieval for one model: the same interface as :class:`AnnoyIndex`.

    :meth:`search` ranks every item by the model's score (bias-folded dot product);
    :meth:`similar` by cosine of the item factors.
    """

    name = "exact"

    def __init__(self, model: EmbeddingSource, device: str | torch.device | None = "auto") -> None:
        self.embeddings = Embeddings.of(model)
        self.index = self.embeddings.exact_index(device)

    def search(
        self, user_vectors: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(user_vectors, k, exclude)

    def similar(self, item_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return cosine_neighbours(self.embeddings.item_embeddings, item_index, k)
