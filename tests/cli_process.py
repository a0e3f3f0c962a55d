"""Running the real ``recsys`` command in a subprocess, for tests that signal or kill it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out.update(extra)
    return out


def start(*args: object, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "recsys_cli.main", *map(str, args)],
        env=env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: object, **extra_env: str) -> subprocess.CompletedProcess:
    proc = start(*args, **extra_env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll until ``path`` exists; fail if the process ends first (the run was too short)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {path} appeared:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.005)
