"""Spark ALS against local ALS, and Spark's batch top-N against the local one.

    python -m experiments.distributed.spark run [--config experiments/distributed/configs/spark.toml] [--only ml-100k]
    python -m experiments.distributed.spark table

``run``: for each data set of the config, recsys's ``als`` trained locally (implicit) and on
Spark (``--engine spark``, Spark MLlib's ALS) at the same settings, on the same split (the
Spark engine holds out the same entries: checked here by the test part's fingerprint), each
evaluated by recsys's full ranking; the quality seeds on the config's ``quality_master``,
the times on every master of ``masters`` (seed 0). Then, on the first data set, the Spark
model's top-N for every user scored on Spark against the local exact top-N of the same saved
model: lists compared user by user, a difference counted as a tie when the two lists' scores
agree to 1e-5 at every rank. ``table`` writes the README's tables from the result files.
The data sets are read from ``--data-dir`` (default ``$RECSYS_BENCHMARK_DATA``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.common import (
    DATA_DIR,
    data_file,
    latest_result,
    machine_words,
    markdown_table,
    mean_std,
    publish_table,
    read_config,
    say,
    train_as_a_user,
    write_result,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "spark.toml"
NAME = "spark"
TIE = 1e-5


def _train(data: Path, test: Path | None, params: dict[str, Any], seed: int, spark: Any = None,
           output: Path | None = None) -> dict[str, Any]:
    result, run = train_as_a_user(data, "als", params, seed, test=test, output=output, save=output is not None,
                                  index_trees=None, spark=spark)
    return {"recall@20": run["recall@20"], "ndcg@20": run["ndcg@20"], "fit_seconds": run["fit_seconds"],
            "job_seconds": run["job_seconds"], "test_fingerprint": result.test.fingerprint(),
            "fitted_params": run["fitted_params"]}


def run_dataset(name: str, spec: dict[str, Any], masters: list[str], quality_master: str,
                data_dir: Path) -> dict[str, Any]:
    from recsys.spark import SparkSettings

    data = data_file(spec["data"], data_dir)
    test = data_file(spec["test"], data_dir) if "test" in spec else None
    params, seeds = spec.get("params", {}), spec.get("seeds", [0])
    row: dict[str, Any] = {"dataset": name, "params": params, "seeds": seeds, "local": [], "spark": [], "times": {}}
    for seed in seeds:
        local = _train(data, test, params, seed)
        say(f"{name} seed {seed} local: {local['recall@20']:.4f} / {local['ndcg@20']:.4f}, fit {local['fit_seconds']:.1f}s")
        spark = _train(data, test, params, seed, SparkSettings(quality_master))
        say(f"{name} seed {seed} spark {quality_master}: {spark['recall@20']:.4f} / {spark['ndcg@20']:.4f}, "
            f"fit {spark['fit_seconds']:.1f}s, job {spark['job_seconds']:.1f}s")
        if spark["test_fingerprint"] != local["test_fingerprint"]:
            raise SystemExit(f"{name} seed {seed}: Spark held out other test entries than the local split")
        row["local"].append(local)
        row["spark"].append(spark)
        if seed == seeds[0]:
            row["times"][quality_master] = {k: spark[k] for k in ("fit_seconds", "job_seconds")}
            row["times"]["local (implicit)"] = {k: local[k] for k in ("fit_seconds", "job_seconds")}
    for master in masters:
        if master not in row["times"]:
            timed = _train(data, test, params, seeds[0], SparkSettings(master))
            say(f"{name} {master}: fit {timed['fit_seconds']:.1f}s, job {timed['job_seconds']:.1f}s")
            row["times"][master] = {k: timed[k] for k in ("fit_seconds", "job_seconds")}
    return row


def compare_top_n(name: str, spec: dict[str, Any], master: str, k: int, data_dir: Path) -> dict[str, Any]:
    """The Spark-trained model's top-``k`` for every user, on Spark and locally."""
    from recsys.models import load_model
    from recsys.retrieval.batch import recommend_to_file
    from recsys.spark import SparkSettings
    from recsys.spark.batch import recommend_on_spark

    data = data_file(spec["data"], data_dir)
    test = data_file(spec["test"], data_dir) if "test" in spec else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _train(data, test, spec.get("params", {}), 0, SparkSettings(master), output=folder / "model")
        model = load_model(folder / "model")
        start = time.perf_counter()
        local = recommend_to_file(model, folder / "local.parquet", "all", k)
        local_seconds = time.perf_counter() - start
        distributed = recommend_on_spark(model, folder / "spark", "all", k, SparkSettings(master))
        ours = pd.read_parquet(folder / "local.parquet")
        theirs = pd.read_parquet(folder / "spark")
    differing, beyond_ties = list_differences(ours, theirs)
    return {"dataset": name, "k": k, "master": master, "users": local.users, "rows": [local.rows, distributed.rows],
            "differing_lists": differing, "differing_beyond_ties": beyond_ties,
            "local_seconds": local_seconds, "spark_seconds": distributed.seconds}


def list_differences(ours: pd.DataFrame, theirs: pd.DataFrame) -> tuple[int, int]:
    """Users whose lists differ (items or order), and those among them whose scores also
    differ by more than :data:`TIE` at some rank (a difference not explained by ties)."""
    ours = ours.sort_values(["user", "rank"], ignore_index=True)
    theirs = theirs.sort_values(["user", "rank"], ignore_index=True)
    if len(ours) != len(theirs) or not (ours["user"].to_numpy() == theirs["user"].to_numpy()).all():
        raise SystemExit("the two outputs do not hold the same users and list lengths")
    same_item = ours["item"].to_numpy() == theirs["item"].to_numpy()
    close = np.isclose(ours["score"].to_numpy(), theirs["score"].to_numpy(), rtol=TIE, atol=TIE, equal_nan=True)
    frame = pd.DataFrame({"user": ours["user"], "differ": ~same_item, "far": ~close})
    per_user = frame.groupby("user").agg(differ=("differ", "any"), far=("far", "any"))
    return int(per_user["differ"].sum()), int((per_user["differ"] & per_user["far"]).sum())


def run(args: argparse.Namespace) -> None:
    config = read_config(args.config)
    masters, quality_master = config["masters"], config["quality_master"]
    rows = []
    for name, spec in config["datasets"].items():
        if args.only and name not in args.only:
            continue
        rows.append(run_dataset(name, spec, masters, quality_master, args.data_dir))
    top_n = None
    first = next(iter(config["datasets"]))
    if not args.only or first in args.only:
        top_n = compare_top_n(first, config["datasets"][first], quality_master, config.get("top_n_k", 20), args.data_dir)
        say(f"top-N {first}: {top_n['differing_lists']} of {top_n['users']} lists differ "
            f"({top_n['differing_beyond_ties']} beyond score ties)")
    path = write_result(RESULTS, NAME, {"config": config, "rows": rows, "top_n": top_n})
    say(f"wrote {path}")


def table(_: argparse.Namespace) -> None:
    result = latest_result(RESULTS, NAME)
    lines: list[str] = []
    if result is not None:
        lines += ["Quality (recall@20 / NDCG@20, mean ± std over the seeds; the same split and settings on both sides):", ""]
        quality = []
        for row in result["rows"]:
            local, spark = row["local"], row["spark"]
            params = ", ".join(f"{k} {v}" for k, v in row["params"].items())
            quality.append([row["dataset"], params, len(local),
                            f"{mean_std([r['recall@20'] for r in local])} / {mean_std([r['ndcg@20'] for r in local])}",
                            f"{mean_std([r['recall@20'] for r in spark])} / {mean_std([r['ndcg@20'] for r in spark])}",
                            f"{statistics.mean(r['recall@20'] for r in spark) / statistics.mean(r['recall@20'] for r in local):.1%}"])
        lines += markdown_table(["data set", "settings", "seeds", "local `als` (implicit)",
                                 f"`--engine spark` ({result['config']['quality_master']})", "Spark / local recall"], quality)
        masters = ["local (implicit)", *result["config"]["masters"]]
        lines += ["", "Time (seed 0; fit = the ALS sweeps, job = read, split, fit, evaluate, seconds):", ""]
        lines += markdown_table(["data set", *masters], [
            [row["dataset"], *(f"{row['times'][m]['fit_seconds']:.1f} / {row['times'][m]['job_seconds']:.1f}"
                               if m in row["times"] else "" for m in masters)]
            for row in result["rows"]])
        top = result.get("top_n")
        if top:
            lines += ["", f"Batch top-{top['k']} of the Spark-trained {top['dataset']} model for all {top['users']:,} "
                      f"users: {top['differing_lists']} lists differ between Spark ({top['master']}) and the local "
                      f"exact top-N, {top['differing_beyond_ties']} beyond score ties (rows {top['rows'][0]:,} "
                      f"and {top['rows'][1]:,}; {top['local_seconds']:.1f}s locally, {top['spark_seconds']:.1f}s on Spark "
                      "including its start)."]
        lines += ["", f"Machine: {machine_words(result['machine'])}. Result: "
                  f"`experiments/distributed/results/{NAME}.{result['stamp']}.json`."]
    publish_table("experiments.distributed.spark", lines, [(HERE / "README.md", "spark")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="train and compare; write a result file")
    runner.add_argument("--config", type=Path, default=CONFIG)
    runner.add_argument("--data-dir", type=Path, default=DATA_DIR)
    runner.add_argument("--only", nargs="*", help="data sets of the config to run (default: all)")
    runner.set_defaults(func=run)
    sub.add_parser("table", help="write the README's tables from the latest result").set_defaults(func=table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
