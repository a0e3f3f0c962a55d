"""Offline evaluation: full-ranking metrics on held-out data."""

from recsys.evaluation.evaluate import DEFAULT_KS, Evaluation, evaluate
from recsys.evaluation.metrics import PER_USER_METRICS, user_metrics
from recsys.evaluation.validation import Validation

__all__ = ["DEFAULT_KS", "PER_USER_METRICS", "Evaluation", "Validation", "evaluate", "user_metrics"]
