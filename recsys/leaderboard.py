"""A leaderboard: runs of an experiment as rows, ranked by one metric, as a table or Markdown.

Built from a grid's own results (:func:`recsys.jobs.grid.run_grid`) and from the runs of a
tracking store (:func:`recsys.tracking.leaderboard`) alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

COLUMNS = ("run_id", "status", "dataset", "split", "model", "params")


def shown_metrics(metric: str, columns: Sequence[str] = ()) -> list[str]:
    """The metric columns of a board: ``metric`` first, then ``columns`` (default: recall,
    NDCG, MAP and coverage at the same cut-off)."""
    shown = [metric, *[c for c in columns if c != metric]]
    if not columns:
        k = metric.split("@")[1] if "@" in metric else "10"
        shown += [m for m in (f"recall@{k}", f"ndcg@{k}", f"map@{k}", f"coverage@{k}") if m != metric]
    return shown


def board(rows: Sequence[Mapping[str, Any]], metric: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Rows (the :data:`COLUMNS`, metric values by name, ``fit_seconds``) ranked by ``metric``,
    best first, runs without it last; the index is the rank, from 1."""
    shown = shown_metrics(metric, columns)
    out = pd.DataFrame(
        [{**{c: row.get(c, "") for c in COLUMNS}, **{m: row.get(m, math.nan) for m in shown},
          "fit_seconds": row.get("fit_seconds", math.nan)} for row in rows],
        columns=[*COLUMNS, *shown, "fit_seconds"],
    )
    out = out.sort_values(metric, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    out.index = out.index + 1
    out.index.name = "rank"
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """The board as a Markdown table (run ids shortened to 8 characters)."""
    frame = table.copy()
    frame["run_id"] = frame["run_id"].astype(str).str[:8]
    lines = ["| rank | " + " | ".join(frame.columns) + " |", "|" + "---|" * (len(frame.columns) + 1)]
    for rank, row in frame.iterrows():
        lines.append(f"| {rank} | " + " | ".join(_cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)
