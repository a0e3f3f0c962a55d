"""The compute device, chosen once at the edge.

Order: an explicit choice, then the ``RECSYS_DEVICE`` environment variable, then CUDA when
torch sees a GPU, then the CPU. Everything below receives a ``torch.device`` and never asks
again.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "RECSYS_DEVICE"


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


def cpu_budget(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container
    limited to 2 CPUs of a 64-core host may use 2, whatever ``os.cpu_count()`` says)."""
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


def limit_torch_threads() -> int:
    """Keep torch's CPU threads within :func:`cpu_budget` and return it. torch counts the
    host's cores: in a container given fewer, its threads outnumber the CPUs and wait on one
    another at every operation. Never raises a count the user set lower."""
    import torch

    budget = cpu_budget()
    if torch.get_num_threads() > budget:
        torch.set_num_threads(budget)
    return budget
