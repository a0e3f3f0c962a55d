"""Crash safety: a real `recsys` process SIGKILLed at any point leaves the previous artifact or none.

The kill points inside the writers are reached through ``$RECSYS_CRASH_AT`` (see
:func:`recsys.artifacts.crash_point`): the process SIGKILLs itself there, as an
out-of-memory kill would. One more kill comes from outside, mid-training.

To cover another command, add one line to ``JOBS``: a name, how its artifact is written
(``dir`` or ``file``) and its argument list for a given output path and seed (and, for a
job that writes into a model directory, the name it writes there).
"""

from __future__ import annotations

import hashlib
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import run, start, wait_for
from recsys_cli.main import app
from typer.testing import CliRunner

from recsys.artifacts import output_lock
from recsys.checkpoint import load_checkpoint
from recsys.data.io import write_interactions
from recsys.data.synthetic import checkerboard
from recsys.errors import RecsysError
from recsys.models.base import Recommender

runner = CliRunner()


@dataclass
class Inputs:
    data: Path
    test: Path
    model: Path


@dataclass
class Job:
    kind: str  # "dir" or "file": which atomic writer makes the artifact
    args: Callable[[Inputs, Path, int], list]
    artifact: str = "artifact"  # the name the job writes in its output folder


def _model_copy(i: Inputs, out: Path) -> Path:
    """A copy of the input model in ``out``'s folder, for jobs that write into a model directory."""
    if not (out.parent / "model.json").exists():
        shutil.copytree(i.model, out.parent, dirs_exist_ok=True)
    return out.parent


JOBS = {
    "train": Job("dir", lambda i, out, seed: [
        "train", "--data", i.data, "--model", "mf", "--epochs", "2", "--factors", "4", "-p", "negatives=4",
        "--device", "cpu", "--split", "none", "--no-index", "--seed", seed, "--output", out, "--quiet"]),
    "split": Job("dir", lambda i, out, seed: ["split", "--data", i.data, "--out-dir", out, "--seed", seed]),
    "evaluate --per-user": Job("file", lambda i, out, seed: [
        "evaluate", "--model", i.model, "--data", i.test, "--per-user", out, "--k", 5 + seed, "--quiet"]),
    "recommend": Job("file", lambda i, out, seed: ["recommend", "--model", i.model, "--out", out, "--k", 2 + seed]),
    "index": Job("dir", lambda i, out, seed: ["index", "--model", _model_copy(i, out), "--trees", 2 + seed,
                                              "--quiet"], artifact="index"),
}
POINTS = {"dir": "atomic_directory.before_replace", "file": "atomic_file.before_replace"}
# Every job at its writer's last step; the two-rename fallback once (it is the same writer).
CASES = [(job, POINTS[spec.kind]) for job, spec in JOBS.items()] + [("train", "atomic_directory.after_aside")]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    write_interactions(checkerboard(), root / "data.csv")
    invoke("split", "--data", root / "data.csv", "--out-dir", root / "split")
    invoke("train", "--data", root / "split" / "train.csv", "--model", "popular", "--split", "none",
           "--output", root / "model", "--quiet")
    return Inputs(root / "data.csv", root / "split" / "test.csv", root / "model")


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) with its content hash."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def suffix(job: str) -> str:
    return ".csv" if JOBS[job].kind == "file" else ""


@pytest.mark.parametrize(("job", "point"), CASES, ids=[f"{j}@{p}" for j, p in CASES])
def test_kill_while_saving_leaves_the_previous_artifact(tmp_path, inputs, job, point):
    spec = JOBS[job]
    out = tmp_path / "out" / f"{spec.artifact}{suffix(job)}"
    invoke(*spec.args(inputs, out, 1))
    previous = snapshot(out)
    neighbours = sorted(p.name for p in out.parent.iterdir())
    env = {"RECSYS_CRASH_AT": point}
    if point == "atomic_directory.after_aside":
        env["RECSYS_NO_RENAME_EXCHANGE"] = "1"  # the two-rename fallback, killed between them
    killed = run(*spec.args(inputs, out, 2), **env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if point == "atomic_directory.after_aside":
        # Killed between the renames: nothing at the path, the previous one whole beside it...
        assert not out.exists()
        (aside,) = out.parent.glob(f".{out.name}.recsys-tmp-old-*")
        assert snapshot(aside) == previous
    else:
        assert snapshot(out) == previous
    # ... and the next run cleans up whatever the killed one left.
    invoke(*spec.args(inputs, out, 2))
    assert snapshot(out) != previous
    assert sorted(p.name for p in out.parent.iterdir()) == neighbours


def test_kill_while_saving_a_first_model_leaves_none(tmp_path, inputs):
    out = tmp_path / "model"
    killed = run(*JOBS["train"].args(inputs, out, 1), RECSYS_CRASH_AT="atomic_directory.before_replace")
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()


def test_kill_mid_training_and_a_second_writer_is_refused(tmp_path, inputs):
    out = tmp_path / "model"
    args = [*JOBS["train"].args(inputs, out, 1)]
    invoke(*args)
    previous = snapshot(out)
    args[args.index("--epochs") + 1] = "30"
    proc = start(*args, "--checkpoint-every", "1", "-p", "batch_size=16")
    wait_for(tmp_path / "model.checkpoint", proc)
    proc.send_signal(signal.SIGSTOP)
    try:
        # A second run aimed at the same output is refused at once, with a clear message.
        r = runner.invoke(app, [str(a) for a in JOBS["train"].args(inputs, out, 5)])
        assert r.exit_code == 2
        assert f"{out}: another recsys run is writing this output right now" in r.output
        with pytest.raises(RecsysError, match="another recsys run"), output_lock(out):
            pass
    finally:
        proc.kill()
        proc.communicate()
    assert snapshot(out) == previous
    load_checkpoint(tmp_path / "model.checkpoint")  # the last checkpoint is whole
    invoke(*JOBS["train"].args(inputs, out, 5))  # the kernel released the dead run's lock
    Recommender.load(out)
