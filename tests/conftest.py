"""Shared fixtures: seeded generators, devices, small data sets with a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from recsys.data.interactions import Interactions
from recsys.data.synthetic import checkerboard as make_checkerboard

# Property tests draw the same examples on every run (seeded, like the rest of the suite):
# a failure found once is found again, and CI does not meet a new example each stop.
settings.register_profile("recsys", derandomize=True)
settings.load_profile("recsys")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session", autouse=True)
def _no_tracking(tmp_path_factory):
    """Commands record MLflow runs by default; tests opt in (tests/test_tracking.py) so no
    ``mlflow.db`` lands in the working directory, and models downloaded from a store are
    cached in the session's temporary folder, not the home directory. Session-wide, so that
    module-scoped fixtures which train through the CLI are covered too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_NO_TRACK", "1")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("RECSYS_MODEL_CACHE", str(tmp_path_factory.mktemp("model-cache")))
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """Every torch path runs on the CPU, and on CUDA where there is a GPU."""
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device")
    return request.param


@pytest.fixture
def checkerboard() -> Interactions:
    return make_checkerboard()


@pytest.fixture(scope="session")
def sample_ratings() -> Path:
    return SAMPLE / "ratings.csv"
