"""Experiment tracking with MLflow: recorded runs, a servable model, experiment grids.

- :class:`Tracker` opens the store (``--tracking-uri``, ``$MLFLOW_TRACKING_URI``, else
  ``sqlite:///mlflow.db``) and checks it before any work; :meth:`Tracker.run` records a
  job and marks it ``FAILED`` if the job raises.
- :func:`train`, :func:`evaluate_model`, :func:`tune`: the jobs of
  :mod:`recsys.workflows` and :mod:`recsys.tuning`, recorded.
- :func:`load_recommender`: a model from a directory or ``runs:/<id>/model``.
- :mod:`recsys.tracking.grid`: ``recsys experiment run/show``.
"""

from recsys.tracking.jobs import (
    data_params,
    evaluate_model,
    log_evaluation,
    log_training,
    recommend_to_file,
    train,
    tune,
)
from recsys.tracking.serving import load_recommender, recommend_frame, resolve_model_dir
from recsys.tracking.tracker import (
    DEFAULT_URI,
    NullRun,
    TrackedRun,
    Tracker,
    check_store,
    metric_key,
    resolve_uri,
    tracking_enabled,
)

__all__ = [
    "DEFAULT_URI",
    "NullRun",
    "TrackedRun",
    "Tracker",
    "check_store",
    "data_params",
    "evaluate_model",
    "load_recommender",
    "log_evaluation",
    "log_training",
    "metric_key",
    "recommend_frame",
    "recommend_to_file",
    "resolve_model_dir",
    "resolve_uri",
    "tracking_enabled",
    "train",
    "tune",
]
