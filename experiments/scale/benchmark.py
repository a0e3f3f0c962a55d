"""100M interactions on one machine: synthetic logs of 10M, 20M and 100M rows through the whole
``recsys train``, ``recsys recommend --users all`` and ``recsys index``, each stage in a
process of its own with its wall time, CPU time and peak resident memory, beside implicit's
bare read-and-fit of the same model on the same file.

Stages (run from the repository root; ``scale.toml`` holds the logs and the settings):

  python -m experiments.scale.benchmark generate 10m [--out /work/scale-data]
      writes <out>/scale-10m.parquet (user, item: int32 ids; seeded; in row groups, so the
      generator's memory is one chunk whatever the size)
  python -m experiments.scale.benchmark run 10m --runs als [--stages train,reference,recommend,index]
      each stage as a child process, measured with wait4 (its own user+sys CPU and peak RSS);
      results/scale.<date>.<commit>.json
  python -m experiments.scale.benchmark table
      the table in README.md from the newest row of each (log, run, stage)
  python -m experiments.scale.benchmark search 10m --users 40000
      the exact search alone on the model a `run` saved: top-50 of the first N users, their
      training items excluded, with the bfloat16 screen and without (best of 3 each); prints
      JSON, writes nothing

The log: users' activity lognormal, items' popularity a power law, and a latent taste: each
user and item belongs to one of ``clusters`` groups and a share ``in_cluster`` of a user's
rows go to items of their own group (by popularity within it), the rest to any item by
popularity, so a model has something to learn. Rows are drawn user by row (not user by
user), so the file interleaves users the way a time-ordered log does; repeated (user, item)
rows happen, as in real logs, and are summed by the readers on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.common import (
    ROOT,
    machine,
    markdown_table,
    merged_rows,
    publish_table,
    read_config,
    result_files,
    say,
    sources,
    write_rows,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "scale.toml"
DATA = Path(os.environ.get("RECSYS_SCALE_DATA", "/work/scale-data"))
STAGES = ("train", "reference", "recommend", "index")


def log_path(name: str, out: Path = DATA) -> Path:
    return out / f"scale-{name}.parquet"


# -- the synthetic log -----------------------------------------------------------------------
def generate(name: str, out: Path = DATA) -> dict[str, Any]:
    """Write the log ``name`` of the config as Parquet, one row group per chunk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = read_config(CONFIG)
    shape, gen = config["logs"][name], config["generator"]
    rows, n_users, n_items = int(shape["rows"]), int(shape["users"]), int(shape["items"])
    rng = np.random.default_rng(gen["seed"])
    # Ids as a real log has them: distinct, not contiguous, in no particular order.
    user_ids = rng.choice(np.int64(2**31 - 1), n_users, replace=False).astype(np.int32)
    item_ids = rng.choice(np.int64(2**31 - 1), n_items, replace=False).astype(np.int32)
    activity = np.cumsum(rng.lognormal(0.0, gen["user_sigma"], n_users))
    activity /= activity[-1]
    popularity = (np.arange(n_items) + 10.0) ** -gen["item_exponent"]  # item index = popularity rank
    clusters = int(gen["clusters"])
    user_cluster = rng.integers(0, clusters, n_users)
    item_cluster = rng.integers(0, clusters, n_items)
    # Items laid out cluster by cluster: a draw inside cluster c is a uniform number in c's
    # slice of the cumulative popularity, found with one searchsorted.
    by_cluster = np.argsort(item_cluster, kind="stable")
    cluster_cum = np.cumsum(popularity[by_cluster])
    bounds = np.searchsorted(item_cluster[by_cluster], np.arange(clusters + 1))
    low = np.r_[0.0, cluster_cum][bounds[:-1]]
    high = np.r_[0.0, cluster_cum][bounds[1:]]
    global_cum = np.cumsum(popularity) / popularity.sum()
    path = log_path(name, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.part")
    schema = pa.schema([("user", pa.int32()), ("item", pa.int32())])
    start = time.perf_counter()
    with pq.ParquetWriter(str(tmp), schema) as writer:
        for begin in range(0, rows, int(gen["chunk_rows"])):
            n = min(int(gen["chunk_rows"]), rows - begin)
            users = np.minimum(np.searchsorted(activity, rng.random(n)), n_users - 1)
            inside = rng.random(n) < gen["in_cluster"]
            c = user_cluster[users]
            draw = rng.random(n)
            local = np.searchsorted(cluster_cum, low[c] + draw * (high[c] - low[c]))
            items = np.where(inside, by_cluster[np.minimum(local, n_items - 1)],
                             np.minimum(np.searchsorted(global_cum, draw), n_items - 1))
            writer.write_table(pa.table({"user": user_ids[users], "item": item_ids[items]}, schema=schema))
    tmp.replace(path)
    info = {"log": name, "path": str(path), "rows": rows, "users": n_users, "items": n_items,
            "bytes": path.stat().st_size, "seconds": time.perf_counter() - start}
    say(json.dumps(info))
    return info


# -- implicit's bare read-and-fit: the yardstick -----------------------------------------------
def reference(path: Path, factors: int, iterations: int, alpha: float, regularization: float) -> dict[str, Any]:
    """What a user of implicit alone would write: pyarrow read, the CSR matrix (repeated
    pairs summed), the log confidence recsys's ``als`` uses for counts, and one ``fit``
    with every iteration, on the whole file. Runs in the ``reference`` child."""
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recsys.device import cpu_budget

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    table = pq.read_table(path, columns=["user", "item"])
    users, user_index = np.unique(table["user"].to_numpy(), return_inverse=True)
    items, item_index = np.unique(table["item"].to_numpy(), return_inverse=True)
    del table
    ones = np.ones(len(user_index), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (user_index, item_index)), shape=(len(users), len(items)))
    matrix.sum_duplicates()
    del user_index, item_index, ones
    matrix.data = (alpha * np.log1p(matrix.data)).astype(np.float32)
    seconds["read"] = time.perf_counter() - start
    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=1.0,
                                    iterations=iterations, num_threads=cpu_budget(), random_state=0)
    start = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    seconds["fit"] = time.perf_counter() - start
    return {"seconds": seconds, "users": len(users), "items": len(items), "pairs": int(matrix.nnz)}


# -- one stage, one child process --------------------------------------------------------------
def measured(command: Sequence[str], log: Path) -> dict[str, Any]:
    """Run ``command`` as a child; its wall time, user+sys CPU and peak RSS (wait4), the
    load average before it, and its standard output (JSON when it printed JSON)."""
    say("$ " + shlex.join(command))
    load = [round(v, 2) for v in os.getloadavg()]
    start = time.perf_counter()
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    text = log.with_suffix(".out").read_text()
    result = {
        "command": shlex.join(command), "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),  # ru_maxrss is in KiB on Linux
        "load_before": load, "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        result["output"] = json.loads(text)
    except ValueError:
        result["output_tail"] = text[-2000:]
    if result["exit"] != 0:
        result["error_tail"] = log.with_suffix(".err").read_text()[-2000:]
        say(f"  failed ({result['exit']}): {result['error_tail'][-500:]}")
    say(f"  wall {result['wall_s']} s, cpu {result['cpu_s']} s, peak {result['peak_rss_gib']} GiB, load {load}")
    return result


def user_sample(path: Path, n: int, out: Path) -> Path:
    """A file of ``n`` user ids of the log drawn with seed 0 (``recsys recommend --users FILE``)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    users = pc.unique(pq.read_table(path, columns=["user"])["user"]).to_numpy()
    chosen = np.sort(np.random.default_rng(0).choice(users, min(n, len(users)), replace=False))
    out.write_text("user\n" + "\n".join(map(str, chosen)) + "\n")
    return out


def run(name: str, runs: Sequence[str], stages: Sequence[str], extra: Sequence[str], out: Path = DATA,
        recommend_users: int | None = None) -> None:
    config = read_config(CONFIG)
    path = log_path(name, out)
    if not path.is_file():
        raise SystemExit(f"{path}: not found; run `python -m experiments.scale.benchmark generate {name}` first")
    recsys = str(Path(sys.executable).with_name("recsys"))
    rows = []
    for run_name in runs:
        spec = config["runs"][run_name]
        work = out / f"{name}-{run_name}"
        work.mkdir(parents=True, exist_ok=True)
        model_dir = work / "model"
        settings = {"model": spec["model"], "factors": spec["factors"], "epochs": spec["epochs"]}
        for stage in stages:
            if stage == "reference" and spec["model"] != "als":
                continue
            if stage == "train":
                command = [recsys, "train", "--data", str(path), "--model", spec["model"],
                           "--factors", str(spec["factors"]), "--epochs", str(spec["epochs"]), "--split", "user",
                           "--output", str(model_dir), "--no-index", "--no-track", "--format", "json", "--quiet",
                           *extra]
            elif stage == "reference":
                fitted = json.loads((model_dir / "model.json").read_text())["fitted_params"]
                command = [sys.executable, "-m", "experiments.scale.benchmark", "reference", str(path),
                           "--factors", str(spec["factors"]), "--iterations", str(spec["epochs"]),
                           "--alpha", repr(fitted["alpha"]), "--regularization", repr(fitted["regularization"])]
            elif stage == "recommend":
                users = "all" if recommend_users is None else str(
                    user_sample(path, recommend_users, work / f"users-{recommend_users}.txt"))
                command = [recsys, "recommend", "--model", str(model_dir), "--users", users, "--k", "10",
                           "--out", str(work / "recs.parquet"), "--no-track", "--format", "json", "--quiet"]
            elif stage == "index":
                command = [recsys, "index", "--model", str(model_dir), "--format", "json", "--quiet"]
            else:
                raise SystemExit(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
            flags = list(extra) if stage == "train" else []
            if stage == "recommend" and recommend_users is not None:
                flags = [f"a seeded sample of {recommend_users:,} users"]
            row = {"log": name, "run": run_name, "stage": stage, "settings": settings, "extra": flags,
                   **measured(command, work / stage)}
            rows.append(row)
            write_rows(RESULTS, "scale", {"config": config["logs"][name], "rows": rows}, row_key)


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["log"], row["run"], row["stage"], " ".join(row.get("extra", [])))


# -- the table ---------------------------------------------------------------------------------
def _stage_figures(row: dict[str, Any]) -> str:
    """What a stage's own output says about its parts (train's seconds, recommend's rows...)."""
    out = row.get("output") or {}
    if row["stage"] == "train":
        parts = out.get("seconds") or {}
        words = ", ".join(f"{k} {v:.0f} s" for k, v in parts.items() if isinstance(v, int | float))
        metrics = out.get("metrics") or {}
        if "recall@20" in metrics:
            words += f"; recall@20 {metrics['recall@20']:.4f}"
        evaluation = out.get("evaluation") or {}
        if evaluation.get("sampled_users"):
            words += f" ({evaluation['n_users']:,} sampled test users)"
        return words
    if row["stage"] == "reference":
        parts = out.get("seconds") or {}
        return ", ".join(f"{k} {v:.0f} s" for k, v in parts.items())
    if row["stage"] == "recommend":
        users = out.get("users", 0)
        return f"{users:,} users, {out.get('rows', 0):,} rows, {users / row['wall_s']:,.0f} users/s"
    if row["stage"] == "index":
        return ", ".join(f"{k} {v}" for k, v in out.items() if k in ("trees", "metric", "n_items"))
    return ""


def _history() -> list[str]:
    """Every measurement of a ``train`` stage that was measured at more than one commit
    (before and after a change), oldest first."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for path in result_files(RESULTS, "scale"):
        result = json.loads(path.read_text())
        for r in result["rows"]:
            if r["stage"] == "train" and r["exit"] == 0:
                seen.setdefault(row_key(r), []).append(
                    f"{result['stamp'].split('.', 1)[1]}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU "
                    f"(load {r['load_before'][0]:.1f})")
    return [f"{' '.join(k for k in key if k)} over commits: " + "; ".join(v) for key, v in seen.items() if len(v) > 1]


def table() -> None:
    rows, results = merged_rows(RESULTS, "scale", row_key)
    order = {name: i for i, name in enumerate(read_config(CONFIG)["logs"])}
    rows.sort(key=lambda r: (order.get(r["log"], 99), r["run"], STAGES.index(r["stage"])))
    lines = []
    if rows:
        body = []
        for r in rows:
            s = r["settings"]
            stage = " ".join([r["stage"], *r.get("extra", [])])
            body.append([r["log"], f"{s['model']} {s['factors']}f x {s['epochs']}", stage,
                         f"{r['wall_s']:.0f}" if r["exit"] == 0 else f"failed ({r['exit']})", f"{r['cpu_s']:.0f}",
                         f"{r['peak_rss_gib']:.2f}", ", ".join(f"{v:.1f}" for v in r["load_before"]),
                         _stage_figures(r)])
        lines = markdown_table(["log", "model", "stage", "wall s", "CPU s", "peak RSS GiB", "load before",
                                "what the stage reports"], body)
        ratios = []
        for (log, run_name) in dict.fromkeys((r["log"], r["run"]) for r in rows):
            mine = [r for r in rows if (r["log"], r["run"]) == (log, run_name)]
            ref = next((r for r in mine if r["stage"] == "reference"), None)
            for r in mine:
                if ref is not None and r["stage"] == "train" and r["exit"] == 0:
                    how = " ".join(r.get("extra", [])) or "every test user"
                    ratios.append(f"{log} {run_name} ({how}): whole `recsys train` / implicit's read-and-fit = "
                                  f"{r['wall_s'] / ref['wall_s']:.2f}x wall, {r['cpu_s'] / ref['cpu_s']:.2f}x CPU")
        ratios += _history()
        lines += ["", *[f"- {r}" for r in ratios], "", f"Results: {sources(HERE / 'results', results)}."]
    publish_table("experiments.scale.benchmark", lines, [(HERE / "README.md", "")])


def search_timing(name: str, run_name: str, n_users: int, out: Path = DATA, k: int = 50) -> dict[str, Any]:
    """Seconds of ``ExactIndex.search`` for the first ``n_users`` of the saved model, with the
    screen and without, and whether both found the same items."""
    import numpy as np

    from recsys.embeddings import ExactIndex
    from recsys.models import load_model

    model = load_model(out / f"{name}-{run_name}" / "model")
    emb = model.embeddings()
    users = emb.user_vectors[:n_users]
    exclude = emb.seen[:n_users]
    found, seconds = {}, {}
    for screen in (False, True):
        index = ExactIndex(emb.item_vectors, "cpu", screen=screen)
        index.search(users[:500], k, exclude[:500])  # warm
        times = []
        for _ in range(3):
            start = time.perf_counter()
            found[screen], _ = index.search(users, k, exclude)
            times.append(time.perf_counter() - start)
        seconds["screened" if screen else "unscreened"] = round(min(times), 3)
    same = float((np.sort(found[True], axis=1) == np.sort(found[False], axis=1)).all(axis=1).mean())
    return {"log": name, "run": run_name, "users": len(users), "items": emb.n_items, "k": k, "seconds": seconds,
            "rows_with_the_same_items": same, "machine": machine()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    g = sub.add_parser("generate")
    g.add_argument("log")
    g.add_argument("--out", type=Path, default=DATA)
    r = sub.add_parser("run")
    r.add_argument("log")
    r.add_argument("--runs", default="als", help="comma-separated run names of scale.toml")
    r.add_argument("--stages", default=",".join(STAGES))
    r.add_argument("--out", type=Path, default=DATA)
    r.add_argument("--extra", default="", help="more `recsys train` flags, e.g. '--eval-users 100000'")
    r.add_argument("--recommend-users", type=int, help="recommend for a seeded sample of this many users, not all")
    ref = sub.add_parser("reference")
    ref.add_argument("path", type=Path)
    ref.add_argument("--factors", type=int, required=True)
    ref.add_argument("--iterations", type=int, required=True)
    ref.add_argument("--alpha", type=float, required=True)
    ref.add_argument("--regularization", type=float, required=True)
    sub.add_parser("table")
    se = sub.add_parser("search")
    se.add_argument("log")
    se.add_argument("--run", default="als")
    se.add_argument("--users", type=int, default=40_000)
    se.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if args.stage == "generate":
        generate(args.log, args.out)
    elif args.stage == "run":
        run(args.log, args.runs.split(","), args.stages.split(","), shlex.split(args.extra), args.out,
            args.recommend_users)
    elif args.stage == "search":
        print(json.dumps(search_timing(args.log, args.run, args.users, args.out)))
    elif args.stage == "reference":
        print(json.dumps(reference(args.path, args.factors, args.iterations, args.alpha, args.regularization)))
    else:
        table()


if __name__ == "__main__":
    main()
