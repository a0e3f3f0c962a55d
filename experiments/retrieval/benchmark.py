"""Exact versus Annoy retrieval: accuracy, speed, build time, index size and memory.

One script; one config per run (``configs/<name>.toml``: the parts to run and their sizes,
forests and search budgets); each run writes ``results/<name>.<date>.<commit>.json`` and
``table`` puts the newest of each into the README. Run from the repository root:

    python -m experiments.retrieval.benchmark run --config real       # also: synthetic, large, clustered, memory, job
    python -m experiments.retrieval.benchmark table

Parts (a config holds one or more):

- ``real``: a model (ALS, 64 factors) of each data set, per-user 80/20 split. Exact:
  recall@20, users/s of top-20 with seen items excluded, the time of the bare matrix
  product of the same shapes in the same blocks (the floor), single-query latency, and the
  whole batch job writing Parquet. Annoy: for each trees x search_k, build time, index
  size, users/s, overlap@20 with the exact top-20, recall@20 through the index.
- ``synthetic``: random factors, low-rank or clustered (exact versus the bare product; Annoy
  on a sample of users).
- ``large``: exact top-20 for a sample of users in a child process per sample size (its
  peak memory is its own: it must not grow with the users), and Annoy on the same
  catalogue to show the crossover.
- ``job``: ``recsys.retrieval.recommend_to_file`` for every user, to Parquet, in a child
  process (time, peak memory, system time).

Every timing is wall-clock on the machine recorded with it, under the load recorded before
and after; on a shared machine read ratios, not absolute figures. torch runs on the threads
it is given (``OMP_NUM_THREADS``); Annoy's query pool uses every core.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import common
from recsys.data.io import read_interactions
from recsys.data.splits import split
from recsys.embeddings import ExactIndex
from recsys.evaluation.approximate import evaluate_with_index, overlap_at
from recsys.evaluation.full_ranking import evaluate
from recsys.models import create_model
from recsys.models.base import Recommender
from recsys.retrieval import AnnoyIndex, recommend_to_file

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGS = HERE / "configs"
K = 20
BUDGETS = {"auto": None, "annoy": -1}
"""search_k in a config: ``auto`` (the index's default), ``annoy`` (Annoy's own, candidates x trees), or a number."""


# -- measuring -------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_product_seconds(users: np.ndarray, items: np.ndarray, size: int) -> float:
    """The floor: every score by torch's float32 product, in blocks of ``size`` users (the
    exact search's), no masking, no top-k, no copies back."""
    start = time.perf_counter()
    items_t = torch.as_tensor(np.ascontiguousarray(items, dtype=np.float32))
    with torch.inference_mode():
        buffer = torch.empty((min(len(users), size), len(items)))
        for lo in range(0, len(users), size):
            block = torch.as_tensor(users[lo:lo + size])
            scores = buffer[: len(block)]
            torch.matmul(block, items_t.T, out=scores)
            float(scores[0, 0])  # make sure it ran
    return time.perf_counter() - start


def exact_seconds(users: np.ndarray, index: ExactIndex, exclude) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    found, _ = index.search(users, K, exclude)
    return time.perf_counter() - start, found


def latency_ms(index, vectors: np.ndarray, exclude, n: int = 100) -> float:
    """Median milliseconds of one single-user query (online serving, no batching)."""
    times = []
    for row in range(min(n, len(vectors))):
        excl = None if exclude is None else exclude[row:row + 1]
        start = time.perf_counter()
        index.search(vectors[row:row + 1], K, excl)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 3)


def product_and_top20(vectors: np.ndarray, items: np.ndarray, index: ExactIndex, exclude, repeats: int = 3):
    """The bare product and the exact top-20, alternated ``repeats`` times, best of each:
    on a shared machine the load changes between two runs more than the two paths differ."""
    floors, tops = [], []
    for _ in range(repeats):
        floors.append(bare_product_seconds(vectors, items, index.block_users))
        seconds, found = exact_seconds(vectors, index, exclude)
        tops.append(seconds)
    return min(floors), min(tops), found


def annoy_grid(model: Recommender, vectors: np.ndarray, exclude, truth: np.ndarray, spec: dict[str, Any],
               test=None) -> list[dict[str, Any]]:
    rows = []
    for trees in spec["trees"]:
        index = AnnoyIndex.build(model, trees=trees, n_jobs=-1)
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp) / "index")
            size = sum(f["bytes"] for f in index.meta["files"].values())
            items_bytes = index.meta["files"]["items.ann"]["bytes"]
        for budget in spec["search_k"]:
            index.search_k = BUDGETS.get(budget, budget)
            start = time.perf_counter()
            found, _ = index.search(vectors, K, exclude)
            seconds = time.perf_counter() - start
            row = {
                "trees": trees,
                "search_k": {None: "auto", -1: "annoy n*trees"}.get(index.search_k, index.search_k),
                "metric": index.meta.get("metric"),
                "metric_choice": {m: round(v, 3) for m, v in (index.meta.get("metric_choice") or {}).items()},
                "build_s": round(index.meta["build_seconds"], 2),
                "index_mb": round(size / 2**20, 1),
                "items_ann_mb": round(items_bytes / 2**20, 1),
                "users_per_s": round(len(vectors) / seconds, 1),
                "overlap@20": round(float(overlap_at(found, truth, K).mean()), 4),
                "ms_per_single_query": latency_ms(index, vectors, exclude),
            }
            if test is not None:
                row["recall@20"] = round(evaluate_with_index(model, test, index, ks=(K,)).metrics["recall@20"], 4)
            rows.append(row)
            common.say(f"    {row}")
    return rows


# -- the catalogues --------------------------------------------------------------------------
def synthetic_model(n_users: int, n_items: int, d: int, structure: str, rank: int = 16, seed: int = 0) -> Recommender:
    """Random factors, either ``lowrank`` (Gaussian in a 16-dim subspace plus noise: no
    clusters, the hard case for trees) or ``clustered`` (users and items around 1,000
    shared centres, item norms log-normal like popularity: closer to learned embeddings)."""
    import scipy.sparse as sp

    from recsys.data.vocabulary import Vocabulary
    from recsys.models import Popular

    rng = np.random.default_rng(seed)
    model = Popular()  # any model: only the geometry is used
    model.users = Vocabulary(np.arange(n_users))
    model.items = Vocabulary(np.arange(n_items))
    if structure == "clustered":
        centres = rng.normal(size=(1000, d)).astype(np.float32)
        item_c = rng.integers(0, 1000, n_items)
        user_c = rng.integers(0, 1000, n_users)
        items = centres[item_c] + 0.5 * rng.normal(size=(n_items, d)).astype(np.float32)
        scale = rng.lognormal(0.0, 0.5, size=(n_items, 1)).astype(np.float32)
        model.item_factors = (items * scale / np.sqrt(d)).astype(np.float32)
        model.user_factors = (centres[user_c] + 0.5 * rng.normal(size=(n_users, d))).astype(np.float32)
    elif structure == "lowrank":
        basis = rng.normal(size=(rank, d)).astype(np.float32)
        model.user_factors = (rng.normal(size=(n_users, rank)).astype(np.float32) @ basis
                              + 0.3 * rng.normal(size=(n_users, d)).astype(np.float32))
        model.item_factors = (rng.normal(size=(n_items, rank)).astype(np.float32) @ basis
                              + 0.3 * rng.normal(size=(n_items, d)).astype(np.float32)) / np.sqrt(d)
    else:
        raise SystemExit(f"structure {structure!r}: lowrank or clustered")
    model.seen = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    model.item_popularity = np.zeros(n_items, dtype=np.int64)
    model.training_fingerprint = "synthetic"
    model.history = []
    return model


def catalogue(spec: dict[str, Any], structure: str) -> str:
    return f"synthetic {structure} {spec['users']}x{spec['items']}x{spec['dims']}"


# -- the parts -------------------------------------------------------------------------------
def part_real(spec: dict[str, Any], data_dir: Path) -> list[dict[str, Any]]:
    out = []
    for name, relative in spec["datasets"].items():
        data = read_interactions(common.data_file(relative, data_dir))
        train, test = split(data, "user", test_fraction=0.2, seed=spec["split_seed"])
        model = create_model(spec["model"], **spec["params"]).fit(train)
        vectors = model.user_vectors()
        index = model.exact_index("cpu")
        floor, exact_s, truth = product_and_top20(vectors, model.item_vectors(), index, model.seen)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            recommend_to_file(model, Path(tmp) / "recs.parquet", "all", K)
            job_s = time.perf_counter() - start
        recall = evaluate(model, test, ks=(K,)).metrics["recall@20"]
        entry = {
            "data": name, "users": data.n_users, "items": data.n_items, "model": spec["model"],
            "factors": model.item_factors.shape[1],
            "exact": {
                "recall@20": round(recall, 4),
                "users_per_s": round(len(vectors) / exact_s, 1),
                "bare_product_s": round(floor, 4),
                "top20_s": round(exact_s, 4),
                "top20_over_product": round(exact_s / floor, 2),
                "batch_job_to_parquet_s": round(job_s, 3),
                "ms_per_single_query": latency_ms(index, vectors, model.seen),
            },
        }
        common.say(f"{name} {entry['exact']}")
        entry["annoy"] = annoy_grid(model, vectors, model.seen, truth, spec, test)
        out.append(entry)
    return out


def part_synthetic(spec: dict[str, Any], structure: str) -> dict[str, Any]:
    model = synthetic_model(spec["users"], spec["items"], spec["dims"], structure)
    vectors = model.user_vectors()
    index = model.exact_index("cpu")
    floor, exact_s, _ = product_and_top20(vectors, model.item_vectors(), index, None, repeats=2)
    entry = {
        "data": catalogue(spec, structure),
        "exact": {"users_per_s": round(spec["users"] / exact_s, 1), "bare_product_s": round(floor, 2),
                  "top20_s": round(exact_s, 2), "top20_over_product": round(exact_s / floor, 2),
                  "ms_per_single_query": latency_ms(index, vectors, None)},
    }
    common.say(str(entry))
    sample = vectors[:spec["sample"]]
    _, truth = exact_seconds(sample, index, None)
    entry["annoy"] = annoy_grid(model, sample, None, truth, spec)
    return entry


def _child(*args: Any) -> dict[str, Any]:
    """A child stage of this script, in its own process (its peak memory its own); its JSON line."""
    command = [sys.executable, "-m", "experiments.retrieval.benchmark", *map(str, args)]
    result = subprocess.run(command, cwd=common.ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def part_large(spec: dict[str, Any], structure: str) -> dict[str, Any]:
    shape = (spec["users"], spec["items"], spec["dims"], structure)
    runs = []
    for sample in spec["samples"]:
        runs.append(_child("child-search", *shape, sample))
        common.say(f"   large exact {runs[-1]}")
    entry = {"data": catalogue(spec, structure), "exact_runs": runs, "annoy": []}
    if spec["trees"]:
        model = synthetic_model(*shape)
        vectors = model.user_vectors()[:spec["samples"][0]]
        _, truth = exact_seconds(vectors, model.exact_index("cpu"), None)
        entry["annoy"] = annoy_grid(model, vectors, None, truth, spec)
    return entry


def part_job(spec: dict[str, Any], structure: str) -> dict[str, Any]:
    result = _child("child-job", spec["users"], spec["items"], spec["dims"], structure)
    common.say(f"   job {result}")
    return {"data": catalogue(spec, structure), **result}


def child_search(n_users: int, n_items: int, d: int, structure: str, sample: int) -> None:
    """One exact run in this process; prints JSON with the peak RSS."""
    model = synthetic_model(n_users, n_items, d, structure)
    base_rss = peak_rss_mb()
    index = model.exact_index("cpu")
    vectors = model.user_vectors()[:sample]
    exclude = model.seen[:sample]
    seconds, _ = exact_seconds(vectors, index, exclude)
    single = latency_ms(index, vectors, exclude, 50)
    print(json.dumps({
        "ms_per_single_query": single,
        "users_queried": sample, "seconds": round(seconds, 2), "users_per_s": round(sample / seconds, 1),
        "block_users": index.block_users, "peak_rss_mb_before_search": round(base_rss),
        "peak_rss_mb": round(peak_rss_mb()),
    }))


def child_job(n_users: int, n_items: int, d: int, structure: str) -> None:
    """The whole batch job for every user, to Parquet; prints JSON with the peak RSS."""
    model = synthetic_model(n_users, n_items, d, structure)
    base_rss = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.parquet"
        result = recommend_to_file(model, out, "all", K, device="cpu")
        size = out.stat().st_size
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "users": result.users, "rows": result.rows, "seconds": round(result.seconds, 1),
        "users_per_s": round(result.users / result.seconds, 1), "parquet_mb": round(size / 2**20, 1),
        "peak_rss_mb_before_job": round(base_rss), "peak_rss_mb": round(peak_rss_mb()),
        "user_seconds": round(usage.ru_utime, 2), "system_seconds": round(usage.ru_stime, 2),
    }))


def stage_run(name: str, config: dict[str, Any], data_dir: Path) -> None:
    structure = config.get("structure", "lowrank")
    payload: dict[str, Any] = {"k": K, "structure": structure, "torch_threads": torch.get_num_threads(),
                               "torch": torch.__version__, "machine_before": common.machine()}
    common.say(str(payload))
    if "real" in config:
        payload["real"] = part_real(config["real"], data_dir)
    if "synthetic" in config:
        payload["synthetic"] = part_synthetic(config["synthetic"], structure)
    if "large" in config:
        payload["large"] = part_large(config["large"], structure)
    if "job" in config:
        payload["job"] = part_job(config["job"], structure)
    common.say(f"wrote {common.write_result(RESULTS, name, payload)}")


# -- table: the README's tables from the newest results --------------------------------------
def label(entry: dict[str, Any]) -> str:
    found = re.fullmatch(r"synthetic (\w+) (\d+)x(\d+)x(\d+)", entry["data"])
    if found:
        structure, users, items, dims = found.groups()
        return f"synthetic {structure.replace('lowrank', 'low-rank')} {int(users):,} x {int(items):,} x {dims}"
    return f"{entry['data']} ({entry['users']:,} x {entry['items']:,}, d {entry['factors']})"


def _newest(*names: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, result) for name in names if (result := common.latest_result(RESULTS, name)) is not None]


def _sig(value: float, digits: int = 3) -> str:
    return f"{value:,.0f}" if value >= 10 ** digits else f"{value:.{digits}g}"


def exact_table() -> list[str]:
    results = _newest("real", "synthetic", "clustered")
    rows = []
    for _, result in results:
        for entry in [*result.get("real", []), *([result["synthetic"]] if "synthetic" in result else [])]:
            x = entry["exact"]
            rows.append((label(entry), x.get("recall@20", ""), f"{x['users_per_s']:,.0f}", _sig(x["bare_product_s"]),
                         _sig(x["top20_s"]), f"{x['top20_over_product']:.2f}", _sig(x["ms_per_single_query"], 2)))
    return [common.sources(RESULTS, [r for _, r in results]) + ".", "", *common.markdown_table(
        ["data", "exact recall@20", "users/s", "bare product s", "exact top-20 s", "top-20 / product", "ms per single query"], rows)]


def memory_table() -> list[str]:
    results = _newest("memory", "job")
    rows = []
    for name, result in results:
        if name == "memory":
            for r in result["large"]["exact_runs"]:
                rows.append(("search", f"{r['users_queried']:,}", r["seconds"], f"{r['users_per_s']:,.0f}",
                             f"{r['peak_rss_mb_before_search']:,}", f"{r['peak_rss_mb']:,}", _sig(r["ms_per_single_query"], 2)))
        else:
            j = result["job"]
            rows.append(("whole batch job to Parquet, all users", f"{j['users']:,}", f"{j['seconds']:,.0f}",
                         f"{j['users_per_s']:,.0f}", f"{j['peak_rss_mb_before_job']:,}", f"{j['peak_rss_mb']:,}", ""))
    return [common.sources(RESULTS, [r for _, r in results]) + ".", "", *common.markdown_table(
        ["run", "users", "seconds", "users/s", "peak RSS before, MB", "peak RSS, MB", "ms per single query"], rows)]


def _metric(row: dict[str, Any]) -> str:
    choice = row.get("metric_choice") or {}
    shares = f" ({choice.get('dot', '')} / {choice.get('angular', '')})" if choice else ""
    return f"{row.get('metric', 'dot')}{shares}"


def annoy_tables() -> list[str]:
    lines = []
    for _, result in _newest("real", "synthetic", "clustered"):
        for entry in [*result.get("real", []), *([result["synthetic"]] if "synthetic" in result else [])]:
            x, real = entry["exact"], "recall@20" in entry["exact"]
            exact = f"exact: {x['users_per_s']:,.0f} users/s, {_sig(x['ms_per_single_query'], 2)} ms per query"
            exact += f", recall@20 {x['recall@20']}" if real else ""
            lines += [f"{label(entry)} ({entry.get('model', 'ALS').upper() if real else 'Annoy on a sample of users'}; "
                      f"{exact}; `{common.result_file_name(RESULTS, result)}`):", ""]
            header = ["trees", "search_k", "metric (dot / angular share)", "build s", "index MB", "users/s", "overlap@20",
                      *(["recall@20"] if real else []), "ms per single query"]
            rows = [(r["trees"], r["search_k"], _metric(r), r["build_s"], r["index_mb"], f"{r['users_per_s']:,.0f}",
                     f"{r['overlap@20']:.3f}", *([r["recall@20"]] if real else []), _sig(r["ms_per_single_query"]))
                    for r in entry["annoy"]]
            lines += [*common.markdown_table(header, rows), ""]
    return lines[:-1]


def million_table() -> list[str]:
    results = [(n, r) for n, r in _newest("large", "clustered") if "large" in r]
    rows, exact = [], []
    for _, result in results:
        entry = result["large"]
        structure = label(entry).split()[1]
        run = entry["exact_runs"][0]
        threads = result.get("torch_threads", 1)
        exact.append(f"{structure} {run['users_per_s']:,.0f} users/s and {run['ms_per_single_query']:.1f} ms per query "
                     f"(torch on {threads} thread{'s' if threads != 1 else ''})")
        for r in entry["annoy"]:
            budget = f"auto ({_auto_budget(entry):,})" if r["search_k"] == "auto" else r["search_k"]
            rows.append((structure, r["trees"], budget, _metric(r), r["build_s"], f"{r['index_mb']:,.0f}",
                         f"{r['users_per_s']:,.0f}", f"{r['overlap@20']:.3f}", _sig(r["ms_per_single_query"])))
    return [f"Exact: {'; '.join(exact)}; {common.sources(RESULTS, [r for _, r in results])}.", "",
            *common.markdown_table(["factors", "trees", "search_k", "metric (dot / angular share)", "build s", "index MB",
                                    "users/s", "overlap@20", "ms per single query"], rows)]


def _auto_budget(entry: dict[str, Any]) -> int:
    from recsys.retrieval.annoy_index import auto_search_k

    items = int(re.fullmatch(r"synthetic \w+ \d+x(\d+)x\d+", entry["data"]).group(1))
    return auto_search_k(items, entry["annoy"][0]["trees"], K)


def stage_table() -> None:
    readme, module = HERE / "README.md", "experiments.retrieval.benchmark"
    common.publish_table(module, exact_table(), [(readme, "exact")])
    common.publish_table(module, memory_table(), [(readme, "memory")])
    common.publish_table(module, annoy_tables(), [(readme, "annoy")])
    common.publish_table(module, million_table(), [(readme, "million")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{run,table}")
    run = sub.add_parser("run", help="run the parts of a config")
    run.add_argument("--config", required=True, help="configs/CONFIG.toml")
    run.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    sub.add_parser("table", help="the README's tables from the newest results")
    search = sub.add_parser("child-search", help=argparse.SUPPRESS)
    job = sub.add_parser("child-job", help=argparse.SUPPRESS)
    for child in (search, job):
        for arg in ("users", "items", "dims"):
            child.add_argument(arg, type=int)
        child.add_argument("structure")
    search.add_argument("sample", type=int)
    args = parser.parse_args(argv)
    if args.stage == "run":
        stage_run(args.config, common.read_config(CONFIGS / f"{args.config}.toml"), args.data_dir)
    elif args.stage == "table":
        stage_table()
    elif args.stage == "child-search":
        child_search(args.users, args.items, args.dims, args.structure, args.sample)
    else:
        child_job(args.users, args.items, args.dims, args.structure)


if __name__ == "__main__":
    main()
