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
