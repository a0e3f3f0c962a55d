"""How training uses the CPU: the threads it chooses, OpenMP's waiting, and the lazy Adam
and loss shortcuts that keep an mf step to a few operations (each checked against the
plain formulation it replaces)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from recsys import device
from recsys.data.synthetic import checkerboard
from recsys.errors import ConfigError
from recsys.models import create_model
from recsys.models.row_adam import RowAdam


@pytest.fixture
def no_thread_choice(monkeypatch):
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    monkeypatch.setattr(device, "_threads", None)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_steps_run_on_one_thread_large_ones_on_the_budget(no_thread_choice, monkeypatch):
    monkeypatch.setattr(device, "cpu_budget", lambda: 4)
    assert device.step_threads(1024 * 64) == 1  # MSE's batch x factors
    assert device.step_threads(1024 * 64 * 256) == 4  # BPR's batch x factors x negatives
    assert device.step_threads(math.inf) == 4


def test_the_users_thread_count_wins_everywhere(no_thread_choice, monkeypatch):
    device.set_threads(3)
    assert device.cpu_budget() == 3 and device.step_threads(1) == 3 and torch.get_num_threads() == 3
    device.set_threads(None)
    monkeypatch.setenv(device.THREADS_ENV, "2")
    assert device.cpu_budget() == 2 and device.step_threads(1) == 2
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(device.THREADS_ENV, bad)
        with pytest.raises(ConfigError, match="RECSYS_THREADS"):
            device.cpu_budget()
    with pytest.raises(ConfigError, match="at least 1"):
        device.set_threads(0)


class Clock:
    """Wall and CPU time the test sets: ``tick(wall, used)`` advances wall time by ``wall``
    seconds and CPU time by ``used`` of what the current threads could have used."""

    def __init__(self, governor):
        self.governor, self.wall, self.cpu = governor, 0.0, 0.0

    def tick(self, wall, used):
        self.cpu += wall * used * self.governor.current
        self.wall += wall
        self.governor.pace()
        return self.governor.current


@pytest.fixture
def clock(monkeypatch):
    def make(threads, adaptive=True):
        governor = device.ThreadGovernor(threads, adaptive=adaptive)
        timer = Clock(governor)
        monkeypatch.setattr(device.time, "perf_counter", lambda: timer.wall)
        monkeypatch.setattr(device.time, "process_time", lambda: timer.cpu)
        return governor, timer
    return make


def test_a_busy_machine_gets_one_thread_and_a_quiet_one_every_thread_back(no_thread_choice, clock):
    torch.set_num_threads(3)
    governor, timer = clock(2)
    window = governor.WINDOW
    with governor:
        assert torch.get_num_threads() == 2
        assert timer.tick(window / 2, 0.2) == 2  # mid-window: nothing decided
        assert timer.tick(window / 2, 0.2) == 1  # two threads used a fifth of their time
        assert torch.get_num_threads() == 1
        assert timer.tick(window, 0.4) == 1  # one thread, still busy: stays
        assert timer.tick(window, 1.0) == 2  # one thread had a whole CPU: both are tried
        assert timer.tick(window, 0.8) == 2  # and they hold up
        assert timer.tick(window, 0.3) == 1
        # A failed try waits twice as long before the next: 1, then 2, then 4 quiet windows.
        assert timer.tick(window, 1.0) == 2
        assert timer.tick(window, 0.3) == 1
        assert [timer.tick(window, 1.0) for _ in range(2)] == [1, 2]
        assert timer.tick(window, 0.3) == 1
        assert [timer.tick(window, 1.0) for _ in range(4)] == [1, 1, 1, 2]
        assert timer.tick(window, 0.3) == 1
    assert torch.get_num_threads() == 3  # restored after the block


def test_the_governor_keeps_a_fixed_count_where_told(no_thread_choice, clock):
    torch.set_num_threads(3)
    for threads, adaptive in ((2, False), (1, True)):
        governor, timer = clock(threads, adaptive)
        with governor:
            assert [timer.tick(governor.WINDOW, 0.1) for _ in range(3)] == [threads] * 3
        assert torch.get_num_threads() == 3


def test_the_governor_counts_across_epochs(no_thread_choice, clock):
    """An epoch ending on one thread starts the next on one: the machine is still busy."""
    governor, timer = clock(2)
    with governor:
        timer.tick(governor.WINDOW, 0.1)
    with governor:
        assert torch.get_num_threads() == 1
        device.pace()  # the module's hook reaches the active governor
        assert timer.tick(governor.WINDOW, 1.0) == 2
    device.pace()  # no governor active: nothing happens


def test_the_training_loop_runs_small_steps_on_one_thread(no_thread_choice, monkeypatch):
    seen = []
    monkeypatch.setattr(device, "cpu_budget", lambda: 2)
    monkeypatch.setattr("recsys.models.mf.MFTrainer.train_epoch", lambda self, epoch: seen.append(torch.get_num_threads()) or {"loss": 1.0})
    data = checkerboard(n_users=20, n_items=20, seed=0)
    create_model("mf", factors=8, epochs=1, batch_size=64, negatives=16, device="cpu").fit(data)
    create_model("mf", factors=64, epochs=1, batch_size=1024, negatives=256, device="cpu").fit(data)
    assert seen == [1, 2]


def test_validation_and_callbacks_keep_every_thread_around_one_thread_steps(no_thread_choice, monkeypatch):
    """The one-thread rule for small steps holds around train_epoch alone: validation's
    full-catalogue scoring and the epoch callbacks run on all the threads."""
    from recsys.evaluation.validation import Validation

    steps, scoring, callbacks = [], [], []
    monkeypatch.setattr(device, "cpu_budget", lambda: 2)
    monkeypatch.setattr("recsys.models.mf.MFTrainer.train_epoch", lambda self, epoch: steps.append(torch.get_num_threads()) or {"loss": 1.0})
    monkeypatch.setattr(Validation, "score", lambda self, model: scoring.append(torch.get_num_threads()) or 0.5)

    class Threads:
        def on_epoch_end(self, model, epoch, figures):
            callbacks.append(torch.get_num_threads())
            return False

    torch.set_num_threads(2)
    data = checkerboard(n_users=20, n_items=20, seed=0)
    model = create_model("mf", factors=8, epochs=3, batch_size=64, negatives=16, device="cpu")
    model.fit(data, validation=Validation(data, "recall@5"), callbacks=[Threads()])
    assert steps == [1, 1, 1]  # a small step: one thread
    assert scoring == [2, 2, 2] and callbacks == [2, 2, 2]
    assert torch.get_num_threads() == 2


def test_importing_recsys_makes_openmp_spin_briefly_unless_the_user_chose():
    code = "import os, recsys; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split()
    assert out == [str(device.OPENMP_SPINS), "None"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split() == ["None", "ACTIVE"]
    env.pop("OMP_WAIT_POLICY")
    env["GOMP_SPINCOUNT"] = "5"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split() == ["5", "None"]


def test_row_adam_takes_the_steps_sparse_adam_takes():
    """Same table, same batches with repeated rows: the same weights after every step."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(100, 5, generator=gen)
    table = start.clone()
    ours = RowAdam(table, lr=0.05)
    theirs = torch.nn.Embedding(100, 5, sparse=True, _weight=start.clone())
    reference = torch.optim.SparseAdam(theirs.parameters(), lr=0.05)
    touched = torch.zeros(100, dtype=torch.bool)
    for _ in range(6):
        idx = torch.randint(60, (40,), generator=gen)  # repeats within the batch; rows 60+ never
        touched[idx] = True
        target = torch.randn(40, 5, generator=gen)
        rows = ours.gather(idx)
        ((rows - target) ** 2).sum().backward()
        ours.step(idx, rows)
        reference.zero_grad()
        ((theirs(idx) - target) ** 2).sum().backward()
        reference.step()
        torch.testing.assert_close(table, theirs.weight.detach(), rtol=1e-5, atol=1e-6)
    assert ours.steps == 6
    # Lazy: rows no batch touched keep their weights and zero moments.
    assert torch.equal(table[~touched], start[~touched]) and not ours.exp_avg[~touched].any()


def test_row_adam_state_round_trips():
    table = torch.randn(6, 3)
    opt = RowAdam(table, lr=0.1)
    idx = torch.tensor([0, 2, 2])
    rows = opt.gather(idx)
    rows.sum().backward()
    opt.step(idx, rows)
    again = RowAdam(table.clone(), lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert again.steps == 1 and torch.equal(again.exp_avg_sq, opt.exp_avg_sq)
    with pytest.raises(ConfigError):
        RowAdam(torch.zeros(5, 3), lr=0.1).load_state_dict(opt.state_dict())


def test_bpr_counts_accidental_hits_out_as_masking_them_would():
    """A negative that is the batch's positive: same loss and same update as masking it; the
    gradient a step derives by hand is autograd's."""
    data = checkerboard(n_users=12, n_items=8, seed=1)
    model = create_model("mf", factors=4, negatives=8, batch_size=16, device="cpu")
    trainer = model.create_trainer(data, model.get_params())
    users, items = trainer.rows[:16], trainer.cols[:16]
    negatives = torch.cat([items[:3], torch.tensor([0, 1, 2, 3, 4])])  # three certain hits
    indices = torch.cat([users, items + trainer.n_users, negatives + trainer.n_users])
    rows = trainer.opt.gather(indices)
    loss = trainer.batch_loss(rows, items, negatives, None)
    loss.backward()

    masked_rows = trainer.table[indices].requires_grad_()
    p, q, qn = masked_rows[:16], masked_rows[16:32], masked_rows[32:]
    hit = negatives[None, :] == items[:, None]
    pairs = F.logsigmoid((p * q).sum(1)[:, None] - p @ qn.T).masked_fill(hit, 0.0)
    reg = (p.pow(2).sum(1) + q.pow(2).sum(1)).mean() + qn.pow(2).sum() / 16
    masked = -pairs.sum() / (~hit).sum() + trainer.reg * reg
    masked.backward()
    torch.testing.assert_close(loss, masked)

    def summed(grad: torch.Tensor) -> torch.Tensor:  # what the update applies, per table row
        return torch.zeros_like(trainer.table).index_add_(0, indices, grad)

    torch.testing.assert_close(summed(rows.grad), summed(masked_rows.grad), rtol=1e-4, atol=1e-6)

    # What a step uses: the same loss and gradient, derived by hand.
    by_hand, grad = trainer.bpr_loss_and_gradient(trainer.table[indices], items, negatives)
    torch.testing.assert_close(by_hand, loss.detach())
    torch.testing.assert_close(grad, rows.grad, rtol=1e-5, atol=1e-7)


def test_the_threads_option_reaches_training(tmp_path, monkeypatch, no_thread_choice):
    from cli_invoke import run

    from recsys.data.io import write_interactions
    from recsys.data.synthetic import checkerboard as board

    seen = []
    real = device.ThreadGovernor
    monkeypatch.setattr("recsys.models.training.ThreadGovernor",
                        lambda n, adaptive: seen.append((n, adaptive)) or real(n, adaptive=adaptive))
    write_interactions(board(n_users=20, n_items=20, seed=0), tmp_path / "log.csv")
    run("--threads", 1, "train", "--data", tmp_path / "log.csv", "--model", "ials", "-p", "factors=4",
        "--epochs", 1, "--output", tmp_path / "m", "--no-track", "--quiet")
    assert seen == [(1, False)] and device.cpu_budget() == 1  # the user's count, kept
    run("--threads", 0, "train", "--data", tmp_path / "log.csv", code=2)
