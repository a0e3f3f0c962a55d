"""Offline evaluation: full-ranking metrics on held-out data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.lazy import lazy_exports

if TYPE_CHECKING:
    from recsys.evaluation.full_ranking import Evaluation, evaluate
    from recsys.evaluation.metrics import DEFAULT_KS, PER_USER_METRICS, user_metrics
    from recsys.evaluation.validation import Validation

# Loaded on first use: the metrics and their cut-offs load without torch (the search does not).
_HOME = {"DEFAULT_KS": "metrics", "PER_USER_METRICS": "metrics", "user_metrics": "metrics",
         "Evaluation": "full_ranking", "evaluate": "full_ranking", "Validation": "validation"}

__getattr__, __dir__ = lazy_exports(__name__, _HOME)

__all__ = ["DEFAULT_KS", "PER_USER_METRICS", "Evaluation", "Validation", "evaluate", "user_metrics"]
