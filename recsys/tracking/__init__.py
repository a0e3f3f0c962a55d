"""Experiment tracking with MLflow: where runs are recorded, and the servable model.

- :class:`Tracker` names the store (``--tracking-uri``, ``$MLFLOW_TRACKING_URI``, else
  ``sqlite:///mlflow.db``) and checks it before any work; :meth:`Tracker.run` gives the
  :class:`TrackedRun` a job reports to (:mod:`recsys.jobs`) and marks it ``FAILED`` if the
  job raises. MLflow runs in a worker process (:mod:`recsys.tracking.worker`), so that its
  import and the store's opening overlap the job.
- :func:`load_recommender`, :func:`resolve_model_dir`: a model from a directory or
  ``runs:/<id>/model``; the pyfunc model that serves it.
- :func:`leaderboard`: an experiment's runs ranked, read back from the store.

Nothing here imports the jobs: they report to a :class:`recsys.runs.Run`, which this
package implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.lazy import lazy_exports

if TYPE_CHECKING:
    from recsys.tracking.readback import leaderboard
    from recsys.tracking.serving import load_recommender, recommend_frame, resolve_model_dir
    from recsys.tracking.store import (
        DEFAULT_URI,
        check_store,
        metric_key,
        resolve_uri,
        tracking_enabled,
    )
    from recsys.tracking.tracker import TrackedRun, Tracker

# Loaded on first use: a tracked command starts its MLflow process (Tracker) before
# pandas, which the leaderboard and the serving code import, has loaded.
_HOME = {
    "leaderboard": "readback",
    "load_recommender": "serving", "recommend_frame": "serving", "resolve_model_dir": "serving",
    "DEFAULT_URI": "store", "check_store": "store", "metric_key": "store", "resolve_uri": "store",
    "tracking_enabled": "store",
    "TrackedRun": "tracker", "Tracker": "tracker",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOME)

__all__ = [
    "DEFAULT_URI",
    "TrackedRun",
    "Tracker",
    "check_store",
    "leaderboard",
    "load_recommender",
    "metric_key",
    "recommend_frame",
    "resolve_model_dir",
    "resolve_uri",
    "tracking_enabled",
]
