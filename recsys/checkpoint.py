"""Training checkpoints: everything needed to continue an interrupted run exactly.

A checkpoint is a directory written atomically (see :func:`recsys.artifacts.atomic_directory`):

- ``checkpoint.json``: format and version, the model's name and hyper-parameters, the
  last completed epoch, the training history and validation state, the Python ``random``
  state, a fingerprint of the training data, the run's settings (so ``recsys train
  --resume DIR`` needs nothing else) and the sha256 of ``state.npz``;
- ``state.npz``: the trainer's state (factors, optimizer moments, its own random
  generators; see :meth:`recsys.models.training.Trainer.state_dict`) under ``model.*``, the
  best-epoch snapshot under ``best.*``, and the global torch and numpy random states under
  ``rng.*``. No pickle.

The shared epoch loop (:class:`recsys.models.training.IterativeRecommender`) writes one
every ``every`` epochs and when the process receives SIGINT or SIGTERM (at the end of the
epoch in progress); a second signal aborts at once.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.artifacts import (
    OutputKind,
    atomic_directory,
    inside,
    json_format,
    load_arrays,
    read_description,
    save_arrays,
    sha256_file,
    write_json,
)
from recsys.errors import ConfigError, ModelFormatError, RecsysError

FORMAT_NAME = "recsys-checkpoint"
FORMAT_VERSION = 1
_META = "checkpoint.json"
CHECKPOINT_DIRECTORY = OutputKind("checkpoint directory", directory=True, marker=_META, recognise=json_format(FORMAT_NAME))
_STATE = "state.npz"


class TrainingInterrupted(RecsysError):
    """Training stopped on a signal after saving a checkpoint; ``directory`` resumes it."""

    def __init__(self, directory: Path, epoch: int, epochs: int, signum: int) -> None:
        self.directory = directory
        self.epoch = epoch
        self.signum = signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} after epoch {epoch} of {epochs}; "
            f"checkpoint saved in {directory}; continue with: recsys train --resume {directory}"
        )


@dataclass
class Checkpointing:
    """Where and how often the epoch loop saves checkpoints.

    Parameters
    ----------
    directory : Path
        The checkpoint directory (replaced atomically at each save).
    every : int
        Save after every ``every`` epochs; 0 saves only when interrupted by a signal.
    resume : bool
        Continue from the checkpoint already in ``directory``.
    run : dict
        The run's settings, stored so that a resume can rebuild the run (opaque to the loop).
    handle_signals : bool
        Catch SIGINT and SIGTERM to save a checkpoint before stopping (main thread only).
    """

    directory: Path
    every: int = 0
    resume: bool = False
    run: dict[str, Any] = field(default_factory=dict)
    handle_signals: bool = True

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if int(self.every) < 0:
            raise ConfigError(f"checkpoint interval must be >= 0 epochs, got {self.every}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``meta`` from ``checkpoint.json``, ``arrays`` from ``state.npz``."""

    directory: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays saved under ``prefix.`` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.arrays.items() if k.startswith(prefix + ".")}


# -- global random states ----------------------------------------------------------------------
def random_states() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The global torch, numpy and Python random states, as arrays and a JSON-able value."""
    import torch

    # The legacy global state, saved on purpose: user callbacks or libraries may draw from it.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    arrays = {
        "rng.torch": torch.get_rng_state().numpy().copy(),
        "rng.numpy_keys": np.asarray(keys, dtype=np.uint32),
        "rng.numpy_rest": np.asarray([pos, has_gauss], dtype=np.int64),
        "rng.numpy_gauss": np.asarray(cached, dtype=np.float64),
    }
    version, internal, gauss = random.getstate()
    return arrays, {"python_random": [version, list(internal), gauss], "numpy_kind": kind}


def set_random_states(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(torch.from_numpy(np.ascontiguousarray(arrays["rng.torch"], dtype=np.uint8)))
    pos, has_gauss = (int(v) for v in arrays["rng.numpy_rest"])
    np.random.set_state(  # noqa: NPY002
        (meta["numpy_kind"], arrays["rng.numpy_keys"], pos, has_gauss, float(arrays["rng.numpy_gauss"]))
    )
    version, internal, gauss = meta["python_random"]
    random.setstate((version, tuple(internal), gauss))


# -- writing and reading ------------------------------------------------------------------------
def save_checkpoint(directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a checkpoint directory atomically (the previous one stays until the new one is whole)."""
    rng_arrays, rng_meta = random_states()
    with atomic_directory(directory, kind=CHECKPOINT_DIRECTORY) as tmp:
        save_arrays(tmp / _STATE, {**arrays, **rng_arrays})
        write_json(
            tmp / _META,
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                **meta,
                "random": rng_meta,
                "files": {_STATE: sha256_file(tmp / _STATE)},
            },
        )


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """``checkpoint.json`` of ``directory``, with its format and version checked."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no checkpoint directory there")
    return read_description(inside(directory, _META), format=FORMAT_NAME, version=FORMAT_VERSION,
                            what="checkpoint", where=directory)


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read and verify a checkpoint (format, version, checksum, field types); never unpickles."""
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != {_STATE}:
        raise ModelFormatError(f"{directory}: {_META} does not list the checkpoint's files")
    state = inside(directory, _STATE)
    if not state.is_file():
        raise ModelFormatError(f"{directory}: missing {_STATE}")
    if sha256_file(state) != files[_STATE]:
        raise ModelFormatError(f"{directory}: {_STATE} does not match its checksum (corrupt or altered)")
    arrays = load_arrays(state)
    try:
        epoch = meta["epoch"]
        ok = (
            isinstance(epoch, int) and epoch >= 1
            and isinstance(meta["model"], str) and isinstance(meta["params"], dict)
            and isinstance(meta["history"], list) and isinstance(meta["random"], dict)
        )
    except KeyError:
        ok = False
    if not ok:
        raise ModelFormatError(f"{directory}: {_META} lacks fields a checkpoint needs")
    try:
        check_arrays(arrays, _rng_layout())
        bad = [k for k, v in arrays.items() if v.dtype.kind not in "fiub"]
        if bad:
            raise ConfigError(f"{bad[0]} holds {arrays[bad[0]].dtype} values, expected real numbers")
    except ConfigError as exc:
        raise ModelFormatError(f"{directory}: {_STATE}: {exc}") from None
    return Checkpoint(directory, meta, arrays)


def _rng_layout() -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes and kinds of the saved random states: torch's CPU generator, numpy's MT19937."""
    import torch

    return {
        "rng.torch": (tuple(torch.get_rng_state().shape), "u"),
        "rng.numpy_keys": ((624,), "u"),
        "rng.numpy_rest": ((2,), "i"),
        "rng.numpy_gauss": ((), "f"),
    }


def check_arrays(arrays: dict[str, np.ndarray], expected: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Check that each named array is present with its shape and dtype kind (``f``, ``i``, ``u``).

    Used by trainers' ``load_state_dict`` before anything is copied: torch would
    broadcast a (1, d) table into (n, d) without a word.
    """
    for name, (shape, kinds) in expected.items():
        if name not in arrays:
            raise ConfigError(f"{name} is missing")
        value = arrays[name]
        if tuple(value.shape) != tuple(shape) or value.dtype.kind not in kinds:
            raise ConfigError(f"{name} has shape {value.shape} and type {value.dtype}, expected {tuple(shape)}")


# -- signals --------------------------------------------------------------------------------------
class SignalGuard:
    """While active, the first SIGINT/SIGTERM only sets :attr:`signum`; a second aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nrecsys: {signal.Signals(signum).name} received; saving a checkpoint at the end of "
            "this epoch (signal again to abort without one)",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def active(self, enabled: bool = True) -> Iterator[SignalGuard]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        # A signal the process was told to ignore (nohup, a background job) stays ignored.
        watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
        previous = {s: signal.signal(s, self._handle) for s in watched}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
