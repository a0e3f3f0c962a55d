"""Retrieval: exact top-k by blocked matrix product (and approximate search)."""

from recsys.retrieval.exact import ExactIndex

__all__ = ["ExactIndex"]
