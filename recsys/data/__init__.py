"""Interaction data: the :class:`Interactions` currency, readers, splits, synthetic data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.lazy import lazy_exports

if TYPE_CHECKING:
    from recsys.data.interactions import Feedback, Interactions
    from recsys.data.io import read_interactions, write_interactions
    from recsys.data.vocabulary import Vocabulary

# Loaded on first use: `recsys.data.options` and other light modules load without pandas.
_HOME = {"Feedback": "interactions", "Interactions": "interactions", "read_interactions": "io",
         "write_interactions": "io", "Vocabulary": "vocabulary"}


__getattr__, __dir__ = lazy_exports(__name__, _HOME)

__all__ = ["Feedback", "Interactions", "Vocabulary", "read_interactions", "write_interactions"]
