"""Embedding diagnostics on MovieLens 100K: genre map, clusters, label audit, beyond accuracy.

    python experiments/diagnostics/ml100k.py --data /work/shared/data/ml-100k

Trains ALS (and the popularity baseline) with recsys on a per-user 80/20 split of
``u.data``, turns ``u.item`` into an item table (``item_id,title,year,genres`` with the
genre flags joined by ``|``), then writes beside this script:

- ``ml100k_items_pca.png``, ``ml100k_items_tsne.png``: item maps coloured by genre
- ``ml100k_clusters.json``, ``ml100k_clusters.md``: k-means clusters and outliers
- ``ml100k_audit.csv``: the genre label audit
- ``ml100k_beyond.md``: accuracy and beyond-accuracy figures of ALS and popularity

and the interactive map to ``--html`` (default /tmp/ml100k_items.html; not committed,
it inlines plotly.js and is several MB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from recsys.workflows import ReadOptions, TrainConfig, train

from recsys.diagnostics import cluster_items, embedding_map, label_audit, load_item_features
from recsys.evaluation.beyond import beyond_accuracy

HERE = Path(__file__).resolve().parent


def item_table(folder: Path, out: Path) -> Path:
    genres = [line.split("|")[0] for line in (folder / "u.genre").read_text(encoding="latin-1").splitlines() if line]
    cols = ["item_id", "title", "release", "video", "url", *genres]
    raw = pd.read_csv(folder / "u.item", sep="|", names=cols, encoding="latin-1", dtype=str)
    flags = raw[genres].astype(int).to_numpy().astype(bool)
    raw["genres"] = ["|".join(g for g, f in zip(genres, row) if f and g != "unknown") for row in flags]
    raw["year"] = raw["release"].str[-4:]
    raw[["item_id", "title", "year", "genres"]].to_csv(out, index=False)
    return out


def md_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + " --- |" * len(frame.columns)
    return head + "".join("\n| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ML100K", "/work/shared/data/ml-100k")))
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--html", type=Path, default=Path("/tmp/ml100k_items.html"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ml100k_diagnostics"))
    args = parser.parse_args()
    if not (args.data / "u.data").is_file():
        raise SystemExit(f"{args.data}: no u.data here; pass --data /path/to/ml-100k")
    args.work.mkdir(parents=True, exist_ok=True)
    items_csv = item_table(args.data, args.work / "items.csv")
    read = ReadOptions(sep="\t", header=False, feedback="rating")
    ks = (10, 20)
    runs = {}
    for name, params in (("als", {"factors": args.factors, "device": "cpu"}), ("popular", {})):
        runs[name] = train(args.data / "u.data", TrainConfig(model=name, params=params, ks=ks),
                           read_options=read, output=args.work / name)
    model = runs["als"].model
    features = load_item_features(model, items_csv)
    assert features is not None

    for method in ("pca", "tsne"):
        emap = embedding_map(model, method=method, color="genres", features=features)
        emap.save(HERE / f"ml100k_items_{method}.png")
    embedding_map(model, method="tsne", color="genres", features=features, hover=("year", "genres")).save(args.html)
    embedding_map(model, method="tsne", color="popularity", features=features).save(HERE / "ml100k_items_tsne_popularity.png")

    report = cluster_items(model, features=features)
    (HERE / "ml100k_clusters.json").write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    lines = [f"k-means, k = {report.k}, on normalized ALS item factors ({args.factors} factors)", "",
             "| cluster | size | top genres (share, lift) | most popular |", "| --- | --- | --- | --- |"]
    for c in report.summary:
        dom = ", ".join(f"{d['value']} {d['share']:.0%} (x{d['lift']:.1f})" for d in c.get("dominant", []))
        pop = "; ".join(p.get("title", str(p["item"])) for p in c["popular"][:4])
        lines.append(f"| {c['cluster']} | {c['size']} | {dom} | {pop} |")
    lines += ["", f"Outliers ({len(report.outliers)}):", "", md_table(report.outliers.head(15))]
    (HERE / "ml100k_clusters.md").write_text("\n".join(lines) + "\n")

    audit = label_audit(model, features, "genres")
    audit.to_csv(HERE / "ml100k_audit.csv", index=False)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    metrics = pd.DataFrame({name: run.evaluation.metrics for name, run in runs.items()})
    # Diversity in each model's own space is not comparable (popularity's factors are its
    # counts, one dimension): also measure both models' lists in the ALS item space.
    users = np.flatnonzero(np.diff(runs["als"].test.matrix.indptr) > 0)
    for name, run in runs.items():
        top, _ = run.model.recommend_indices(users, max(ks))
        figures = beyond_accuracy(top, ks, model.item_popularity, model.item_factors)
        for k in ks:
            metrics.loc[f"diversity@{k} (ALS space)", name] = figures[f"diversity@{k}"]
    header = f"ml-100k, per-user 80/20 split, seed 0; {platform.node()} ({os.cpu_count()} cores), load {load}"
    (HERE / "ml100k_beyond.md").write_text(header + "\n\n" + md_table(metrics.round(4).reset_index(names="metric")) + "\n")
    print(f"{len(audit)} items flagged by the audit; clusters k={report.k}; outliers {len(report.outliers)}")


if __name__ == "__main__":
    main()
