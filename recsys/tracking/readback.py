"""``recsys experiment show``: an experiment's leaderboard read back from the tracking store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import TrackingError
from recsys.leaderboard import board, shown_metrics
from recsys.tracking.store import metric_key
from recsys.tracking.tracker import Tracker


def leaderboard(tracker: Tracker, *, experiment: str | None = None, parent_run_id: str | None = None,
                metric: str | None = None, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The runs of a grid (its latest one in ``experiment`` unless ``parent_run_id``), best first.

    Without any grid in the experiment, its ``recsys train`` runs are ranked instead.
    Failed runs come last with empty metrics.
    """
    client = tracker.client()
    if parent_run_id is None:
        name = experiment or tracker.experiment
        found = client.get_experiment_by_name(name)
        if found is None:
            raise TrackingError(f"no experiment {name!r} in {tracker.uri}")
        ids = [found.experiment_id]
        parents = client.search_runs(ids, "tags.`recsys.kind` = 'grid'", order_by=["attributes.start_time DESC"],
                                     max_results=1)
        if parents:
            parent_run_id = parents[0].info.run_id
            runs = client.search_runs(ids, f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000)
        else:
            runs = client.search_runs(ids, "tags.`recsys.kind` = 'train'", max_results=10000)
    else:
        parent = client.get_run(parent_run_id)
        runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=10000)
    if metric is None:
        metric = client.get_run(parent_run_id).data.params.get("metric", "ndcg@10") if parent_run_id else "ndcg@10"
    shown = shown_metrics(metric, columns)
    return board([_row(run, shown) for run in runs], metric, columns)


def _row(run: Any, shown: Sequence[str]) -> dict[str, Any]:
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    setting = tags.get("recsys.params") or " ".join(
        f"{k}={params[k]}" for k in ("factors", "regularization", "epochs", "loss") if params.get(k) not in (None, "None"))
    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "dataset": tags.get("recsys.dataset", Path(params.get("data_path", "")).name),
        "split": tags.get("recsys.split", params.get("split", "")),
        "model": params.get("model", tags.get("recsys.model", "")),
        "params": setting,
        **{name: metrics.get(metric_key(name), math.nan) for name in shown},
        "fit_seconds": metrics.get("fit_seconds", math.nan),
    }
