"""Issue 2: how fast a 20-million-row CSV becomes an ``Interactions``, and at what memory.

Writes ``/tmp/recsys-bench-<rows>.csv`` (``user,item,rating,timestamp`` with a header;
seeded; skewed item popularity; reused when present), then reads it with
``recsys.data.read_interactions`` in a fresh child process and reports wall time,
rows/s and the child's peak resident memory (``resource.getrusage``), beside its memory
right after importing recsys. CPU seconds (this process, every thread) are printed beside
the wall time because the machine these tables come from is shared and loaded.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/baselines/bench_load.py [--rows 20000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def generate(path: Path, rows: int, seed: int = 0, chunk: int = 2_000_000) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    path = Path(f"/tmp/recsys-bench-{args.rows}.csv")
    if not path.is_file():
        t0 = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    size = path.stat().st_size / 2**20
    out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| rows | file (MiB) | read_interactions wall (s) | CPU (s, all threads) | rows/s (wall) | peak RSS (MiB) | RSS after import (MiB) | CSR arrays (MiB) | entries after dedup | users | items |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.rows:,} | {size:,.0f} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {args.rows / r['seconds']:,.0f} | {r['peak_rss_mib']:,.0f} "
          f"| {r['rss_after_import_mib']:,.0f} | {r['csr_mib']:,.0f} | {r['entries']:,} | {r['users']:,} | {r['items']:,} |")


if __name__ == "__main__":
    main()
