"""Seeds: accept an int, a numpy Generator or None, and convert once."""

from __future__ import annotations

import numpy as np

from recsys.errors import ConfigError

Seed = int | np.random.Generator | None


def as_generator(seed: Seed) -> np.random.Generator:
    """A numpy Generator from an int (reproducible), a Generator (used as is) or None (fresh)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int, a numpy Generator or None, not {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ConfigError(f"seed must be at least 0, got {seed}")
    return np.random.default_rng(seed)


def derive_seed(seed: Seed) -> int:
    """An int seed for libraries that need one (torch, implicit), drawn from ``seed``."""
    return int(as_generator(seed).integers(0, 2**31 - 1))
