"""The benchmarks' result files: the newest of a day is the one written last, in a fresh
checkout too (where every file has the checkout's time)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import ROOT


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from experiments import common

    return common


def test_a_result_records_when_it_was_written(common, tmp_path):
    path = common.write_result(tmp_path, "toy.test", {"rows": []})
    record = json.loads(path.read_text())
    assert record["name"] == "toy.test" and record["stamp"] == common.stamp()
    assert record["written"].startswith(common.stamp().split(".")[0])


def test_same_day_results_are_ordered_by_when_they_were_written_not_file_time(common, tmp_path):
    for commit, written in [("bbbbbbb", "2026-12-02T09:00:00+00:00"), ("aaaaaaa", "2026-12-02T08:00:00+00:00")]:
        (tmp_path / f"toy.test.2026-12-02.{commit}.json").write_text(
            json.dumps({"stamp": f"2026-12-02.{commit}", "written": written}))
    # A fresh checkout's file times say the opposite of the order they were written in.
    os.utime(tmp_path / "toy.test.2026-12-02.bbbbbbb.json", (1, 1))
    (tmp_path / "toy.test.2026-12-01.ccccccc.json").write_text(json.dumps({"stamp": "2026-12-01.ccccccc"}))
    names = [p.name for p in common.result_files(tmp_path, "toy.test")]
    assert names == ["toy.test.2026-12-01.ccccccc.json", "toy.test.2026-12-02.aaaaaaa.json",
                     "toy.test.2026-12-02.bbbbbbb.json"]
    assert common.latest_result(tmp_path, "toy.test")["stamp"] == "2026-12-02.bbbbbbb"


def test_the_benchmarks_train_as_a_user_through_one_function(common, tmp_path):
    """experiments/quality's and experiments/distributed's rows come from
    ``common.train_as_a_user`` and keep the fields they had when each held its own copy."""
    import numpy as np

    from experiments.distributed import torchrun
    from experiments.quality import benchmark

    log = tmp_path / "log.csv"
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 600), rng.integers(0, 30, 600)
    log.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users, items)))
    params = {"factors": 4, "epochs": 2}
    result, run = common.train_as_a_user(log, "als", params, seed=1, k=5)
    assert set(run) == {"model", "seed", "fitted_params", "fit_seconds", "job_seconds", "recall@5", "ndcg@5"}
    assert run["model"] == "als" and run["seed"] == 1
    assert run["recall@5"] == result.evaluation.metrics["recall@5"]
    assert run["job_seconds"] >= run["fit_seconds"] > 0

    row = benchmark.train_as_a_user(benchmark.Config("toy", log, None, (1,)), 1, "als", params)
    assert list(row) == ["what", "model", "seed", "fitted_params", "auto", "fit_seconds", "job_seconds",
                         "recall", "ndcg"]
    assert row["what"] == "als" and 0 <= row["recall"] <= 1
    spec = {"label": "als, 1 process", "model": "als", "params": params, "nproc": 1}
    row = torchrun.measure(spec, "toy", log, 1)
    assert list(row) == ["data", "label", "model", "nproc", "seed", "params", "train_entries", "fit_seconds",
                         "pairs_per_second", "recall@20", "ndcg@20"]
    assert row["pairs_per_second"] > 0
