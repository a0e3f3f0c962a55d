"""Pick model defaults from the searches of run_quality.py: the setting that does best in the worst case.

For each model (``als`` from the reference's grid, ``ials`` from ours), every setting scored
on both data sets with the weighting ``auto`` picks there (binary for ratings, log for
counts) gets, per data set, its validation recall@20 divided by that data set's best; the
default is the setting with the largest minimum ratio (ties: the cheaper, fewer factors).
That favours settings that are good everywhere over one data set's optimum.

    .venv/bin/python experiments/quality/defaults.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
AUTO = {"ml-latest-small": "binary", "lastfm-2k": "log"}
EPOCHS = {"ref": "iterations", "ials": "epochs"}


def robust(stage: str) -> tuple[dict[str, Any], dict[str, float]]:
    tables: dict[str, dict[tuple, float]] = {}
    for name, weighting in AUTO.items():
        rows = json.loads((RESULTS / f"{name}.{stage}.json").read_text())["grid"]
        best = max(r["val_recall"] for r in rows)
        tables[name] = {
            tuple(sorted((k, v) for k, v in r.items() if k not in ("val_recall", "weighting"))): r["val_recall"] / best
            for r in rows if r["weighting"] == weighting
        }
    common = set.intersection(*(set(t) for t in tables.values()))
    key = max(common, key=lambda c: (min(t[c] for t in tables.values()), -dict(c)["factors"]))
    return dict(key), {name: t[key] for name, t in tables.items()}


def main() -> None:
    for stage, model in (("ref", "als"), ("ials", "ials")):
        params, ratios = robust(stage)
        shown = ", ".join(f"{k}={v:g}" for k, v in params.items())
        print(f"{model}: {shown}  (validation recall@20 / each data set's best: "
              + ", ".join(f"{n} {100 * r:.1f}%" for n, r in ratios.items()) + ")")


if __name__ == "__main__":
    main()
