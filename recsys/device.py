"""The compute device, chosen once at the edge.

Order: an explicit choice, then the ``RECSYS_DEVICE`` environment variable, then CUDA when
torch sees a GPU, then the CPU. Everything below receives a ``torch.device`` and never asks
again.
"""

from __future__ import annotations

import os
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
    return resolved
