"""Explicit ratings: recsys's rating models against Surprise's SVD and SVD++ (issue 14, point 2).

One script, one config (``configs/explicit.toml``), every stage's output in
``results/<stage>.<date>.<commit>.json`` and the README's table generated from the newest
(``table``). Run from the repository root:

    python -m experiments.explicit.benchmark validate
    python -m experiments.explicit.benchmark noise
    python -m experiments.explicit.benchmark test
    python -m experiments.explicit.benchmark surprise --python /tmp/surprise-venv/bin/python
    python -m experiments.explicit.benchmark table

Protocol:

- metric: RMSE and MAE over every test rating, as ``recsys train`` prints them (a user or
  item without training ratings is rated from the biases); predictions are not clipped.
  Surprise's figures are its own ``accuracy.rmse``/``mae`` over the same ratings (it clips
  predictions to the rating scale by default, which can only lower its error).
- validation: every choice (bpmf's defaults, a small grid for ``mf --loss mse``) is made on a random
  20% carved from u1.base (``validate``); u1.test and ua.test are scored only by ``test``.
- test: each candidate through the whole ``recsys train --data BASE --test TEST`` command
  (read, fit, evaluate, save with its Annoy index), its wall time around the process; fit
  seconds as the command reports them. ml-latest-small: a random 80/20 split (seed 0) made
  by ``recsys split``, the same files for every candidate and for Surprise.
- Surprise (``surprise``): ``scikit-surprise`` in a separate environment (not a dependency
  of recsys), SVD and SVD++ with their defaults (``random_state=0``), run by
  ``surprise_baselines.py`` in that environment's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import (
    DATA_DIR,
    latest_result,
    markdown_table,
    merged_rows,
    publish_table,
    read_config,
    say,
    sources,
    write_result,
    write_rows,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "explicit.toml"


def _recsys_command() -> list[str]:
    """The installed ``recsys`` command beside this Python: what a user runs."""
    return [str(Path(sys.executable).parent / "recsys")]


# -- validation --------------------------------------------------------------------------
def noise(config: dict[str, Any], data_dir: Path) -> None:
    """bpmf's noise share on validation carves of two logs (u1.base and ml-latest-small):
    the rule must hold on both, not on ML-100K alone."""
    from recsys.data.io import read_interactions
    from recsys.data.splits import split
    from recsys.evaluation.full_ranking import rating_errors
    from recsys.models import BayesianMF

    v = config["noise"]
    rows = []
    for name, path in v["data"].items():
        train, valid = split(read_interactions(data_dir / path), "random", test_fraction=v["test_fraction"],
                             seed=v["seed"])
        variance = float(np.var(train.matrix.data, dtype=np.float64))
        for share in v["shares"]:
            for seed in v["seeds"]:
                model = BayesianMF(noise_precision=1.0 / (share * variance), random_state=seed).fit(train)
                err = rating_errors(model.embeddings(), valid)
                row = {"data": name, "noise_share": share, "seed": seed, "rmse": float(np.sqrt(np.mean(err**2)))}
                rows.append(row)
                say(json.dumps(row))
    write_result(RESULTS, "noise", {"config": v, "rows": rows})


def validate(config: dict[str, Any], data_dir: Path) -> None:
    from recsys.data.io import read_interactions
    from recsys.data.splits import split
    from recsys.evaluation.full_ranking import rating_errors
    from recsys.models import BayesianMF, MatrixFactorization

    v = config["validation"]
    data = read_interactions(data_dir / v["train"])
    train, valid = split(data, "random", test_fraction=v["test_fraction"], seed=v["seed"])
    variance = float(np.var(train.matrix.data, dtype=np.float64))
    rows = []

    def score(candidate: str, settings: dict[str, Any], model: Any) -> None:
        start = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - start
        err = rating_errors(model.embeddings(), valid)
        row = {"candidate": candidate, **settings, "rmse": float(np.sqrt(np.mean(err**2))),
               "mae": float(np.mean(np.abs(err))), "fit_seconds": seconds}
        rows.append(row)
        say(json.dumps(row))

    for seed in v["seeds"]:
        for factors in v["bpmf_factors"]:
            for share in v["bpmf_noise_share"]:
                settings = {"factors": factors, "noise_share": share, "epochs": v["bpmf_epochs"], "seed": seed}
                score("bpmf", settings, BayesianMF(factors=factors, epochs=v["bpmf_epochs"],
                                                   noise_precision=1.0 / (share * variance), random_state=seed))
    for settings in v["mf"]:
        score("mf", {**settings, "seed": 0}, MatrixFactorization(loss="mse", random_state=0, **settings))
    write_result(RESULTS, "validate", {"config": v, "train_entries": train.nnz, "valid_entries": valid.nnz,
                                       "rating_variance": variance, "rows": rows})


def tuned_mf() -> dict[str, Any]:
    """validate's best ``mf --loss mse`` settings."""
    result = latest_result(RESULTS, "validate")
    if result is None:
        raise SystemExit("run the validate stage first: the mf-tuned candidate takes its best settings")
    best = min((r for r in result["rows"] if r["candidate"] == "mf"), key=lambda r: r["rmse"])
    return {k: best[k] for k in ("learning_rate", "regularization")}


# -- test --------------------------------------------------------------------------------
def split_files(config: dict[str, Any], data_dir: Path, work: Path) -> dict[str, tuple[Path, Path]]:
    """Each test split as (train file, test file); ml-latest-small split by ``recsys split``."""
    files = {}
    for name, s in config["splits"].items():
        if "data" in s:
            out = work / name
            subprocess.run([*_recsys_command(), "split", "--data", str(data_dir / s["data"]), "--strategy", "random",
                            "--test-fraction", str(s["test_fraction"]), "--seed", str(s["seed"]),
                            "--out-dir", str(out), "--quiet"], check=True)
            files[name] = (out / "train.csv", out / "test.csv")
        else:
            files[name] = (data_dir / s["train"], data_dir / s["test"])
    return files


def run_train(args: list[str], train: Path, test: Path, output: Path) -> dict[str, Any]:
    """One whole ``recsys train`` command: its JSON report and the wall seconds around it."""
    cmd = [*_recsys_command(), "train", "--data", str(train), "--test", str(test), *args,
           "--no-track", "--quiet", "--format", "json", "--output", str(output)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    report = json.loads(done.stdout)
    return {"rmse": report["metrics"]["rmse"], "mae": report["metrics"]["mae"],
            "fit_seconds": report["seconds"]["fit"], "wall_seconds": wall, "load_before": os.getloadavg()[0],
            "fitted_params": report["fitted_params"], "command": " ".join(["recsys", *cmd[len(_recsys_command()):]])}


def test(config: dict[str, Any], data_dir: Path, only: list[str] | None) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = split_files(config, data_dir, work)
        for candidate, c in config["candidates"].items():
            if only and candidate not in only:
                continue
            args = list(c["args"])
            if c.get("tuned"):
                args += [f"-p{k}={v}" for k, v in tuned_mf().items()]
            for split_name, (train, test_file) in files.items():
                for seed in c.get("seeds", [0]):
                    row = {"candidate": candidate, "split": split_name, "seed": seed,
                           **run_train([*args, "--seed", str(seed)], train, test_file, work / "model")}
                    rows.append(row)
                    say(f"{candidate:9s} {split_name:16s} seed {seed}: RMSE {row['rmse']:.4f} MAE {row['mae']:.4f} "
                        f"fit {row['fit_seconds']:.1f}s wall {row['wall_seconds']:.1f}s (load {row['load_before']:.1f})")
    write_rows(RESULTS, "test", {"rows": rows}, key=lambda r: (r["candidate"], r["split"], r["seed"]))


def surprise(config: dict[str, Any], data_dir: Path, python: str) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = split_files(config, data_dir, Path(tmp))
        for split_name, (train, test_file) in files.items():
            done = subprocess.run([python, str(HERE / "surprise_baselines.py"), str(train), str(test_file)],
                                  capture_output=True, text=True, check=True)
            for row in json.loads(done.stdout):
                rows.append({"split": split_name, **row})
                say(f"{row['candidate']:9s} {split_name:16s}: RMSE {row['rmse']:.4f} MAE {row['mae']:.4f} "
                    f"fit {row['fit_seconds']:.1f}s")
    version = subprocess.run([python, "-c", "import surprise; print(surprise.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    write_result(RESULTS, "surprise", {"surprise_version": version, "rows": rows})


# -- table -------------------------------------------------------------------------------
def _cell(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table() -> None:
    found, results = merged_rows(RESULTS, "test", key=lambda r: (r["candidate"], r["split"], r["seed"]))
    theirs = latest_result(RESULTS, "surprise")
    lines: list[str] = []
    if found:
        splits = list(dict.fromkeys(r["split"] for r in found))
        rows = []
        for candidate in dict.fromkeys(r["candidate"] for r in found):
            for name in splits:
                runs = [r for r in found if r["candidate"] == candidate and r["split"] == name]
                if runs:
                    rows.append([f"`recsys train {_args(runs[0])}`", name, len(runs),
                                 _cell([r["rmse"] for r in runs], 4), _cell([r["mae"] for r in runs], 4),
                                 _cell([r["fit_seconds"] for r in runs], 1), _cell([r["wall_seconds"] for r in runs], 1)])
        if theirs is not None:
            for r in theirs["rows"]:
                rows.append([f"Surprise {theirs['surprise_version']} {r['candidate']}", r["split"], 1,
                             f"{r['rmse']:.4f}", f"{r['mae']:.4f}", f"{r['fit_seconds']:.1f}", "-"])
        lines = markdown_table(["model", "split", "runs", "RMSE", "MAE", "fit s", "wall s (whole command)"], rows)
        lines += ["", f"Sources: {sources(RESULTS, [*results, *([theirs] if theirs else [])])}. Each row's load "
                  "average before its command is in its result file."]
    publish_table("experiments.explicit.benchmark", lines, [(HERE / "README.md", "")])


def _args(row: dict[str, Any]) -> str:
    """The model flags of a run's command (what differs between candidates)."""
    words = row["command"].split()
    keep, skip = [], False
    for word in words[words.index("--test") + 2:]:
        if skip:
            skip = False
            continue
        if word in ("--output", "--format", "--seed"):
            skip = True
            continue
        if word not in ("--no-track", "--quiet"):
            keep.append(word)
    return " ".join(keep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["validate", "noise", "test", "surprise", "table"])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--only", nargs="*", help="test: these candidates only")
    parser.add_argument("--python", default="python3", help="surprise: a Python with scikit-surprise installed")
    args = parser.parse_args(argv)
    config = read_config(args.config)
    if args.stage == "validate":
        validate(config, args.data_dir)
    elif args.stage == "noise":
        noise(config, args.data_dir)
    elif args.stage == "test":
        test(config, args.data_dir, args.only)
    elif args.stage == "surprise":
        surprise(config, args.data_dir, args.python)
    else:
        table()


if __name__ == "__main__":
    main()
