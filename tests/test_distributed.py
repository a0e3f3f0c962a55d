"""Data-parallel training (recsys.distributed): two gloo processes on the CPU, on data with
a known answer (a checkerboard: users like the items of their own parity)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from cli_invoke import run as invoke
from cli_process import run
from conftest import SAMPLE

from recsys import distributed
from recsys.data.splits import split
from recsys.data.synthetic import checkerboard
from recsys.errors import ConfigError
from recsys.evaluation import evaluate
from recsys.models import Popular, create_model

# Small steps, so that an epoch is many steps and each rank's shard matters.
FITS = {
    "mf": {"factors": 8, "epochs": 25, "batch_size": 64, "negatives": 16, "learning_rate": 0.05, "device": "cpu"},
    "two-tower": {"factors": 8, "epochs": 8, "batch_size": 64, "hidden": 0, "learning_rate": 0.02, "device": "cpu"},
}


def _parts():
    return split(checkerboard(n_users=120, n_items=80, density=0.3, seed=1), "user", test_fraction=0.2, seed=0)


def _fit_all(out: str | None = None) -> dict:
    """Fit every model of :data:`FITS` (in whatever group this process is); ``out``: write
    the factors there (what rank 1 hands back to the test)."""
    train, _ = _parts()
    models = {name: create_model(name, **params).fit(train) for name, params in FITS.items()}
    if out is not None:
        np.savez(out, **{f"{name}.{side}": getattr(m, f"{side}_factors") for name, m in models.items()
                         for side in ("user", "item")})
    return models


def _refuse(message: str) -> None:
    raise ConfigError(message)


def test_nothing_changes_in_one_process():
    order = torch.randperm(10)
    indices, grad = torch.arange(4), torch.ones(4, 3)
    assert distributed.current() is None and distributed.is_main()
    assert distributed.shard(order) is order and distributed.shard_size(10) == 10
    assert distributed.gather_rows(indices, grad) == (indices, grad)
    assert distributed.agree(True, 15) == (True, 15)
    assert distributed.mean(torch.tensor(3.5)) == 3.5


def test_two_processes_train_identical_replicas_that_learn(tmp_path):
    rank1 = tmp_path / "rank1.npz"
    with distributed.group(2, "cpu", _fit_all, (str(rank1),)) as world:
        assert world is not None and world.size == 2 and world.backend == "gloo"
        models = _fit_all()
    theirs = np.load(rank1)
    for name, model in models.items():  # bit for bit: every rank applies the same averaged steps
        np.testing.assert_array_equal(model.user_factors, theirs[f"{name}.user"], err_msg=name)
        np.testing.assert_array_equal(model.item_factors, theirs[f"{name}.item"], err_msg=name)

    train, test = _parts()
    popular = evaluate(Popular().fit(train), test, ks=[10]).metrics["recall@10"]
    two = {name: evaluate(m, test, ks=[10]).metrics["recall@10"] for name, m in models.items()}
    assert min(two.values()) > popular + 0.1, (two, popular)  # near the parity ceiling of about 0.36
    # One process with the same effective batch (2 x 64 = 128) learns as well.
    one = create_model("mf", **{**FITS["mf"], "batch_size": 128}).fit(train)
    assert abs(evaluate(one, test, ks=[10]).metrics["recall@10"] - two["mf"]) < 0.05


def test_a_failure_on_another_rank_ends_the_job_with_its_message():
    start = time.monotonic()
    with pytest.raises(distributed.ProcessFailed, match="rank 1: the data on rank 1 is wrong"):  # noqa: SIM117
        with distributed.group(2, "cpu", _refuse, ("the data on rank 1 is wrong",)):
            distributed.mean(torch.ones(()))  # the collective rank 1 never joins
    assert time.monotonic() - start < 60  # no hang: the closed connection is noticed at once


def test_train_nproc_2_end_to_end_makes_a_normal_model(tmp_path):
    model_dir = tmp_path / "model"
    trained = run("train", "--data", SAMPLE / "ratings.csv", "--model", "mf", "--epochs", "3", "--nproc", "2",
                  "--output", model_dir, "--no-index", "--format", "json")
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)  # one report: rank 1 printed nothing
    assert report["processes"]["processes"] == 2 and report["metrics"]["recall@20"] > 0.2
    assert json.loads((model_dir / "run.json").read_text())["processes"]["backend"] == "gloo"
    evaluated = run("evaluate", "--model", model_dir, "--data", SAMPLE / "ratings.csv", "--format", "json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["recall@20"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "mf", "--nproc", "0"], "--nproc must be at least 1"),
    (["--model", "als", "--nproc", "2"], "use Spark"),
    (["--model", "popular", "--nproc", "2"], "does not train data-parallel"),
])
def test_nproc_is_refused_where_it_cannot_apply(tmp_path, args, message):
    result = invoke("train", "--data", SAMPLE / "ratings.csv", "--output", tmp_path / "m", *args, code=2)
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_nproc_is_refused_under_torchrun(tmp_path, monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    result = invoke("train", "--data", SAMPLE / "ratings.csv", "--model", "mf", "--nproc", "2", code=2)
    assert "drop --nproc" in result.output
