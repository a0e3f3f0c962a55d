"""How fast a large CSV becomes an ``Interactions``, and at what memory.

One script, one config (``configs/loading.toml``: the rows, the seed, where the file goes);
each run writes ``results/loading.<date>.<commit>.json`` and ``table`` puts the newest into
the README. Run from the repository root:

    OMP_NUM_THREADS=1 python -m experiments.baselines.loading run [--rows 2000000]
    python -m experiments.baselines.loading table

Writes ``<folder>/recsys-bench-<rows>.csv`` (``user,item,rating,timestamp`` with a header;
seeded; skewed item popularity; reused when present), then reads it with
``recsys.data.io.read_interactions`` in a fresh child process and reports wall time, rows/s
and the child's peak resident memory (``resource.getrusage``), beside its memory right
after importing recsys. CPU seconds (the child, every thread) are given beside the wall
time because the machine these tables come from is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "loading.toml"


def row_key(row: dict[str, Any]) -> int:
    return row["rows"]


def generate(path: Path, rows: int, seed: int, chunk: int = 2_000_000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 100, 1), max(rows // 200, 1)
    tmp = path.with_suffix(".csv.part")
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("rating", pa.float64()), ("timestamp", pa.int64())])
    with pacsv.CSVWriter(str(tmp), schema) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            item = (n_items * rng.random(n) ** 3).astype(np.int64)  # skewed popularity (density ~ x^(-2/3))
            table = pa.table({
                "user": rng.integers(0, n_users, n),
                "item": item,
                "rating": rng.integers(1, 11, n) / 2.0,
                "timestamp": rng.integers(1_000_000_000, 1_700_000_000, n),
            }, schema=schema)
            writer.write_table(table)
    tmp.rename(path)


def measure(path: Path) -> dict[str, float]:
    """Runs in the child: import, read, report."""
    import recsys.data.io as io

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    start, cpu0 = time.perf_counter(), time.process_time()
    data = io.read_interactions(path)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    matrix = data.matrix
    arrays = (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 2**20
    return {"seconds": seconds, "cpu_seconds": cpu, "rss_after_import_mib": base, "peak_rss_mib": peak,
            "entries": data.nnz, "users": data.n_users, "items": data.n_items, "csr_mib": arrays}


def stage_run(config: dict[str, Any]) -> None:
    rows = config["rows"]
    path = Path(config["folder"]) / f"recsys-bench-{rows}.csv"
    if not path.is_file():
        start = time.perf_counter()
        generate(path, rows, config["seed"])
        common.say(f"generated {path} in {time.perf_counter() - start:.0f} s")
    child = subprocess.run([sys.executable, "-m", "experiments.baselines.loading", "measure", "--file", str(path)],
                           cwd=common.ROOT, check=True, capture_output=True, text=True)
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    row = {"rows": rows, "file_mib": path.stat().st_size / 2**20, **figures, "rows_per_second": rows / figures["seconds"]}
    common.say(json.dumps(row))
    common.write_rows(RESULTS, "loading", {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": [row]},
                            row_key)


def table() -> list[str]:
    rows, results = common.merged_rows(RESULTS, "loading", row_key)
    if not rows:
        return []
    header = ["rows", "file (MiB)", "read_interactions wall (s)", "CPU (s, all threads)", "rows/s (wall)",
              "peak RSS (MiB)", "RSS after import (MiB)", "CSR arrays (MiB)", "entries after dedup", "users", "items"]
    cells = [(f"{r['rows']:,}", f"{r['file_mib']:,.0f}", f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
             f"{r['rows_per_second']:,.0f}", f"{r['peak_rss_mib']:,.0f}", f"{r['rss_after_import_mib']:,.0f}",
             f"{r['csr_mib']:,.0f}", f"{r['entries']:,}", f"{r['users']:,}", f"{r['items']:,}") for r in rows]
    threads = ", ".join(sorted({str(r.get("omp_num_threads") or "unset") for r in results}))
    return [f"{common.sources(RESULTS, results)}; OMP_NUM_THREADS={threads}.", "", *common.markdown_table(header, cells)]


def stage_table() -> None:
    common.publish_table("experiments.baselines.loading", table(), [(HERE / "README.md", "loading"), (HERE.parent / "README.md", "baselines/loading")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "table", "measure"], help="measure: the child's part (internal)")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--rows", type=int, help="run: rows instead of the config's")
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage == "measure":
        print(json.dumps(measure(args.file)))
    elif args.stage == "table":
        stage_table()
    else:
        config = common.read_config(args.config)
        if args.rows:
            config["rows"] = args.rows
        stage_run(config)


if __name__ == "__main__":
    main()
