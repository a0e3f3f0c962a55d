"""Determinism: same data, same seed, CPU: identical factors and byte-identical recommendation files."""

from __future__ import annotations

import numpy as np
import pytest
from recsys_cli.main import app
from typer.testing import CliRunner

from recsys.data.io import write_interactions
from recsys.data.synthetic import checkerboard
from recsys.models.base import Recommender

runner = CliRunner()


@pytest.mark.parametrize("model", ["mf", "ials", "als"])
def test_two_runs_give_identical_factors_and_recommendation_files(tmp_path, model):
    data = tmp_path / "data.csv"
    write_interactions(checkerboard(), data)
    files = []
    for run in ("a", "b"):
        args = ["train", "--data", data, "--model", model, "--epochs", "3", "--factors", "8", "--seed", "7",
                "--device", "cpu", "--split", "none", "--no-index", "--output", tmp_path / run, "--quiet"]
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
        out = tmp_path / f"{run}.csv"
        r = runner.invoke(app, ["recommend", "--model", str(tmp_path / run), "--out", str(out), "--k", "5"])
        assert r.exit_code == 0, r.output
        files.append(out.read_bytes())
    a, b = Recommender.load(tmp_path / "a"), Recommender.load(tmp_path / "b")
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert files[0] == files[1] and len(files[0]) > 100
