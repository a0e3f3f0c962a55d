"""Issue 6, round four: one lastfm-2k model for everything; ml-latest-small against a fairer reference.

Validation only (seed 0's training part split 80/20 per user, ``round2.seed0_validation``)
for every choice; the test parts of seeds 0-4 only for the table (README.md, "Round four").
Stages, each cached in ``results/round4.<stage>.json`` (a finished fit is never redone):

- ``lastfm-ref``: the reference (implicit's ALS at round one's tuned setting) fitted on the
  validation split: validation recall@20 / NDCG@20 and its fit CPU time (median of 5 fits).
- ``lastfm-val``: iALS between the 64- and 256-factor picks (``LASTFM_GRID``: 64, 96, 128
  factors, log confidence, alpha, alpha0, CG steps; lambda 0.01, nu 1), then lambda x0.7,
  x1.4 around the best three in time. Each setting is fitted right after a reference fit
  (timed: the load drifts), and scores validation after every epoch until its recall first
  reaches the reference's, then at ``LASTFM_CHECKPOINTS``; the CPU time of training up to
  each epoch (scoring excluded). Pick (``lastfm_pick``): among (setting, epochs) that
  reached the reference's validation recall within ``COMFORT`` x the reference's fit beside
  it, the largest min(recall / reference's, NDCG / reference's); ``pick_just_in_time`` is
  the same within 1.0 x, for contrast.
- ``lastfm-test``: both on seeds 0-4 on test, with the time-to-quality callback and the
  Annoy index, beside the reference refitted in the same process (same load; its scores
  match ``results/round2.test.json``).
- ``ml-ref``: implicit's ALS with linear confidence around round three's best (alpha 0.4,
  lambda 10): factors 128, 256, 512 x iterations 15, 30, 50 (one fit per factors), then
  alpha x {0.75, 1.25} and lambda x {0.5, 2} at the best factors, coordinate-wise until
  the best stops moving, then the same with alpha x {0.875, 1.125} and lambda x {0.75, 4/3}.
  Pick: largest min(recall / 0.2114, NDCG / 0.2238) (round three's rule).
- ``ml-val``: our iALS with linear confidence, coordinate-wise from round three's pick over
  ``ML_COORDS`` (two passes), then the eALS exponent beta (``unobserved_exponent``) at the
  best, alpha0 / lambda x0.5, x2 at beta -0.25 and 0.25, and again around the best beta.
  Every fit scored at epochs 8, 16, 24, 32. Pick: largest min(recall / R, NDCG / N) with
  R, N the *best reference's* validation scores.
- ``ml-test``: our pick and the best reference on seeds 0-4 on test (time to quality too).
- ``ml-annoy``: the same models refitted, top-20 through the Annoy index with its defaults.
- ``table``: ``results/round4.table.md``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python experiments/quality/round4.py --stages lastfm-ref lastfm-val lastfm-test \
            ml-ref ml-val ml-test ml-annoy table
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round2 import REF_VAL, RESULTS, both, read_result, seed0_validation, write_result
from run_quality import TimeToQuality, annoy_scores, scores, timed_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "baselines"))
from reference import DATA_DIR, ImplicitALS, load_dataset, machine_line

from recsys.data.splits import split
from recsys.models import create_model

# -- lastfm-2k -------------------------------------------------------------------------------
LASTFM_REF = {"factors": 32, "regularization": 30.0, "alpha": 10.0, "weighting": "binary", "iterations": 15}
"""The reference's tuned setting on lastfm-2k (round one)."""
LASTFM_GRID = [
    {"factors": f, "weighting": "log", "alpha": a, "unobserved_weight": a0, "regularization": 0.01,
     "regularization_exponent": 1.0, "cg_steps": c}
    for f, a, a0, c in itertools.product([64, 96, 128], [0.5, 0.75, 1.0], [0.2, 0.25, 0.3], [2, 3])
]
"""Between round two's 64-factor pick and round one's 256-factor pick (log, alpha 1, alpha0 0.3).
A first pass (``results/round4.lastfm-val-v1.json``: alpha 0.5, 1, 2 x alpha0 0.1, 0.2, 0.3 x
CG steps 1, 2, 3, timed against one median of reference fits) showed alpha 2, alpha0 0.1 and
one CG step never in time, and CPU times drifting with the load by up to 40%; hence this grid,
and a reference fit timed beside every setting."""
LASTFM_EPOCHS = 24
LASTFM_CHECKPOINTS = [4, 6, 8, 12, 16, 20, 24]
COMFORT = 0.7
"""Reaching the reference's validation recall counts when it takes at most 0.7 x its fit time."""

# -- ml-latest-small -------------------------------------------------------------------------
ML_BASE = {"factors": 256, "weighting": "linear", "alpha": 0.3, "regularization": 1.0, "unobserved_weight": 0.1,
           "regularization_exponent": 0.25}
"""Round three's pick (its 24 epochs aside)."""
ML_COORDS = {"unobserved_weight": [0.05, 0.1, 0.2, 0.3], "regularization": [0.5, 1.0, 2.0],
             "alpha": [0.2, 0.3, 0.5], "regularization_exponent": [0.0, 0.25, 0.5]}
NU_SCALE = 1000.0
"""Moving nu rescales lambda by 1000^(old - new nu), which keeps lambda (n + alpha0 N)^nu about
the same (alpha0 N is about 970 on ml-latest-small); the lambda coordinate then refines it."""
ML_BETAS = [-0.25, 0.25, 0.5, 1.0]
ML_BETA_RETUNE = [-0.25, 0.25]
"""At these betas, alpha0 and lambda x0.5, x2 (each from the best uniform setting)."""
ML_CHECKPOINTS = [8, 16, 24, 32]
ML_REF_BASE = {"factors": 256, "weighting": "linear", "alpha": 0.4, "regularization": 10.0}
"""Round three's best reference with linear confidence."""
ML_REF_FACTORS = [128, 256, 512]
ML_REF_ITERATIONS = [15, 30, 50]
ML_REF_STEPS = [((0.75, 1.25), (0.5, 2.0)), ((0.875, 1.125), (0.75, 4 / 3))]
"""Coarse, then fine steps (alpha, lambda) of the reference's coordinate search."""
ROUND1_REF_VAL = REF_VAL["ml-latest-small"]


def load(stage: str) -> dict[str, Any]:
    return read_result(f"round4.{stage}")


def save(stage: str, state: dict[str, Any]) -> None:
    write_result(f"round4.{stage}", state)


def key(params: dict[str, Any]) -> str:
    return json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in params.items()}, sort_keys=True)


class Curve:
    """Validation recall / NDCG after every epoch until recall first reaches ``target``, then at
    ``checkpoints``; training CPU seconds up to each scored epoch (the scoring excluded)."""

    def __init__(self, valid: Any, checkpoints: list[int], target: float | None) -> None:
        self.valid, self.checkpoints, self.target = valid, checkpoints, target
        self.found: dict[int, dict[str, float]] = {}
        self.reached: tuple[int, float] | None = None
        self.cpu0, self.outside = time.process_time(), 0.0

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        c0 = time.process_time()
        searching = self.target is not None and self.reached is None
        if searching or epoch in self.checkpoints:
            m = both(model, self.valid)
            self.found[epoch] = {**m, "cpu": c0 - self.cpu0 - self.outside}
            if searching and m["recall"] >= self.target:
                self.reached = (epoch, self.found[epoch]["cpu"])
        self.outside += time.process_time() - c0
        return False


def ratio(row: dict[str, Any], ref: tuple[float, float]) -> float:
    return min(row["val_recall"] / ref[0], row["val_ndcg"] / ref[1])


# -- lastfm-2k stages --------------------------------------------------------------------------
def stage_lastfm_ref(log: Any) -> dict[str, Any]:
    state = load("lastfm-ref")
    if state:
        return state
    fit_part, valid = seed0_validation("lastfm-2k")
    cpus = []
    for _ in range(5):
        ref = ImplicitALS(**LASTFM_REF, num_threads=1, random_state=0)
        cpus.append(timed_fit(ref, fit_part))
    m = scores(ref, valid)
    state = {"params": LASTFM_REF, "val_recall": m["recall"], "val_ndcg": m["ndcg"], "fit_cpu": cpus,
             "fit_cpu_median": statistics.median(cpus), "machine": machine_line(1)}
    save("lastfm-ref", state)
    log(f"lastfm reference on validation: {m['recall']:.4f}/{m['ndcg']:.4f}, fit CPU {cpus}")
    return state


def lastfm_rows(state: dict[str, Any], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setting, scored epoch), with whether and when it reached the reference."""
    out = []
    for fit in state.get("fits", {}).values():
        for epoch, m in fit["curve"].items():
            out.append({**fit["params"], "epochs": int(epoch), "val_recall": m["recall"], "val_ndcg": m["ndcg"],
                        "cpu": m["cpu"], "reached": fit["reached"], "ref_cpu": fit["ref_cpu"],
                        "in_time": bool(fit["reached"]) and fit["reached"][1] <= COMFORT * fit["ref_cpu"],
                        "score": ratio({"val_recall": m["recall"], "val_ndcg": m["ndcg"]},
                                       (ref["val_recall"], ref["val_ndcg"]))})
    return out


def lastfm_pick(state: dict[str, Any], ref: dict[str, Any], comfort: float = COMFORT) -> dict[str, Any] | None:
    """The best score among (setting, epochs) that reached the reference within ``comfort`` x its fit."""
    ok = [r for r in lastfm_rows(state, ref)
          if r["reached"] and r["reached"][1] <= comfort * r["ref_cpu"] and r["epochs"] >= r["reached"][0]]
    return max(ok, key=lambda r: (r["score"], -r["epochs"])) if ok else None


def fit_lastfm(params: dict[str, Any], fit_part: Any, valid: Any, ref: dict[str, Any]) -> dict[str, Any]:
    """One setting, with the reference's fit timed just before it (the load drifts)."""
    ref_cpu = timed_fit(ImplicitALS(**LASTFM_REF, num_threads=1, random_state=0), fit_part)
    curve = Curve(valid, LASTFM_CHECKPOINTS, ref["val_recall"])
    create_model("ials", **params, epochs=LASTFM_EPOCHS, device="cpu", random_state=0).fit(fit_part, callbacks=[curve])
    return {"params": params, "reached": curve.reached, "curve": curve.found, "ref_cpu": ref_cpu}


def stage_lastfm_val(log: Any) -> dict[str, Any]:
    ref = stage_lastfm_ref(log)
    fit_part, valid = seed0_validation("lastfm-2k")
    state = load("lastfm-val") or {"fits": {}, "machine": machine_line(1)}

    def run(params_list: list[dict[str, Any]], label: str) -> None:
        for n, params in enumerate(params_list, 1):
            if key(params) in state["fits"]:
                continue
            fit = fit_lastfm(params, fit_part, valid, ref)
            state["fits"][key(params)] = fit
            save("lastfm-val", state)
            best = max(fit["curve"].values(), key=lambda m: min(m["recall"] / ref["val_recall"], m["ndcg"] / ref["val_ndcg"]))
            log(f"lastfm {label} {n}/{len(params_list)} {params}: reached {fit['reached']} (reference {fit['ref_cpu']:.3f}) "
                f"best {best['recall']:.4f}/{best['ndcg']:.4f}")

    run(LASTFM_GRID, "grid")
    # lambda x0.7, x1.4 around the three best settings that reach in time
    tops: list[dict[str, Any]] = []
    for r in sorted(lastfm_rows(state, ref), key=lambda r: -r["score"]):
        params = {k: r[k] for k in LASTFM_GRID[0]}
        if r["in_time"] and r["epochs"] >= r["reached"][0] and params not in tops:
            tops.append(params)
        if len(tops) == 3:
            break
    run([{**p, "regularization": round(p["regularization"] * s, 6)} for p in tops for s in (0.7, 1.4)], "lambda")
    state["pick"] = lastfm_pick(state, ref)
    state["pick_just_in_time"] = lastfm_pick(state, ref, 1.0)  # for contrast: within the reference's fit at all
    save("lastfm-val", state)
    log(f"lastfm pick: {state['pick']}")
    return state


def reference_then_ours(ref_params: dict[str, Any], pick: dict[str, Any], train: Any, test: Any,
                        seed: int) -> tuple[dict[str, Any], Any]:
    """One seed: the reference fitted and timed, then our model with the time-to-quality callback
    (its target: this reference's test recall). Returns the scores and our fitted model."""
    ref = ImplicitALS(**ref_params, num_threads=1, random_state=seed)
    cpu = timed_fit(ref, train)
    out: dict[str, Any] = {"ref": {**scores(ref, test), "fit_seconds": ref.fit_seconds, "fit_cpu_seconds": cpu}}
    ials = create_model("ials", **{**pick, "device": "cpu", "random_state": seed})
    ttq = TimeToQuality(test, out["ref"]["recall"])
    ttq.start()
    cpu = timed_fit(ials, train, callbacks=[ttq])
    out["ials"] = {**scores(ials, test), "fit_seconds": ials.fit_seconds - ttq.outside_wall,
                   "fit_cpu_seconds": cpu - ttq.outside_cpu, "reached": ttq.reached, "curve": ttq.curve}
    return out, ials


def stage_lastfm_test(log: Any, seeds: list[int]) -> dict[str, Any]:
    """Both the pick (``pick``) and, for contrast, the best setting within 1.0 x (``pick_just_in_time``)."""
    val = load("lastfm-val")
    for label in ("pick", "pick_just_in_time"):
        lastfm_test_one(log, seeds, label, val[label])
    return load("lastfm-test")


def lastfm_test_one(log: Any, seeds: list[int], label: str, pick_row: dict[str, Any]) -> None:
    pick = {k: pick_row[k] for k in (*LASTFM_GRID[0], "epochs")}
    state = load("lastfm-test").get(label) or {"pick": pick, "val": pick_row, "machine": machine_line(1), "runs": {}}
    stored = json.loads((RESULTS / "round2.test.json").read_text())["lastfm-2k/64"]["runs"]
    data = load_dataset("lastfm-2k", DATA_DIR)
    for seed in seeds:
        if str(seed) in state["runs"]:
            continue
        train, test = split(data, "user", test_fraction=0.2, seed=seed)
        out, ials = reference_then_ours(LASTFM_REF, pick, train, test, seed)
        out["ref"]["round2_fit_cpu_seconds"] = stored[str(seed)]["ref"]["fit_cpu_seconds"]
        if abs(out["ref"]["recall"] - stored[str(seed)]["ref"]["recall"]) > 1e-9:
            log(f"  note: seed {seed} reference recall {out['ref']['recall']} differs from round two's")
        out["ials_annoy"] = annoy_scores(ials, test, seed)
        state["runs"][str(seed)] = out
        save("lastfm-test", {**load("lastfm-test"), label: state})
        log(f"lastfm {label} seed {seed}: ours {out['ials']['recall']:.4f}/{out['ials']['ndcg']:.4f} ref "
            f"{out['ref']['recall']:.4f}/{out['ref']['ndcg']:.4f} reached {out['ials']['reached']} ref fit "
            f"{out['ref']['fit_seconds']:.2f}/{out['ref']['fit_cpu_seconds']:.2f}")


# -- ml-latest-small stages --------------------------------------------------------------------
def fit_ref_ml(params: dict[str, Any], fit_part: Any, valid: Any) -> list[dict[str, Any]]:
    found: dict[int, dict[str, float]] = {}

    def callback(model: Any, iteration: int) -> None:
        if iteration in ML_REF_ITERATIONS:
            found[iteration] = scores(model, valid)

    ImplicitALS(**params, iterations=max(ML_REF_ITERATIONS), num_threads=1, random_state=0).fit(
        fit_part, callback=callback)
    return [{**params, "iterations": it, "val_recall": m["recall"], "val_ndcg": m["ndcg"]} for it, m in found.items()]


def ml_ref_best(state: dict[str, Any]) -> dict[str, Any]:
    rows = [r for rows in state["fits"].values() for r in rows]
    return max(rows, key=lambda r: ratio(r, ROUND1_REF_VAL))


def stage_ml_ref(log: Any) -> dict[str, Any]:
    fit_part, valid = seed0_validation("ml-latest-small")
    state = load("ml-ref") or {"fits": {}, "machine": machine_line(1)}

    def run(params: dict[str, Any]) -> None:
        if key(params) in state["fits"]:
            return
        t0 = time.process_time()
        rows = fit_ref_ml(params, fit_part, valid)
        state["fits"][key(params)] = rows
        save("ml-ref", state)
        log(f"reference {params} ({time.process_time() - t0:.1f} s): "
            + " ".join(f"{r['iterations']}:{r['val_recall']:.4f}/{r['val_ndcg']:.4f}" for r in rows))

    for f in ML_REF_FACTORS:
        run({**ML_REF_BASE, "factors": f})
    for alpha_steps, lambda_steps in ML_REF_STEPS:  # coordinate-wise around the best, until it stops moving
        for _ in range(3):
            before = key({k: v for k, v in ml_ref_best(state).items() if k in ML_REF_BASE})
            for name, steps in (("alpha", alpha_steps), ("regularization", lambda_steps)):
                base = {k: v for k, v in ml_ref_best(state).items() if k in ML_REF_BASE}
                for s in steps:
                    run({**base, name: round(base[name] * s, 6)})
            if key({k: v for k, v in ml_ref_best(state).items() if k in ML_REF_BASE}) == before:
                break
    state["best"] = ml_ref_best(state)
    save("ml-ref", state)
    log(f"reference best: {state['best']}")
    return state


def ml_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for fit in state.get("fits", {}).values() for r in fit]


def ml_best(state: dict[str, Any], ref: tuple[float, float], beta: bool = True) -> dict[str, Any]:
    rows = [r for r in ml_rows(state) if beta or not r.get("unobserved_exponent")]
    return max(rows, key=lambda r: ratio(r, ref))


def stage_ml_val(log: Any) -> dict[str, Any]:
    ref_best = load("ml-ref")["best"]
    ref = (ref_best["val_recall"], ref_best["val_ndcg"])
    fit_part, valid = seed0_validation("ml-latest-small")
    state = load("ml-val") or {"fits": {}, "machine": machine_line(1)}
    state["ref"] = ref_best
    names = (*ML_BASE, "unobserved_exponent")

    def run(params: dict[str, Any]) -> None:
        if key(params) in state["fits"]:
            return
        curve = Curve(valid, ML_CHECKPOINTS, None)
        create_model("ials", **params, epochs=max(ML_CHECKPOINTS), device="cpu", random_state=0).fit(
            fit_part, callbacks=[curve])
        rows = [{**params, "epochs": e, "val_recall": m["recall"], "val_ndcg": m["ndcg"], "cpu": m["cpu"]}
                for e, m in curve.found.items()]
        state["fits"][key(params)] = rows
        save("ml-val", state)
        top = ml_best(state, ref)
        log(f"ml {params}: " + " ".join(f"{r['epochs']}:{r['val_recall']:.4f}/{r['val_ndcg']:.4f}" for r in rows)
            + f" | best {ratio(top, ref):.4f} {top['val_recall']:.4f}/{top['val_ndcg']:.4f}")

    def current(beta: bool) -> dict[str, Any]:
        best = ml_best(state, ref, beta) if state["fits"] else ML_BASE
        return {k: best[k] for k in names if k in best}

    def coordinate(name: str, values: list[float], beta: bool, base: dict[str, Any] | None = None) -> None:
        base = base or current(beta)
        for v in values:
            params = {**base, name: v}
            if name == "regularization_exponent":  # keep lambda (n + alpha0 N)^nu about the same
                params["regularization"] = round(base["regularization"] * NU_SCALE ** (base[name] - v), 6)
            run(params)

    run(dict(ML_BASE))
    for _ in range(2):  # two passes over the coordinates, linear confidence, beta 0
        for name, values in ML_COORDS.items():
            coordinate(name, values, beta=False)
    linear = current(beta=False)
    for b in ML_BETAS:  # the eALS exponent at the best uniform-weight setting
        run({**linear, "unobserved_exponent": b})
    for b in ML_BETA_RETUNE:  # eALS moves weight between items: give alpha0 and lambda another chance
        for name in ("unobserved_weight", "regularization"):
            coordinate(name, [round(linear[name] * s, 6) for s in (0.5, 2.0)], beta=True, base={**linear, "unobserved_exponent": b})
    if current(beta=True).get("unobserved_exponent"):
        for name in ("unobserved_weight", "regularization"):
            base = current(beta=True)
            coordinate(name, [round(base[name] * s, 6) for s in (0.5, 2.0)], beta=True)
    state["best_linear"] = ml_best(state, ref, beta=False)
    state["pick"] = ml_best(state, ref)
    save("ml-val", state)
    log(f"ml pick: {state['pick']} (uniform weights: {state['best_linear']})")
    return state


def stage_ml_test(log: Any, seeds: list[int]) -> dict[str, Any]:
    val = load("ml-val")
    pick = {k: val["pick"][k] for k in (*ML_BASE, "unobserved_exponent", "epochs") if k in val["pick"]}
    ref_params = {k: load("ml-ref")["best"][k] for k in (*ML_REF_BASE, "iterations")}
    state = load("ml-test") or {"pick": pick, "ref_params": ref_params, "machine": machine_line(1), "runs": {}}
    data = load_dataset("ml-latest-small", DATA_DIR)
    r3 = json.loads((RESULTS / "round3.test.json").read_text())["runs"]
    r3ref = json.loads((RESULTS / "round3.reftest.json").read_text())["runs"]
    for seed in seeds:
        if str(seed) in state["runs"]:
            continue
        train, test = split(data, "user", test_fraction=0.2, seed=seed)
        out, _ = reference_then_ours(ref_params, pick, train, test, seed)
        out.update(round3=r3[str(seed)]["ials"], round3_ref=r3ref[str(seed)], round1_ref=r3[str(seed)]["ref"])
        state["runs"][str(seed)] = out
        save("ml-test", state)
        log(f"ml seed {seed}: ours {out['ials']['recall']:.4f}/{out['ials']['ndcg']:.4f} ref "
            f"{out['ref']['recall']:.4f}/{out['ref']['ndcg']:.4f} reached {out['ials']['reached']} ref fit "
            f"{out['ref']['fit_cpu_seconds']:.2f}")
    return state


def stage_ml_annoy(log: Any) -> dict[str, Any]:
    """The test runs' Annoy measurement for ml-latest-small: each seed's model refitted (deterministic)."""
    state = load("ml-test")
    data = load_dataset("ml-latest-small", DATA_DIR)
    for seed, out in state["runs"].items():
        if "ials_annoy" in out:
            continue
        train, test = split(data, "user", test_fraction=0.2, seed=int(seed))
        ials = create_model("ials", **{**state["pick"], "device": "cpu", "random_state": int(seed)}).fit(train)
        exact = scores(ials, test)
        out["ials_annoy"] = {**annoy_scores(ials, test, int(seed)), "exact_refit": exact}
        save("ml-test", state)
        log(f"ml seed {seed}: exact {exact['recall']:.4f} (first fit {out['ials']['recall']:.4f}), annoy "
            f"{out['ials_annoy']['recall']:.4f} overlap {out['ials_annoy']['overlap']:.3f}")
    return state


# -- the table ---------------------------------------------------------------------------------
def mean_std(values: Any) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4f} ± {a.std():.4f}"


def diff(values: Any) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():+.4f} ± {a.std():.4f}"


def short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def lastfm_test_table(label: str, st: dict[str, Any]) -> list[str]:
    runs = [st["runs"][s] for s in sorted(st["runs"])]
    if not runs:
        return []
    lines = [f"## lastfm-2k, test, {label} ({len(runs)} seeds; {st['machine']})", "", f"Setting: {short(st['pick'])}", "",
              "| seed | reference recall / NDCG | ours recall / NDCG | paired diff. | reaches the reference (epoch: wall / CPU s) "
              "| reference fit wall / CPU s (round two's CPU) | our full fit CPU s | Annoy recall vs exact (overlap) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s, r in zip(sorted(st["runs"]), runs, strict=True):
        x = r["ials"]["reached"]
        lines.append(f"| {s} | {paired_cells(r)} | " + ("no" if x is None else f"{x[0]}: {x[1]:.3f} / {x[2]:.3f}")
                     + f" | {r['ref']['fit_seconds']:.3f} / {r['ref']['fit_cpu_seconds']:.3f} "
                       f"({r['ref']['round2_fit_cpu_seconds']:.3f}) | {r['ials']['fit_cpu_seconds']:.2f} | {annoy_cell(r)} |")
    g = {m: {k: [r[m][k] for r in runs] for k in ("recall", "ndcg")} for m in ("ref", "ials")}
    lines.append(f"| mean ± std | {mean_std(g['ref']['recall'])} / {mean_std(g['ref']['ndcg'])} | "
                 f"{mean_std(g['ials']['recall'])} / {mean_std(g['ials']['ndcg'])} | "
                 f"{diff(np.subtract(g['ials']['recall'], g['ref']['recall']))} / "
                 f"{diff(np.subtract(g['ials']['ndcg'], g['ref']['ndcg']))} | | | | |")
    return [*lines, ""]


def paired_cells(run: dict[str, Any]) -> str:
    """One seed's reference and our recall / NDCG, and their differences (three table cells)."""
    ref, ours = run["ref"], run["ials"]
    return (f"{ref['recall']:.4f} / {ref['ndcg']:.4f} | {ours['recall']:.4f} / {ours['ndcg']:.4f} | "
            f"{ours['recall'] - ref['recall']:+.4f} / {ours['ndcg'] - ref['ndcg']:+.4f}")


def annoy_cell(run: dict[str, Any]) -> str:
    a = run.get("ials_annoy")
    return "" if a is None else f"{100 * (a['recall'] / run['ials']['recall'] - 1):+.2f}% ({a['overlap']:.3f})"


def table() -> str:
    lines: list[str] = []
    ref = load("lastfm-ref")
    val = load("lastfm-val")
    if ref and val:
        lines += [f"## lastfm-2k, validation ({val['machine']})", "",
                  f"Reference {short(ref['params'])}: validation {ref['val_recall']:.4f} / {ref['val_ndcg']:.4f}, "
                  f"fit CPU median {ref['fit_cpu_median']:.3f} s (5 fits: "
                  + ", ".join(f"{c:.3f}" for c in ref["fit_cpu"]) + f"); in time: reached within {COMFORT} x the reference's "
                  "fit timed just before the setting", "",
                  "Best scored epoch of each setting (score = min of the two ratios to the reference), best first:", "",
                  "| factors | alpha | alpha0 | lambda | CG steps | reaches (epoch: CPU s / reference's) | best epochs | val recall@20 | val NDCG@20 | score |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        best_per: dict[str, dict[str, Any]] = {}
        for r in lastfm_rows(val, ref):
            k = key({n: r[n] for n in LASTFM_GRID[0]})
            if (not r["reached"] or r["epochs"] >= r["reached"][0]) and (k not in best_per or r["score"] > best_per[k]["score"]):
                best_per[k] = r
        for r in sorted(best_per.values(), key=lambda r: -r["score"]):
            reach = "no" if not r["reached"] else f"{r['reached'][0]}: {r['reached'][1]:.3f} / {r['ref_cpu']:.3f}" + (
                "" if r["in_time"] else " (late)")
            lines.append(f"| {r['factors']} | {r['alpha']:g} | {r['unobserved_weight']:g} | {r['regularization']:g} | "
                         f"{r['cg_steps']} | {reach} | {r['epochs']} | {r['val_recall']:.4f} | {r['val_ndcg']:.4f} | "
                         f"{r['score']:.4f} |")
        if val.get("pick"):
            p = val["pick"]
            lines += ["", f"Pick: {short({k: p[k] for k in (*LASTFM_GRID[0], 'epochs')})}: validation "
                      f"{p['val_recall']:.4f} / {p['val_ndcg']:.4f} (score {p['score']:.4f}), reaches the reference's "
                      f"validation recall at epoch {p['reached'][0]}, {p['reached'][1]:.3f} s CPU (the reference's fit "
                      f"beside it: {p['ref_cpu']:.3f} s)", ""]
    for label, st in load("lastfm-test").items():
        lines += lastfm_test_table(label, st)

    mref = load("ml-ref")
    if mref:
        rows = sorted((r for rows in mref["fits"].values() for r in rows), key=lambda r: -ratio(r, ROUND1_REF_VAL))
        lines += [f"## ml-latest-small, reference grid, validation ({mref['machine']})", "",
                  "| factors | alpha | lambda | iterations | val recall@20 | val NDCG@20 | score vs round one's reference |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['factors']} | {r['alpha']:g} | {r['regularization']:g} | {r['iterations']} | {r['val_recall']:.4f} | "
                  f"{r['val_ndcg']:.4f} | {ratio(r, ROUND1_REF_VAL):.4f} |" for r in rows]
        lines.append("")
    mval = load("ml-val")
    if mval.get("fits"):
        ref = (mval["ref"]["val_recall"], mval["ref"]["val_ndcg"])
        rows = sorted(ml_rows(mval), key=lambda r: -ratio(r, ref))
        lines += [f"## ml-latest-small, our iALS (linear confidence), validation ({mval['machine']}); score against "
                  f"the best reference ({ref[0]:.4f} / {ref[1]:.4f})", "",
                  "| alpha | lambda | alpha0 | nu | beta | epochs | val recall@20 | val NDCG@20 | score |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['alpha']:g} | {r['regularization']:g} | {r['unobserved_weight']:g} | "
                  f"{r['regularization_exponent']:g} | {r.get('unobserved_exponent', 0):g} | {r['epochs']} | "
                  f"{r['val_recall']:.4f} | {r['val_ndcg']:.4f} | {ratio(r, ref):.4f} |" for r in rows]
        lines.append("")
    mt = load("ml-test")
    runs = [mt["runs"][s] for s in sorted(mt.get("runs", {}))]
    if runs:
        lines += [f"## ml-latest-small, test ({len(runs)} seeds; {mt['machine']})", "",
                  f"Ours: {short(mt['pick'])}; reference: {short(mt['ref_params'])}", "",
                  "| seed | reference (round four) recall / NDCG | ours recall / NDCG | paired diff. | round three's pick | "
                  "round three's linear reference | reaches the reference (epoch: wall / CPU s) | reference fit CPU s | our fit CPU s "
                  "| Annoy recall vs exact (overlap) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s, r in zip(sorted(mt["runs"]), runs, strict=True):
            x = r["ials"]["reached"]
            lines.append(f"| {s} | {paired_cells(r)} | {r['round3']['recall']:.4f} / "
                         f"{r['round3']['ndcg']:.4f} | {r['round3_ref']['recall']:.4f} / {r['round3_ref']['ndcg']:.4f} | "
                         + ("no" if x is None else f"{x[0]}: {x[1]:.2f} / {x[2]:.2f}")
                         + f" | {r['ref']['fit_cpu_seconds']:.2f} | {r['ials']['fit_cpu_seconds']:.2f} | " + annoy_cell(r) + " |")
        g = {m: {k: [r[m][k] for r in runs] for k in ("recall", "ndcg")} for m in ("ref", "ials", "round3", "round3_ref")}
        lines.append(f"| mean ± std | {mean_std(g['ref']['recall'])} / {mean_std(g['ref']['ndcg'])} | "
                     f"{mean_std(g['ials']['recall'])} / {mean_std(g['ials']['ndcg'])} | "
                     f"{diff(np.subtract(g['ials']['recall'], g['ref']['recall']))} / "
                     f"{diff(np.subtract(g['ials']['ndcg'], g['ref']['ndcg']))} | "
                     f"{mean_std(g['round3']['recall'])} / {mean_std(g['round3']['ndcg'])} | "
                     f"{mean_std(g['round3_ref']['recall'])} / {mean_std(g['round3_ref']['ndcg'])} | | | | |")
        lines += ["", "Paired differences (mean ± std over seeds), recall / NDCG:", ""]
        for a, b in (("ials", "ref"), ("ials", "round3_ref"), ("round3", "ref"), ("ials", "round3")):
            lines.append(f"- {a} - {b}: {diff(np.subtract(g[a]['recall'], g[b]['recall']))} / "
                         f"{diff(np.subtract(g[a]['ndcg'], g[b]['ndcg']))}")
    return "\n".join(lines) + "\n"


STAGES = {"lastfm-ref": stage_lastfm_ref, "lastfm-val": stage_lastfm_val, "ml-ref": stage_ml_ref, "ml-val": stage_ml_val,
          "ml-annoy": stage_ml_annoy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+",
                        default=["lastfm-val", "lastfm-test", "ml-ref", "ml-val", "ml-test", "ml-annoy", "table"],
                        choices=[*STAGES, "lastfm-test", "ml-test", "table"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, flush=True)

    for stage in args.stages:
        if stage == "lastfm-test":
            stage_lastfm_test(log, args.seeds)
        elif stage == "ml-test":
            stage_ml_test(log, args.seeds)
        elif stage == "table":
            text = table()
            (RESULTS / "round4.table.md").write_text(text)
            print(text)
        else:
            STAGES[stage](log)


if __name__ == "__main__":
    main()
