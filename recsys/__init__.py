"""recsys: recommender systems on learned embeddings."""

__version__ = "0.1.0"
