"""recsys: recommender systems on learned embeddings."""

from recsys.device import passive_openmp

passive_openmp()  # before torch or implicit load their OpenMP runtimes

__version__ = "0.1.0"
