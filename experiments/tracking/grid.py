"""An experiment grid through MLflow tracking: every combination a child run, one leaderboard.

One script, one config (``configs/<grid>.toml``, the grid file of ``recsys experiment run``:
data sets, splits, models, hyper-parameter grids); each run writes the leaderboard to
``results/<grid>.<date>.<commit>.json`` and ``table`` puts the newest into the README. Run
from the repository root:

    python -m experiments.tracking.grid run [--grid ml-100k] [--tracking-uri sqlite:///mlflow.db]
    python -m experiments.tracking.grid table

The protocol is the library's (:func:`recsys.jobs.run_grid`, as ``recsys experiment run``
calls it): each combination trained and evaluated by ``recsys.jobs.train`` in a child run of
one parent run, full ranking with each user's training items excluded, ranked by the grid's
metric.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from experiments import common
from recsys.leaderboard import board, to_markdown

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGS = HERE / "configs"
HEADLINE_ROWS = 5


def stage_run(name: str, tracking_uri: str | None) -> None:
    from recsys.jobs import read_grid, run_grid
    from recsys.tracking import Tracker

    path = CONFIGS / f"{name}.toml"
    os.environ.setdefault("RECSYS_BENCHMARK_DATA", str(common.DATA_DIR))  # the grid's data path names it
    grid = read_grid(path)
    tracker = Tracker(tracking_uri, grid.experiment)
    tracker.open()  # fail before the first combination if the store is unreachable
    common.say(f"{len(grid)} combinations, recorded in {tracker.uri} (experiment {grid.experiment!r})")

    def report(combo, state: str, value: float | None) -> None:
        common.say(f"  {combo.name}: " + (f"{grid.metric} {value:.4f}" if value is not None else state))

    with tracker.run(f"grid-{name}", kind="grid") as parent:
        result = run_grid(grid, parent, on_combination=report)
    rows = result.leaderboard.reset_index(drop=True).to_dict(orient="records")
    out = common.write_result(RESULTS, name, {
        "grid": str(path.relative_to(common.ROOT)), "experiment": grid.experiment, "metric": grid.metric,
        "tracking_uri": tracker.uri, "parent_run_id": result.run_id, "failed": result.failed, "rows": rows})
    common.say(f"wrote {out}")


def leaderboard(name: str, top: int | None = None) -> list[str]:
    result = common.latest_result(RESULTS, name)
    if result is None:
        return [f"(no results yet: run `python -m experiments.tracking.grid run --grid {name}`)"]
    table = board(result["rows"], result["metric"])
    if top is not None:
        table = table.head(top)
    return [f"`{common.result_file_name(RESULTS, result)}` ({common.machine_words(result['machine'])}).", "",
            *to_markdown(table).splitlines()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "table"])
    parser.add_argument("--grid", default="ml-100k", help="the config: configs/GRID.toml")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    args = parser.parse_args(argv)
    if args.stage == "run":
        stage_run(args.grid, args.tracking_uri)
        return
    module = "experiments.tracking.grid"
    common.publish_table(module, leaderboard(args.grid), [(HERE / "README.md", args.grid)])
    common.publish_table(module, leaderboard(args.grid, HEADLINE_ROWS), [(HERE.parent / "README.md", f"tracking/{args.grid}")])


if __name__ == "__main__":
    main()
