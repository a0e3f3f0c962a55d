"""Issue 6, round three: more factors for NDCG@20 on ml-latest-small (README.md, "Round three").

Stages (each cached in ``results/round3.<stage>.json``):

- ``val``: iALS on seed 0's validation split only (as round two): 384 and 512 factors at
  round two's pick (nu 0.25, lambda 1, alpha0 0.1) and its neighbours (lambda x0.5, x2;
  alpha0 0.05, 0.2), epochs 8, 16, 24 scored from one fit; then ratings as confidence
  (``weighting`` linear / log, alpha tuned) at 384 factors, and around the best of those. Same pick rule as round two:
  maximize min(val recall / 0.2114, val NDCG / 0.2238). ``--shard i/n`` runs every n-th fit.
- ``refcheck``: the reference (implicit's ALS at its tuned setting) with linear confidence
  on the same validation split, to see whether rating confidence helps it as much.
- ``reftest``: the best of those (by the same rule) on the five test seeds, beside ours.
- ``test``: the pick on seeds 0-4 on test; the reference's per-seed scores are reused from
  ``results/round2.test.json`` (same splits, same reference fits).
- ``table``: ``results/round3.table.md``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python experiments/quality/round3.py --stages val test table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round2 import REF_VAL, RESULTS, Marks, seed0_validation
from run_quality import scores, timed_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "baselines"))
from reference import DATA_DIR, ImplicitALS, load_dataset, machine_line

from recsys.data.splits import split
from recsys.models import create_model

BASE = {"regularization": 1.0, "unobserved_weight": 0.1, "regularization_exponent": 0.25, "weighting": "binary"}
NEIGHBOURS = [{}, {"regularization": 0.5}, {"regularization": 2.0}, {"unobserved_weight": 0.05},
              {"unobserved_weight": 0.2}]
GRID = [{"factors": f, **BASE, **n} for f in (384, 512) for n in NEIGHBOURS]
# ratings as confidence (alpha * r, alpha * log1p(r); ratings 0.5-5, mean about 3.5) at 384 factors
GRID += [{"factors": 384, **BASE, "weighting": w, "alpha": a}
         for w, alphas in (("linear", (0.15, 0.3, 0.6)), ("log", (0.35, 0.7, 1.4))) for a in alphas]
# around the best of those (linear, alpha 0.3): alpha 0.2 / 0.4, and 256 / 512 factors
GRID += [{"factors": 384, **BASE, "weighting": "linear", "alpha": a} for a in (0.2, 0.4)]
GRID += [{"factors": f, **BASE, "weighting": "linear", "alpha": 0.3} for f in (256, 512)]
CHECKPOINTS = [8, 16, 24]


def load(stage: str) -> dict[str, Any]:
    path = RESULTS / f"round3.{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save(stage: str, state: dict[str, Any]) -> None:
    path = RESULTS / f"round3.{stage}.json"
    tmp = path.with_suffix(f".{id(state)}.tmp")
    tmp.write_text(json.dumps(state, indent=1, default=float))
    tmp.replace(path)


def stage_val(log: Any, shard: tuple[int, int]) -> None:
    fit_part, valid = seed0_validation("ml-latest-small")
    ref_r, ref_n = REF_VAL["ml-latest-small"]
    for n, params in enumerate(GRID):
        if n % shard[1] != shard[0]:
            continue
        key = json.dumps(params, sort_keys=True)
        if key in load("val").get("fits", {}):
            continue
        marks = Marks(valid, CHECKPOINTS)
        create_model("ials", **params, epochs=max(CHECKPOINTS), device="cpu", random_state=0).fit(
            fit_part, callbacks=[marks])
        rows = [{**params, "epochs": e, "val_recall": m["recall"], "val_ndcg": m["ndcg"], "cpu": m["cpu"],
                 "score": min(m["recall"] / ref_r, m["ndcg"] / ref_n)} for e, m in marks.found.items()]
        state = load("val")  # merge: the other shard writes too
        state.setdefault("fits", {})[key] = rows
        save("val", state)
        log(f"val {params}: " + " ".join(f"{r['epochs']}:{r['val_recall']:.4f}/{r['val_ndcg']:.4f}" for r in rows))


def stage_refcheck(log: Any) -> None:
    fit_part, valid = seed0_validation("ml-latest-small")
    state = load("refcheck") or {"rows": []}
    done = {(r["weighting"], r["alpha"], r.get("regularization", 10.0)) for r in state["rows"]}
    combos = [("binary", 1.0, 10.0), ("linear", 0.1, 10.0), ("linear", 0.3, 10.0), ("linear", 1.0, 10.0)]
    combos += [("linear", a, lam) for a in (0.2, 0.3, 0.5) for lam in (3.0, 30.0)] + [("linear", a, 10.0) for a in (0.2, 0.5)]
    combos += [("linear", 0.7, 10.0), ("linear", 0.5, 20.0), ("linear", 0.7, 20.0), ("linear", 0.4, 10.0)]
    for weighting, alpha, lam in combos:
        if (weighting, alpha, lam) in done:
            continue
        ref = ImplicitALS(factors=256, regularization=lam, alpha=alpha, weighting=weighting, iterations=30,
                          num_threads=1, random_state=0)
        ref.fit(fit_part)
        m = scores(ref, valid)
        state["rows"].append({"weighting": weighting, "alpha": alpha, "regularization": lam, "val_recall": m["recall"], "val_ndcg": m["ndcg"]})
        save("refcheck", state)
        log(f"reference {weighting} alpha {alpha} lambda {lam}: {m['recall']:.4f}/{m['ndcg']:.4f}")


def stage_reftest(log: Any, seeds: list[int]) -> None:
    ref_r, ref_n = REF_VAL["ml-latest-small"]
    top = max(load("refcheck")["rows"], key=lambda r: min(r["val_recall"] / ref_r, r["val_ndcg"] / ref_n))
    params = {"factors": 256, "regularization": top["regularization"], "alpha": top["alpha"],
              "weighting": top["weighting"], "iterations": 30}
    state = load("reftest") or {"params": params, "val": top, "runs": {}}
    data = load_dataset("ml-latest-small", DATA_DIR)
    for seed in seeds:
        if str(seed) in state["runs"]:
            continue
        train, test = split(data, "user", test_fraction=0.2, seed=seed)
        ref = ImplicitALS(**params, num_threads=1, random_state=seed)
        cpu = timed_fit(ref, train)
        state["runs"][str(seed)] = {**scores(ref, test), "fit_cpu_seconds": cpu}
        save("reftest", state)
        log(f"reference {params} seed {seed}: {state['runs'][str(seed)]['recall']:.4f}/{state['runs'][str(seed)]['ndcg']:.4f}")


def best() -> dict[str, Any]:
    rows = [r for rows in load("val")["fits"].values() for r in rows]
    top = max(rows, key=lambda r: r["score"])
    return top


def stage_test(log: Any, seeds: list[int]) -> None:
    top = best()
    pick = {k: top[k] for k in ("factors", *BASE, "alpha", "epochs") if k in top}
    state = load("test") or {"pick": pick, "val": top, "machine": machine_line(1), "runs": {}}
    refs = json.loads((RESULTS / "round2.test.json").read_text())["ml-latest-small"]
    data = load_dataset("ml-latest-small", DATA_DIR)
    for seed in seeds:
        if str(seed) in state["runs"]:
            continue
        train, test = split(data, "user", test_fraction=0.2, seed=seed)
        ials = create_model("ials", **{**pick, "device": "cpu", "random_state": seed})
        cpu = timed_fit(ials, train)
        ref = refs["runs"][str(seed)]
        state["runs"][str(seed)] = {"ref": ref["ref"], "round2": ref["ials"],
                                    "ials": {**scores(ials, test), "fit_cpu_seconds": cpu}}
        save("test", state)
        r = state["runs"][str(seed)]
        log(f"seed {seed}: ours {r['ials']['recall']:.4f}/{r['ials']['ndcg']:.4f} ref {r['ref']['recall']:.4f}/"
            f"{r['ref']['ndcg']:.4f} round2 {r['round2']['recall']:.4f}/{r['round2']['ndcg']:.4f}")


def weight(row: dict[str, Any]) -> str:
    return f" ({row['alpha']:g})" if "alpha" in row else ""


def table() -> str:
    val = sorted((r for rows in load("val")["fits"].values() for r in rows), key=lambda r: -r["score"])
    lines = ["Validation (seed 0's training part split 80/20 per user; reference 0.2114 / 0.2238):", "",
             "| factors | weighting (alpha) | lambda | alpha0 | epochs | val recall@20 | val NDCG@20 | score |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['factors']} | {r['weighting']}{weight(r)} | {r['regularization']:g} | {r['unobserved_weight']:g} | {r['epochs']} | "
              f"{r['val_recall']:.4f} | {r['val_ndcg']:.4f} | {r['score']:.4f} |" for r in val]
    st = load("test")
    runs = [st["runs"][s] for s in sorted(st.get("runs", {}))]
    if runs:
        def arr(model: str, key: str) -> np.ndarray:
            return np.array([r[model][key] for r in runs], dtype=float)

        lines += ["", f"Test ({len(runs)} seeds; {st['machine']}); pick {st['pick']}:", "",
                  "| seed | reference recall / NDCG | round two recall / NDCG | round three recall / NDCG | "
                  "paired diff. (round three - reference) |", "| --- | --- | --- | --- | --- |"]
        for s, r in zip(sorted(st["runs"]), runs, strict=True):
            lines.append(f"| {s} | {r['ref']['recall']:.4f} / {r['ref']['ndcg']:.4f} | {r['round2']['recall']:.4f} / "
                         f"{r['round2']['ndcg']:.4f} | {r['ials']['recall']:.4f} / {r['ials']['ndcg']:.4f} | "
                         f"{r['ials']['recall'] - r['ref']['recall']:+.4f} / {r['ials']['ndcg'] - r['ref']['ndcg']:+.4f} |")
        cells = []
        for m in ("ref", "round2", "ials"):
            cells.append(f"{arr(m, 'recall').mean():.4f} ± {arr(m, 'recall').std():.4f} / "
                         f"{arr(m, 'ndcg').mean():.4f} ± {arr(m, 'ndcg').std():.4f}")
        dr, dn = arr("ials", "recall") - arr("ref", "recall"), arr("ials", "ndcg") - arr("ref", "ndcg")
        lines.append(f"| mean ± std | {' | '.join(cells)} | {dr.mean():+.4f} ± {dr.std():.4f} / "
                     f"{dn.mean():+.4f} ± {dn.std():.4f} |")
        lines.append(f"\nFit CPU (s, round three): {arr('ials', 'fit_cpu_seconds').mean():.2f}")
        rt = load("reftest")
        if len(rt.get("runs", {})) == len(runs):
            lines += ["", "Reference with linear confidence (validation: " + ", ".join(
                f"{r['weighting']} alpha {r['alpha']:g} lambda {r.get('regularization', 10.0):g}: "
                f"{r['val_recall']:.4f} / {r['val_ndcg']:.4f}" for r in load("refcheck")["rows"])
                + f"); on test, {rt['params']}:", "",
                "| seed | reference (linear) recall / NDCG | round three recall / NDCG | paired diff. |",
                "| --- | --- | --- | --- |"]
            rr = np.array([rt["runs"][s]["recall"] for s in sorted(st["runs"])])
            rn = np.array([rt["runs"][s]["ndcg"] for s in sorted(st["runs"])])
            for i, s in enumerate(sorted(st["runs"])):
                lines.append(f"| {s} | {rr[i]:.4f} / {rn[i]:.4f} | {arr('ials', 'recall')[i]:.4f} / "
                             f"{arr('ials', 'ndcg')[i]:.4f} | {arr('ials', 'recall')[i] - rr[i]:+.4f} / "
                             f"{arr('ials', 'ndcg')[i] - rn[i]:+.4f} |")
            dr, dn = arr("ials", "recall") - rr, arr("ials", "ndcg") - rn
            lines.append(f"| mean ± std | {rr.mean():.4f} ± {rr.std():.4f} / {rn.mean():.4f} ± {rn.std():.4f} | "
                         f"{arr('ials', 'recall').mean():.4f} ± {arr('ials', 'recall').std():.4f} / "
                         f"{arr('ials', 'ndcg').mean():.4f} ± {arr('ials', 'ndcg').std():.4f} | "
                         f"{dr.mean():+.4f} ± {dr.std():.4f} / {dn.mean():+.4f} ± {dn.std():.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", default=["val", "test", "table"], choices=["val", "refcheck", "reftest", "test", "table"])
    parser.add_argument("--shard", default="0/1", help="val stage: i/n runs every n-th fit from the i-th")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    shard = tuple(int(x) for x in args.shard.split("/"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    for stage in args.stages:
        if stage == "val":
            stage_val(log, shard)
        elif stage == "refcheck":
            stage_refcheck(log)
        elif stage == "reftest":
            stage_reftest(log, args.seeds)
        elif stage == "test":
            stage_test(log, args.seeds)
        else:
            text = table()
            (RESULTS / "round3.table.md").write_text(text)
            print(text)


if __name__ == "__main__":
    main()
