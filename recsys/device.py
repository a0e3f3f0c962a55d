"""The compute device, chosen once at the edge.

Order: an explicit choice, then the ``RECSYS_DEVICE`` environment variable, then CUDA when
torch sees a GPU, then the CPU. Everything below receives a ``torch.device`` and never asks
again.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "RECSYS_DEVICE"
THREADS_ENV = "RECSYS_THREADS"

# Below this many multiply-adds a training step's operations are too small to share: a
# second thread costs a wake-up and a barrier per operation, and on a busy machine the
# barrier waits for a sibling the scheduler has put aside (a one-off probe: an mf MSE epoch
# on ML-100K took 0.08 s on one thread, 6 s on two beside other work). 2^22 sits between
# MSE's steps (~65K multiply-adds) and BPR's (~17M): it keeps MSE and small factorizations
# on one thread and lets mf's (batch x negatives x factors) products and the two-tower's
# in-batch logits use every CPU. Not swept: seen on one 2-core machine only.
PARALLEL_STEP_WORK = 1 << 22

_threads: int | None = None  # set_threads(): the user's --threads


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks ``$RECSYS_DEVICE``, else ``cuda`` if available, else ``cpu``."""
    import torch

    if isinstance(device, torch.device):
        return device
    choice = (device or "auto").strip().lower()
    if choice == "auto":
        choice = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(choice)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but torch sees no CUDA GPU on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use auto, cpu or cuda")
    limit_torch_threads()  # CPU work happens on either device (data preparation, the CPU path)
    return resolved


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads from now on (``--threads``); None: the CPU budget."""
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"threads must be at least 1, not {threads}")
    global _threads
    _threads = None if threads is None else int(threads)
    if _threads is not None:
        limit_torch_threads()


def cpu_budget(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPU threads this process uses: the user's choice (:func:`set_threads`, else
    ``$RECSYS_THREADS``), else the CPUs it may use: its affinity, capped by a cgroup CPU
    quota (a container limited to 2 CPUs of a 64-core host may use 2, whatever
    ``os.cpu_count()`` says)."""
    chosen = _threads if _threads is not None else _env_threads()
    if chosen is not None:
        return chosen
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs granted by the cgroup's quota (v2 ``cpu.max``, else v1 ``cpu.cfs_*``); None if unlimited."""
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _env_threads() -> int | None:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"${THREADS_ENV} must be a whole number of threads, at least 1, not {raw!r}")
    return value


def limit_torch_threads() -> int:
    """Keep torch's CPU threads within :func:`cpu_budget` and return it. torch counts the
    host's cores: in a container given fewer, its threads outnumber the CPUs and wait on one
    another at every operation. Never raises a count set lower, unless the user chose the
    count (``--threads``, ``$RECSYS_THREADS``)."""
    import torch

    budget = cpu_budget()
    if torch.get_num_threads() > budget or (_threads is not None or _env_threads() is not None):
        torch.set_num_threads(budget)
    return budget


def threads_chosen() -> bool:
    """Whether the user chose the thread count (``--threads``, ``$RECSYS_THREADS``)."""
    return _threads is not None or _env_threads() is not None


def step_threads(step_work: float) -> int:
    """Threads worth giving a training loop whose steps do ``step_work`` multiply-adds
    (see :data:`PARALLEL_STEP_WORK`): one below it, the CPU budget above, the user's
    ``--threads`` always."""
    if threads_chosen() or step_work >= PARALLEL_STEP_WORK:
        return cpu_budget()
    return 1


# How long libgomp's threads spin at a barrier before they sleep, in spins (its default is
# 300,000: milliseconds). A thousand, tens of microseconds, bridge the gap between two
# operations of a step; see brief_openmp_waits.
OPENMP_SPINS = 1000


def brief_openmp_waits() -> None:
    """Make OpenMP threads spin only briefly at a barrier, then sleep (unless the user chose).

    libgomp's threads spin at every barrier for milliseconds before they sleep. On a busy
    machine the spinning thread holds a CPU its descheduled sibling needs: a torch loop of
    small operations slowed twenty-fold. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``)
    costs a wake-up per operation on a quiet one: mf's epoch ran 1.6 times slower than with
    a thousand spins (experiments/speed). So: a thousand spins (Intel's runtime, which has
    no spin count, sleeps at once), and :class:`ThreadGovernor` gives a step one thread when
    the machine is busy. Read once, when each OpenMP runtime (torch's, implicit's) loads:
    so this runs on ``import recsys``, before them.
    """
    if "OMP_WAIT_POLICY" in os.environ:  # the user's choice, which a spin count would override
        return
    os.environ.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPINS))
    os.environ.setdefault("KMP_BLOCKTIME", "0")


class ThreadGovernor:
    """The threads of a CPU training loop's steps, lowered to one while the machine is busy.

    Every :attr:`WINDOW` seconds of steps it compares the process's CPU time with what its
    threads could have used. Beside other busy processes a step's threads wait at every
    operation for a sibling the scheduler has put aside: two threads then use under a
    quarter of their time (mf, two-tower on 2 cores beside four busy processes), while one
    thread runs unhindered and finishes sooner (experiments/speed). So below
    :attr:`LOW` of the threads' time the steps go to one thread; once one thread has a whole
    CPU again (above :attr:`HIGH`) the full count is tried again, after twice as many
    windows each time the try fails. Fixed at one count where the user chose it
    (``--threads``), where a step is too small to share (:func:`step_threads`), and on a GPU.

    ``with governor:`` holds an epoch's steps (the threads in between, validation's and
    checkpoints', are restored); each step calls :func:`pace`.
    """

    WINDOW = 0.25
    LOW = 0.5
    HIGH = 0.9
    MAX_WAIT = 16

    def __init__(self, threads: int, *, adaptive: bool = True) -> None:
        self.threads = max(1, int(threads))
        self.adaptive = adaptive and self.threads > 1
        self.current = self.threads
        self._wait = 1  # quiet windows on one thread before the full count is tried again
        self._quiet = 0
        self._before: int | None = None
        self._since = self._cpu = 0.0
        self.changes = 0

    def __enter__(self) -> ThreadGovernor:
        import torch

        global _governor
        self._before = torch.get_num_threads()
        torch.set_num_threads(self.current)
        self._start_window()
        _governor = self if self.adaptive else None
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        global _governor
        _governor = None
        if self._before is not None:
            torch.set_num_threads(self._before)

    def _start_window(self) -> None:
        self._since, self._cpu = time.perf_counter(), time.process_time()

    def _set(self, threads: int) -> None:
        import torch

        self.current = threads
        self.changes += 1
        torch.set_num_threads(threads)

    def pace(self) -> None:
        """Between two steps: at the end of a window, choose the next window's threads."""
        if not self.adaptive:
            return
        now = time.perf_counter()
        if now - self._since < self.WINDOW:
            return
        used = (time.process_time() - self._cpu) / ((now - self._since) * self.current)
        if self.current > 1:
            if used < self.LOW:
                self._set(1)
                self._quiet = 0
            else:
                self._wait = 1  # the full count holds up
        elif used > self.HIGH:
            self._quiet += 1
            if self._quiet >= self._wait:
                self._wait = min(2 * self._wait, self.MAX_WAIT)  # reset to 1 if the try holds
                self._set(self.threads)
        else:
            self._quiet = 0
        self._start_window()


_governor: ThreadGovernor | None = None


def pace() -> None:
    """Called between two training steps: lets the active :class:`ThreadGovernor` adjust."""
    if _governor is not None:
        _governor.pace()


@contextlib.contextmanager
def shared_threads(processes: int) -> Iterator[int]:
    """Inside the block this process's CPU budget is its share of :func:`cpu_budget` among
    ``processes`` processes on this machine (data-parallel training: two processes on two
    CPUs take one each rather than contend for both); yields the share. The share holds for
    every step, small or large, as a ``--threads`` would; the budget is restored after."""
    import torch

    global _threads
    before, torch_before = _threads, torch.get_num_threads()
    share = max(1, cpu_budget() // max(1, processes))
    set_threads(share)
    try:
        yield share
    finally:
        _threads = before
        torch.set_num_threads(torch_before)
