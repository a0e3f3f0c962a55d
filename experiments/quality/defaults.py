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
MAX_FACTORS = 128
"""Defaults stay at or below 128 factors: a default must also suit catalogues of millions of items
(memory grows with d, each solve with d^2)."""


def robust(stage: str, top: int = 5) -> list[tuple[dict[str, Any], dict[str, float]]]:
    tables: dict[str, dict[tuple, float]] = {}
    for name, weighting in AUTO.items():
        rows = json.loads((RESULTS / f"{name}.{stage}.json").read_text())["grid"]
        best = max(r["val_recall"] for r in rows)
        tables[name] = {
            tuple(sorted((k, v) for k, v in r.items() if k not in ("val_recall", "weighting"))): r["val_recall"] / best
            for r in rows if r["weighting"] == weighting
        }
    common = [c for c in set.intersection(*(set(t) for t in tables.values())) if dict(c)["factors"] <= MAX_FACTORS]
    ranked = sorted(common, key=lambda c: (min(t[c] for t in tables.values()), -dict(c)["factors"]), reverse=True)
    return [(dict(c), {name: t[c] for name, t in tables.items()}) for c in ranked[:top]]


def main() -> None:
    for stage, model in (("ref", "als"), ("ials", "ials")):
        print(f"{model} (best first; validation recall@20 / each data set's best):")
        for params, ratios in robust(stage):
            shown = ", ".join(f"{k}={v:g}" for k, v in params.items())
            print(f"  {shown}: " + ", ".join(f"{n} {100 * r:.1f}%" for n, r in ratios.items()))


if __name__ == "__main__":
    main()
