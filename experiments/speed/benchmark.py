"""Training speed on a quiet and on a busy machine: samples/s per model, and how much each
slows down when other processes want the same CPUs.

Stages (run from the repository root):

  python -m experiments.speed.benchmark contention [--runs 3] [--busy 0 2 4] [--models ...]
      each model's fit on ML-100K's u1.base, alone and beside N busy processes (pure-Python
      loops, one CPU each), every run kept: results/contention.<date>.<commit>.json
  python -m experiments.speed.benchmark jobs
      the whole `recsys train` command with each torch model's defaults (two-tower with
      u.user and u.item, mf, mf --loss mse and bpmf on u1): results/jobs.<date>.<commit>.json
  python -m experiments.speed.benchmark fixed [--runs 5]
      what a command costs before it does any work: interpreter, imports (torch, MLflow),
      a tiny `recsys train` (the bundled sample, popular) and a job of a few seconds (als
      on u1) with and without tracking in a local SQLite store: results/fixed.<date>.<commit>.json
  python -m experiments.speed.benchmark table
      the tables in README.md, from the newest result of each stage (and of each commit
      for the before/after rows)

Each fit runs in a process of its own (``fit`` stage, internal) so that one model's threads
and memory do not leak into the next; its time is the fit alone, read inside that process.
Data: ``$RECSYS_BENCHMARK_DATA`` (default /work/shared/data) holding ml-100k's original files.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.common import DATA_DIR, ROOT, publish_table, write_result

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Each model at its defaults but for the epochs: enough that every quiet fit lasts 2-7 s.
# (Until 2026-12-02 als ran 5 epochs and ials 3, fits of 0.2-0.3 s: beside busy processes
# their time was mostly the scheduler's time slices, not the model's throughput.)
MODELS: dict[str, dict[str, Any]] = {
    "als": {"model": "als", "params": {"epochs": 40}},
    "ials": {"model": "ials", "params": {"epochs": 40}},
    "mf": {"model": "mf", "params": {"epochs": 5}},
    "mf-mse": {"model": "mf", "params": {"epochs": 25, "loss": "mse"}},
    "two-tower": {"model": "two-tower", "params": {"epochs": 2}, "features": True},
}


def ml100k(data_dir: Path) -> Path:
    folder = Path(data_dir) / "ml-100k"
    if not (folder / "u1.base").is_file():
        raise SystemExit(f"{folder}/u1.base: not found; set RECSYS_BENCHMARK_DATA to the folder of the public data sets")
    return folder


def fit_once(name: str, data_dir: Path) -> dict[str, Any]:
    """One fit in this process (the ``fit`` stage): seconds, CPU seconds, samples/s."""
    import resource

    import recsys  # noqa: F401  (first: it sets up OpenMP before torch loads)
    from recsys.data.io import read_interactions
    from recsys.models import create_model

    spec, folder = MODELS[name], ml100k(data_dir)
    data = read_interactions(folder / "u1.base")
    if spec.get("features"):
        from recsys.data.features import attach_features, load_features

        data, _ = attach_features(data, load_features(folder / "u.user", "user"), load_features(folder / "u.item", "item"))
    model = create_model(spec["model"], **{**spec["params"], "device": "cpu"})
    import torch

    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    epochs = spec["params"]["epochs"]
    return {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "samples_per_second": data.nnz * epochs / seconds,
        "epochs": epochs,
        "torch_threads_after": torch.get_num_threads(),
    }


def busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one CPU busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_fit(name: str, data_dir: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "experiments.speed.benchmark", "fit", name, "--data-dir", str(data_dir)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_contention(models: Sequence[str], busy_counts: Sequence[int], runs: int, data_dir: Path) -> None:
    rows = []
    for count in busy_counts:
        hogs = busy(count)
        try:
            time.sleep(1.0 if count else 0.0)  # let the busy processes reach the scheduler
            for run in range(1, runs + 1):
                for name in models:
                    row = {"model": name, "busy": count, "run": run, **run_fit(name, data_dir)}
                    rows.append(row)
                    print(f"{name:10s} busy={count} run={run} {row['seconds']:7.2f} s "
                          f"{row['samples_per_second']:10.0f} samples/s", flush=True)
        finally:
            for hog in hogs:
                hog.kill()
    path = write_result(RESULTS, "contention", {"runs": runs, "models": {m: MODELS[m] for m in models}, "rows": rows})
    print(f"wrote {path}")


JOBS = {
    "two-tower": "--model two-tower --user-features {d}/u.user --item-features {d}/u.item",
    "mf": "--model mf",
    "mf-mse": "--model mf --loss mse",
    "bpmf": "--model bpmf",
}


def stage_jobs(runs: int, data_dir: Path) -> None:
    """The whole command, wall seconds, each torch model at its defaults, on u1.base/u1.test."""
    folder = ml100k(data_dir)
    recsys = Path(sys.executable).with_name("recsys")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, runs + 1):
            for name, flags in JOBS.items():
                command = [str(recsys), "train", "--data", f"{folder}/u1.base", "--test", f"{folder}/u1.test",
                           *shlex.split(flags.format(d=folder)), "--output", f"{tmp}/{name}-{run}", "--no-track",
                           "--quiet", "--format", "json"]
                start = time.perf_counter()
                out = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=True)
                wall = time.perf_counter() - start
                report = json.loads(out.stdout)
                metrics = report.get("metrics", {})
                rows.append({"job": name, "run": run, "wall_seconds": wall, "fit_seconds": report["seconds"]["fit"],
                             "recall@20": metrics.get("recall@20"), "rmse": metrics.get("rmse")})
                print(f"{name:10s} run={run} {wall:7.2f} s wall", flush=True)
    path = write_result(RESULTS, "jobs", {"runs": runs, "jobs": JOBS, "rows": rows})
    print(f"wrote {path}")


SAMPLE = ROOT / "data" / "sample" / "ratings.csv"


def stage_fixed(runs: int, data_dir: Path) -> None:
    """Wall and CPU seconds (the child's user + system) of commands that do almost nothing
    (imports, `recsys split` of the sample), and what tracking adds to them and to a job of
    a few seconds (als on ML-100K's u1)."""
    python, recsys = sys.executable, str(Path(sys.executable).with_name("recsys"))
    train = [recsys, "train", "--data", str(SAMPLE), "--model", "popular", "--quiet"]
    folder = ml100k(data_dir)
    als = [recsys, "train", "--data", str(folder / "u1.base"), "--test", str(folder / "u1.test"), "--model", "als",
           "--quiet"]
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "recsys --version": [recsys, "--version"],
        "import torch": [python, "-c", "import torch"],
        "import mlflow": [python, "-c", "import mlflow"],
        "split the sample": [recsys, "split", "--data", str(SAMPLE), "--quiet"],
        "train popular, --no-track": [*train, "--no-track"],
        "train popular, tracked (sqlite)": train,
        "train als on u1, --no-track": [*als, "--no-track"],
        "train als on u1, tracked (sqlite)": als,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, runs + 1):
            for name, command in commands.items():
                before, start = os.times(), time.perf_counter()
                flag = "--out-dir" if command[1:2] == ["split"] else "--output"
                extra = [flag, f"{tmp}/{run}-{len(rows)}"] if command[0] == recsys and len(command) > 2 else []
                subprocess.run([*command, *extra], cwd=tmp, check=True, capture_output=True)
                wall, after = time.perf_counter() - start, os.times()
                cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
                rows.append({"command": name, "run": run, "wall_seconds": wall, "cpu_seconds": cpu})
                print(f"{name:34s} run={run} {wall:6.2f} s wall {cpu:6.2f} s CPU", flush=True)
    path = write_result(RESULTS, "fixed", {"runs": runs, "rows": rows})
    print(f"wrote {path}")


def fixed_table(result: dict[str, Any]) -> list[str]:
    lines = [f"Commit {result['stamp']}, load average {result['machine']['load_average']}; median of "
             f"{result['runs']} runs (the first tracked run creates the store).", "",
             "| command | wall s | CPU s |", "|---|---:|---:|"]
    wall = {}
    for name in dict.fromkeys(r["command"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["command"] == name]
        wall[name] = statistics.median(r["wall_seconds"] for r in mine)
        lines.append(f"| {name} | {wall[name]:.2f} | {statistics.median(r['cpu_seconds'] for r in mine):.2f} |")
    overheads = [f"{job}: {wall[f'{job}, tracked (sqlite)'] - wall[f'{job}, --no-track']:+.2f} s"
                 for job in ("train popular", "train als on u1") if f"{job}, --no-track" in wall]
    if overheads:
        lines += ["", "What tracking adds (median wall, tracked minus --no-track): " + "; ".join(overheads) + "."]
    return lines


def _results(stage: str) -> list[dict[str, Any]]:
    """Every result file of a stage, oldest first."""
    files = sorted(RESULTS.glob(f"{stage}.*.json"))
    return sorted((json.loads(p.read_text()) for p in files), key=lambda r: r.get("written", ""))


def contention_table(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    counts = sorted({r["busy"] for r in rows})
    loaded = [c for c in counts if c]
    quiet = {m: statistics.median(r["seconds"] for r in rows if r["model"] == m and r["busy"] == 0) for m in models}

    def worst(model: str, count: int) -> float:
        return max(r["seconds"] for r in rows if r["model"] == model and r["busy"] == count) / quiet[model]

    lines = [f"Commit {result['stamp']}, {result['machine']['processor']}, {result['machine']['cores']} cores; "
             f"{result['runs']} runs per cell; fit seconds (every run), samples/s quiet (median).", "",
             "| model | samples/s quiet | quiet s |" + "".join(f" {c} busy: s (worst ratio) |" for c in loaded)
             + (" worst ratio / als's |" if loaded else ""),
             "|---|---:|---:|" + "---:|" * (len(loaded) + 1 if loaded else 0)]
    for m in models:
        rate = statistics.median(r["samples_per_second"] for r in rows if r["model"] == m and r["busy"] == 0)
        cells = []
        for c in loaded:
            seconds = ", ".join(f"{r['seconds']:.1f}" for r in rows if r["model"] == m and r["busy"] == c)
            cells.append(f"{seconds} ({worst(m, c):.2f}x)")
        if loaded:
            cells.append(f"{max(worst(m, c) / worst('als', c) for c in loaded):.2f}" if "als" in models else "")
        lines.append(f"| {m} | {rate:,.0f} | {quiet[m]:.2f} |" + "".join(f" {cell} |" for cell in cells))
    return lines


def jobs_table(result: dict[str, Any]) -> list[str]:
    lines = [f"Commit {result['stamp']}, load average {result['machine']['load_average']}.", "",
             "| job (u1.base, u1.test, defaults) | wall s (every run) | fit s | recall@20 | RMSE |", "|---|---|---:|---:|---:|"]
    for job in dict.fromkeys(r["job"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["job"] == job]
        walls = ", ".join(f"{r['wall_seconds']:.1f}" for r in mine)
        fit = statistics.median(r["fit_seconds"] for r in mine if r["fit_seconds"] is not None)
        recall, rmse = mine[-1]["recall@20"], mine[-1]["rmse"]
        lines.append(f"| {job} | {walls} | {fit:.1f} | {recall if recall is None else f'{recall:.4f}'} | "
                     f"{'' if rmse is None else f'{rmse:.4f}'} |")
    return lines


def _before_after(pair: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two results in commit order: an older commit measured last (a before row taken
    in the same session as the after) still comes first."""
    def commit(result: dict[str, Any]) -> str:
        return result["stamp"].split(".", 1)[-1].removesuffix("+dirty")

    if len(pair) == 2 and commit(pair[0]) != commit(pair[1]):
        older = subprocess.run(["git", "merge-base", "--is-ancestor", commit(pair[1]), commit(pair[0])],
                               cwd=ROOT, capture_output=True, check=False)
        if older.returncode == 0:
            return pair[::-1]
    return pair


def stage_table() -> None:
    readme = HERE / "README.md"
    for stage, render in (("contention", contention_table), ("jobs", jobs_table), ("fixed", fixed_table)):
        results = _results(stage)
        lines: list[str] = []
        for result in _before_after(results[-2:]):  # the previous result beside the newest
            lines += [*render(result), ""]
        publish_table(f"experiments.speed.benchmark {stage}", lines, [(readme, f"speed/{stage}")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    fit = sub.add_parser("fit", help="(internal) one fit, printed as JSON")
    fit.add_argument("model", choices=list(MODELS))
    contention = sub.add_parser("contention")
    contention.add_argument("--runs", type=int, default=3)
    contention.add_argument("--busy", type=int, nargs="+", default=[0, 2, 4])
    contention.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    jobs = sub.add_parser("jobs")
    jobs.add_argument("--runs", type=int, default=2)
    fixed = sub.add_parser("fixed")
    fixed.add_argument("--runs", type=int, default=5)
    sub.add_parser("table")
    for p in (fit, contention, jobs, fixed):
        p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if args.stage == "fit":
        print(json.dumps(fit_once(args.model, args.data_dir)))
    elif args.stage == "contention":
        stage_contention(args.models, args.busy, args.runs, args.data_dir)
    elif args.stage == "jobs":
        stage_jobs(args.runs, args.data_dir)
    elif args.stage == "fixed":
        stage_fixed(args.runs, args.data_dir)
    else:
        stage_table()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
