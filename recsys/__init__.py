"""recsys: recommender systems on learned embeddings."""

from recsys.device import brief_openmp_waits

brief_openmp_waits()  # before torch or implicit load their OpenMP runtimes

__version__ = "0.1.0"
