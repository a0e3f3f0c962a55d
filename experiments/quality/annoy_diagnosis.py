"""Issue 6, round two: why the Annoy index lost recall on ml-latest-small (README.md, "Round two").

Seed 0's split, 20 trees, 150 test users drawn at random (seeded). For each model and
``search_k`` (in multiples of the catalogue N): the share of each user's exact top-20
(unseen items) that Annoy returns when asked for 20 + |seen| candidates, through Annoy's
``dot`` metric and through ``angular`` over the augmented vectors ``[v, sqrt(M^2 - |v|^2)]``
with the query ``[u, 0]``; for ``dot`` also light versus heavy users (history below or
above the median) and the share of distinct items the search visits; and the item-norm
quantiles. Printed, and written to ``results/annoy_diagnosis.json``.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/quality/annoy_diagnosis.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from annoy import AnnoyIndex as Annoy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "baselines"))
from reference import DATA_DIR, ImplicitALS, load_dataset

from recsys.data.splits import split
from recsys.models import create_model
from recsys.retrieval.annoy_index import augment

RESULTS = Path(__file__).resolve().parent / "results"
TREES = 20
USERS = 150


def models(name: str) -> dict[str, Any]:
    if name == "ml-latest-small":
        return {
            "iALS 256 (round one)": create_model(
                "ials", factors=256, regularization=0.01, unobserved_weight=0.015, regularization_exponent=1.0,
                weighting="binary", epochs=32, device="cpu", random_state=0),
            "implicit ALS 256 (reference)": ImplicitALS(
                factors=256, regularization=10.0, alpha=1.0, weighting="binary", iterations=30, num_threads=1,
                random_state=0),
        }
    return {
        "iALS 64": create_model("ials", factors=64, regularization=0.01, unobserved_weight=0.03,
                                regularization_exponent=1.0, weighting="binary", epochs=16, device="cpu", random_state=0),
        "recsys ALS (defaults)": create_model("als", random_state=0),
    }


def forest(vectors: np.ndarray, metric: str) -> Any:
    f = Annoy(vectors.shape[1], metric)
    f.set_seed(0)
    for i, row in enumerate(vectors):
        f.add_item(i, row)
    f.build(TREES, n_jobs=1)
    return f


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for name in ("ml-latest-small", "lastfm-2k"):
        data = load_dataset(name, DATA_DIR)
        train, test = split(data, "user", test_fraction=0.2, seed=0)
        users = np.unique(test.matrix.nonzero()[0])
        users = np.random.default_rng(0).choice(users, USERS, replace=False)
        for label, model in models(name).items():
            model.fit(train)
            items = model.item_vectors().astype(np.float32)
            queries = model.user_factors
            if queries.shape[1] != items.shape[1]:  # bias-folded item vectors: the user side gets ones
                queries = np.hstack([queries, np.ones((len(queries), items.shape[1] - queries.shape[1]), queries.dtype)])
            norms = np.linalg.norm(items, axis=1)
            entry: dict[str, Any] = {"norm_quantiles (0, .5, .9, .99, 1)": np.quantile(norms, [0, .5, .9, .99, 1]).round(3).tolist()}
            forests = {"dot": forest(items, "dot"), "angular+augmented": forest(augment(items), "angular")}
            seen = model.seen
            n = len(items)
            for mult in (2, 4):
                row: dict[str, Any] = {}
                for metric, f in forests.items():
                    found, visited, history = [], [], []
                    for u in users:
                        s = seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
                        score = items @ queries[u]
                        score[s] = -np.inf
                        top = np.argsort(-score)[:20]
                        asked = min(20 + len(s), n)
                        q = queries[u] if metric == "dot" else np.append(queries[u], 0.0)
                        budget = max(mult * n, asked * TREES)
                        found.append(np.isin(top, f.get_nns_by_vector(q, asked, search_k=budget)).mean())
                        visited.append(len(f.get_nns_by_vector(q, n, search_k=budget)) / n)
                        history.append(len(s))
                    found_arr, hist = np.array(found), np.array(history)
                    heavy = hist > np.median(hist)
                    row[metric] = {"top20_found": float(found_arr.mean()), "light_users": float(found_arr[~heavy].mean()),
                                   "heavy_users": float(found_arr[heavy].mean()),
                                   "distinct_items_visited": float(np.mean(visited))}
                entry[f"search_k={mult}N"] = row
                print(f"{name} | {label} | search_k {mult}N | " + " | ".join(
                    f"{m}: top-20 found {r['top20_found']:.3f} (light {r['light_users']:.3f}, heavy "
                    f"{r['heavy_users']:.3f}), visited {r['distinct_items_visited']:.2f}" for m, r in row.items()), flush=True)
            print(f"{name} | {label} | item norms {entry['norm_quantiles (0, .5, .9, .99, 1)']}", flush=True)
            out[f"{name} | {label}"] = entry
            (RESULTS / "annoy_diagnosis.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
