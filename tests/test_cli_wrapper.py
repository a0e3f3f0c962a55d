"""The command wrapper when stdout is a pipe that the reader closes (``recsys ... | head``)."""

from __future__ import annotations

import subprocess
import sys

SPAM = """
import typer
from recsys_cli.common import command

@command
def spam() -> None:
    for _ in range(200_000):
        print("x" * 80)

typer.run(spam)
"""


def test_a_closed_pipe_exits_quietly():
    """Regression (merge review): ``| head`` printed "a bug in recsys" (BrokenPipeError)."""
    proc = subprocess.Popen([sys.executable, "-c", SPAM], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"x" * 80 + b"\n"
    proc.stdout.close()  # what head does after its lines
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert stderr == ""


SLEEPER = """
import sys, time
import typer
from recsys_cli.common import command

@command
def work(done: str) -> None:
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        open(done, "w").write("cleaned up")

typer.run(work)
"""


def test_sigterm_unwinds_the_command_like_ctrl_c(tmp_path):
    """Regression (merge review): a model without checkpoint hooks (two-tower) died on SIGTERM
    where it stood: its MLflow run stayed RUNNING, temporary files stayed behind."""
    import signal

    done = tmp_path / "done"
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, str(done)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert proc.stderr.read().decode().strip() == "terminated"
    assert done.read_text() == "cleaned up"


def test_model_help_lists_every_model():
    """Regression (merge review): help texts that list models drift when a model is added."""
    import re

    from recsys_cli.main import app
    from typer.testing import CliRunner

    from recsys.jobs.space import SEARCH_SPACES
    from recsys.models import MODELS

    for command, names in (("train", MODELS), ("tune", SEARCH_SPACES)):
        out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
        line = next(text for text in out.splitlines() if "--model" in text)
        listed = set(re.findall(r"[a-z][a-z-]*", line.split("Model", 1)[1].split("(default")[0])) - {"or", "to", "tune"}
        assert listed == set(names), (command, line)
