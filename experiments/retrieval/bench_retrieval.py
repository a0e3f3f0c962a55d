"""Exact versus Annoy retrieval: accuracy, speed, build time and index size.

    python experiments/retrieval/bench_retrieval.py --data-dir /work/shared/data --out results.json

Parts (each can be skipped):

- ``real``: ALS (64 factors) on ml-latest-small and lastfm-2k, per-user 80/20 split.
  Exact: recall@20, users/s of top-20 with seen items excluded, the time of the bare
  matrix product of the same shapes in the same blocks (the floor), and the whole batch job
  writing Parquet. Annoy: for each trees x search_k, build time, index size, users/s,
  overlap@20 with the exact top-20, recall@20 through the index.
- ``synthetic``: random low-rank factors, 30,000 users x 40,000 items x 128 (exact versus the
  bare product; Annoy on a sample of users).
- ``large``: 100,000 users x 1,000,000 items x 32, exact top-20 for a sample of users in a
  child process (peak RSS is measured per run: it must not grow with the users), and
  Annoy on the same catalogue to show the crossover.

Every timing is wall-clock on the machine named in the output, under the load printed next
to it; on a shared machine read ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys.data.io import read_interactions
from recsys.data.splits import split
from recsys.evaluation.approximate import evaluate_with_index, overlap_at
from recsys.evaluation.evaluate import evaluate
from recsys.models import ALS
from recsys.models.base import Recommender
from recsys.retrieval import AnnoyIndex, ExactIndex, recommend_to_file

K = 20


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_product_seconds(users: np.ndarray, index: ExactIndex) -> float:
    """The floor: the same blocked product, no masking, no top-k, no copies back."""
    start = time.perf_counter()
    with torch.inference_mode():
        buffer = torch.empty((min(len(users), index.block_users), index.n_items))
        for lo in range(0, len(users), index.block_users):
            block = torch.as_tensor(users[lo:lo + index.block_users])
            scores = buffer[: len(block)]
            torch.matmul(block, index.items.T, out=scores)
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


def product_and_top20(vectors: np.ndarray, index: ExactIndex, exclude, repeats: int = 3):
    """The bare product and the exact top-20, alternated ``repeats`` times, best of each:
    on a shared machine the load changes between two runs more than the two paths differ."""
    floors, tops = [], []
    for _ in range(repeats):
        floors.append(bare_product_seconds(vectors, index))
        seconds, found = exact_seconds(vectors, index, exclude)
        tops.append(seconds)
    return min(floors), min(tops), found


def annoy_grid(model: Recommender, vectors: np.ndarray, exclude, truth: np.ndarray, trees_list, search_ks,
               test=None) -> list[dict]:
    rows = []
    for trees in trees_list:
        index = AnnoyIndex.build(model, trees=trees, n_jobs=-1)
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp) / "index")
            size = sum(f["bytes"] for f in index.meta["files"].values())
            items_bytes = index.meta["files"]["items.ann"]["bytes"]
        for search_k in search_ks:
            index.search_k = search_k
            start = time.perf_counter()
            found, _ = index.search(vectors, K, exclude)
            seconds = time.perf_counter() - start
            row = {
                "trees": trees,
                "search_k": {None: "auto", -1: "annoy n*trees"}.get(search_k, search_k),
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
                ev = evaluate_with_index(model, test, index, ks=(K,))
                row["recall@20"] = round(ev.metrics["recall@20"], 4)
            rows.append(row)
            print("   ", row, flush=True)
    return rows


def real(data_dir: Path, trees_list, search_ks) -> list[dict]:
    out = []
    for name, path in (("ml-latest-small", "ml-latest-small/ratings.csv"), ("lastfm-2k", "lastfm-2k/user_artists.dat")):
        file = data_dir / path
        if not file.exists():
            print(f"skip {name}: {file} not found", flush=True)
            continue
        data = read_interactions(file)
        train, test = split(data, "user", test_fraction=0.2, seed=0)
        model = ALS(factors=64, epochs=15).fit(train)
        vectors = model.user_vectors()
        index = model.exact_index("cpu")
        floor, exact_s, truth = product_and_top20(vectors, index, model.seen)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            recommend_to_file(model, Path(tmp) / "recs.parquet", "all", K)
            job_s = time.perf_counter() - start
        recall = evaluate(model, test, ks=(K,)).metrics["recall@20"]
        entry = {
            "data": name, "users": data.n_users, "items": data.n_items, "factors": 64,
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
        print(name, entry["exact"], flush=True)
        entry["annoy"] = annoy_grid(model, vectors, model.seen, truth, trees_list, search_ks, test)
        out.append(entry)
    return out


STRUCTURE = os.environ.get("BENCH_STRUCTURE", "lowrank")


def synthetic_model(n_users: int, n_items: int, d: int, rank: int = 16, seed: int = 0,
                    structure: str | None = None) -> Recommender:
    """Random factors, either ``lowrank`` (Gaussian in a 16-dim subspace plus noise: no
    clusters, the hard case for trees) or ``clustered`` (users and items around 1,000
    shared centres, item norms log-normal like popularity: closer to learned embeddings)."""
    from recsys.data.vocabulary import Vocabulary
    from recsys.models import Popular

    structure = structure or STRUCTURE
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
    else:
        basis = rng.normal(size=(rank, d)).astype(np.float32)
        model.user_factors = (rng.normal(size=(n_users, rank)).astype(np.float32) @ basis
                              + 0.3 * rng.normal(size=(n_users, d)).astype(np.float32))
        model.item_factors = (rng.normal(size=(n_items, rank)).astype(np.float32) @ basis
                              + 0.3 * rng.normal(size=(n_items, d)).astype(np.float32)) / np.sqrt(d)
    import scipy.sparse as sp

    model.seen = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    model.item_popularity = np.zeros(n_items, dtype=np.int64)
    model.training_fingerprint = "synthetic"
    model.history = []
    return model


def synthetic(n_users: int, n_items: int, d: int, sample: int, trees_list, search_ks) -> dict:
    model = synthetic_model(n_users, n_items, d)
    vectors = model.user_vectors()
    index = model.exact_index("cpu")
    floor, exact_s, _ = product_and_top20(vectors, index, None, repeats=2)
    entry = {
        "data": f"synthetic {STRUCTURE} {n_users}x{n_items}x{d}",
        "exact": {"users_per_s": round(n_users / exact_s, 1), "bare_product_s": round(floor, 2),
                  "top20_s": round(exact_s, 2), "top20_over_product": round(exact_s / floor, 2),
                  "ms_per_single_query": latency_ms(index, vectors, None)},
    }
    print(entry, flush=True)
    sample_vectors = vectors[:sample]
    _, truth = exact_seconds(sample_vectors, index, None)
    entry["annoy"] = annoy_grid(model, sample_vectors, None, truth, trees_list, search_ks)
    return entry


def large_child(n_users: int, n_items: int, d: int, sample: int) -> None:
    """One exact run in this process; prints JSON with the peak RSS."""
    model = synthetic_model(n_users, n_items, d)
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


def large_job_child(n_users: int, n_items: int, d: int) -> None:
    """The whole batch job for every user, to Parquet; prints JSON with the peak RSS."""
    model = synthetic_model(n_users, n_items, d)
    base_rss = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.parquet"
        result = recommend_to_file(model, out, "all", K, device="cpu")
        size = out.stat().st_size
    print(json.dumps({
        "users": result.users, "rows": result.rows, "seconds": round(result.seconds, 1),
        "users_per_s": round(result.users / result.seconds, 1), "parquet_mb": round(size / 2**20, 1),
        "peak_rss_mb_before_job": round(base_rss), "peak_rss_mb": round(peak_rss_mb()),
    }))


def large(n_users: int, n_items: int, d: int, samples, trees_list, search_ks) -> dict:
    runs = []
    for sample in samples:
        cmd = [sys.executable, __file__, "--large-child", str(n_users), str(n_items), str(d), str(sample)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print("   large exact", runs[-1], flush=True)
    model = synthetic_model(n_users, n_items, d)
    vectors = model.user_vectors()[:samples[0]]
    _, truth = exact_seconds(vectors, model.exact_index("cpu"), None)
    annoy = annoy_grid(model, vectors, None, truth, trees_list, search_ks)
    return {"data": f"synthetic {STRUCTURE} {n_users}x{n_items}x{d}", "exact_runs": runs, "annoy": annoy}


def render(results: dict) -> str:
    """Markdown tables of a results file."""
    lines = [f"machine: {results['machine']}", f"load after: {results.get('machine_after', {}).get('load')}", ""]
    entries = [*results.get("real", []), *([results["synthetic"]] if "synthetic" in results else [])]
    if entries:
        lines += ["| data | exact recall@20 | exact users/s | bare product s | exact top-20 s | top-20 / product | ms per single query |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for e in entries:
            x = e["exact"]
            lines.append(f"| {e['data']} | {x.get('recall@20', '')} | {x['users_per_s']} | {x['bare_product_s']} "
                         f"| {x['top20_s']} | {x['top20_over_product']} | {x.get('ms_per_single_query', '')} |")
        lines.append("")
    if "large" in results:
        lines += ["| large exact: users queried | seconds | users/s | users per block | peak RSS MB (before search) | peak RSS MB | ms per single query |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["large"]["exact_runs"]:
            lines.append(f"| {r['users_queried']} | {r['seconds']} | {r['users_per_s']} | {r['block_users']} "
                         f"| {r['peak_rss_mb_before_search']} | {r['peak_rss_mb']} | {r.get('ms_per_single_query', '')} |")
        lines.append("")
    for e in [*entries, *([results["large"]] if "large" in results else [])]:
        lines += [f"Annoy on {e['data']}:", "",
                  "| trees | search_k | metric | build s | index MB | users/s | overlap@20 | recall@20 | ms per single query |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in e["annoy"]:
            lines.append(f"| {r['trees']} | {r['search_k']} | {r.get('metric', 'dot')} | {r['build_s']} | {r['index_mb']} | {r['users_per_s']} "
                         f"| {r['overlap@20']} | {r.get('recall@20', '')} | {r.get('ms_per_single_query', '')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--large-child":
        large_child(*(int(x) for x in sys.argv[2:6]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--large-job":
        # The full batch job: python bench_retrieval.py --large-job 100000 1000000 32
        large_job_child(*(int(x) for x in sys.argv[2:5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--render":
        for path in sys.argv[2:]:
            print(render(json.loads(Path(path).read_text())))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RECSYS_DATA", "/work/shared/data")))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--parts", default="real,synthetic,large")
    parser.add_argument("--trees", default="10,20,50")
    parser.add_argument("--search-k", default="auto,-1,5000,20000", help="auto (the index's default), -1 (Annoy's n*trees) or numbers")
    parser.add_argument("--synthetic-users", type=int, default=30_000)
    parser.add_argument("--large-samples", default="500,2000")
    parser.add_argument("--large-trees", default="10")
    args = parser.parse_args()
    trees = [int(t) for t in args.trees.split(",")]
    search_ks = [None if s == "auto" else int(s) for s in args.search_k.split(",")]
    results = {"machine": machine(), "k": K}
    print(results["machine"], flush=True)
    parts = args.parts.split(",")
    if "real" in parts:
        results["real"] = real(args.data_dir, trees, search_ks)
    if "synthetic" in parts:
        results["synthetic"] = synthetic(args.synthetic_users, 40_000, 128, 2000, trees, search_ks)
    if "large" in parts:
        samples = [int(s) for s in args.large_samples.split(",")]
        large_trees = [int(t) for t in args.large_trees.split(",")]
        results["large"] = large(100_000, 1_000_000, 32, samples, large_trees, search_ks)
    results["machine_after"] = machine()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
