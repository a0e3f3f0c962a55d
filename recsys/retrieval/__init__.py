"""Retrieval: approximate top-k through Annoy, exact retrieval with the same interface (over
:class:`recsys.embeddings.ExactIndex`), and the batch writer.

Both retrievals answer the same two queries, so they are interchangeable everywhere
(``model.recommend(..., index=...)``, ``model.similar_items(..., index=...)``, the batch
job, evaluation):

- ``search(user_vectors, k, exclude) -> (item indices (B, k), scores (B, k))``
- ``similar(item_index, k) -> (item indices (n, k), cosines (n, k))``
"""

from recsys.retrieval.annoy_index import DEFAULT_TREES, AnnoyIndex, build_index
from recsys.retrieval.batch import RecommendResult, open_retrieval, recommend_to_file
from recsys.retrieval.exact import ExactRetrieval

__all__ = [
    "DEFAULT_TREES",
    "AnnoyIndex",
    "ExactRetrieval",
    "RecommendResult",
    "build_index",
    "open_retrieval",
    "recommend_to_file",
]
