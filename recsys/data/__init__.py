"""Interaction data: the :class:`Interactions` currency, readers, splits, synthetic data."""

from recsys.data.interactions import Feedback, Interactions
from recsys.data.io import read_interactions, write_interactions
from recsys.data.vocabulary import Vocabulary

__all__ = ["Feedback", "Interactions", "Vocabulary", "read_interactions", "write_interactions"]
