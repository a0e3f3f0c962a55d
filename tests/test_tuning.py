"""recsys tune: runs, writes a config train can use, and never touches the test split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from recsys_cli.main import app
from typer.testing import CliRunner

import recsys.jobs.tuning as tuning
from recsys.data.synthetic import generate
from recsys.errors import ConfigError
from recsys.jobs import TrainConfig, load, split_data
from recsys.jobs.config import build_train_config, read_toml
from recsys.jobs.space import parse_space
from recsys.jobs.tuning import tune
from recsys.models import ALS


@pytest.fixture(scope="module")
def data():
    return generate(n_users=150, n_items=120, mean_items_per_user=20, seed=1).to_interactions()


def entries(d) -> set:
    return set(zip(d.row_indices.tolist(), d.matrix.indices.tolist()))


def test_tune_never_sees_the_test_split(data, monkeypatch):
    config = TrainConfig(model="als", params={"epochs": 3}, seed=4)
    _train, test = split_data(data, config)
    forbidden = entries(test)
    seen: list[set] = []
    real_fit = tuning.create_model

    def spying_create(name, **params):
        model = real_fit(name, **params)
        original = model.fit

        def fit(d, **kw):
            seen.append(entries(d))
            return original(d, **kw)

        model.fit = fit
        return model

    real_evaluate = tuning.evaluate

    def spying_evaluate(model, valid, **kw):
        seen.append(entries(valid))
        return real_evaluate(model, valid, **kw)

    monkeypatch.setattr(tuning, "create_model", spying_create)
    monkeypatch.setattr(tuning, "evaluate", spying_evaluate)
    space = parse_space({"factors": [4, 8], "regularization": {"low": 0.01, "high": 1.0, "log": True}}, "als")
    result = tune(data, config, trials=3, space=space)
    assert len(seen) == 6  # a fit and an evaluation per trial
    for part in seen:
        assert part and part.isdisjoint(forbidden)
    assert set(result.best_params) == {"factors", "regularization"}
    assert result.best_value == pytest.approx(result.trials["recall@20"].max())
    # Fixed hyper-parameters stay fixed and out of the search.
    assert result.config.params["epochs"] == 3 and "epochs" not in result.trials


def test_best_config_round_trips_into_train(data, tmp_path):
    space = parse_space({"factors": [4, 8], "epochs": [2, 3]}, "ials")
    result = tune(data, TrainConfig(model="ials", params={"device": "cpu"}), trials=2, space=space)
    path = result.write_config(tmp_path / "best.toml")
    config = build_train_config(config_file=path)
    assert config.model == "ials"
    assert {k: config.params[k] for k in result.best_params} == result.best_params
    assert read_toml(path)["seed"] == 0


def test_bad_spaces_and_settings(data):
    with pytest.raises(ConfigError, match="no hyper-parameter"):
        parse_space({"learning_rate": [0.1]}, "als")
    with pytest.raises(ConfigError, match="low < high"):
        parse_space({"alpha": {"low": 2, "high": 1}}, "als")
    with pytest.raises(ConfigError, match=r"nothing|no hyper-parameters"):
        tune(data, TrainConfig(model="popular"), trials=1)


def test_split_none_tunes_on_all_the_data_given(data, monkeypatch):
    # A log with its own test file: the whole file is training data, validation carved from it.
    seen = []
    real = tuning.validation_split

    def spy(train, fraction, seed):
        seen.append(train)
        return real(train, fraction, seed)

    monkeypatch.setattr(tuning, "validation_split", spy)
    tune(data, TrainConfig(model="als", split="none", params={"epochs": 1, "factors": 4}), trials=1)
    assert seen[0].nnz == data.nnz


def test_cli_tune_writes_settings(tmp_path, sample_ratings):
    space = tmp_path / "space.toml"
    space.write_text("[space]\nfactors = [4, 8]\nregularization = {low = 0.01, high = 0.5, log = true}\n")
    out = tmp_path / "best.toml"
    result = CliRunner().invoke(app, [
        "tune", "--data", str(sample_ratings), "--model", "als", "--trials", "2", "-p", "epochs=2",
        "--space", str(space), "--output", str(out), "--format", "json", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["trials"] == 2 and out.is_file()
    assert np.isfinite(payload["best_value"])
    r = CliRunner().invoke(app, ["train", "--data", str(sample_ratings), "--config", str(out), "-o", str(tmp_path / "m"), "--quiet", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["params"]["factors"] in (4, 8)


def test_cli_tunes_two_tower_with_its_feature_tables(tmp_path, sample_ratings, monkeypatch):
    """Every trial trains with the feature tables (the item tower reads the genres)."""
    trained: list = []
    real_evaluate = tuning.evaluate

    def spying_evaluate(model, valid, **kw):
        trained.append(model)
        return real_evaluate(model, valid, **kw)

    monkeypatch.setattr(tuning, "evaluate", spying_evaluate)
    sample = sample_ratings.parent
    r = CliRunner().invoke(app, [
        "tune", "--data", str(sample_ratings), "--model", "two-tower", "--trials", "2", "--quiet", "--device", "cpu",
        "-p", "epochs=1", "-p", "hidden=8", "-p", "factors=8", "--item-features", str(sample / "items.csv"),
        "--item-features-spec", "title=skip", "--output", str(tmp_path / "best.toml")])
    assert r.exit_code == 0, r.output
    assert len(trained) == 2 and all(m.scores_cold_items for m in trained)
    # The written config says which tables to pass again (a config holds no feature tables).
    assert f"--item-features {sample / 'items.csv'} --item-features-spec title=skip" in (tmp_path / "best.toml").read_text()
    assert "genres" in trained[0].item_encoder.multi
    r = CliRunner().invoke(app, ["tune", "--data", str(sample_ratings), "--model", "als", "--trials", "1",
                                 "--item-features", str(sample / "items.csv"), "--output", str(tmp_path / "als.toml")])
    assert r.exit_code == 2 and "does not use user or item features" in r.output


def test_cli_time_budget_stops_the_search_in_time(tmp_path, sample_ratings):
    r = CliRunner().invoke(app, ["tune", "--data", str(sample_ratings), "--model", "als", "--time-budget", "3s",
                                 "-p", "epochs=2", "-p", "factors=8", "--quiet", "--format", "json",
                                 "--output", str(tmp_path / "best.toml")])
    assert r.exit_code == 0, r.output
    # Without --trials the budget alone ends the search (the test would not end otherwise).
    assert json.loads(r.stdout)["trials"] >= 1 and (tmp_path / "best.toml").is_file()


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), (" 2M ", 120)])
def test_durations(text, seconds):
    assert tuning.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-5m", "0", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ConfigError, match="time budget"):
        tuning.parse_duration(text)


def test_first_trial_is_the_defaults_and_relative_values_land_on_the_training_part(sample_ratings):
    config = TrainConfig(model="als", params={"factors": 8, "epochs": 2})
    result = tuning.tune(sample_ratings, config, trials=1)
    first = result.trials.iloc[0]
    assert first["alpha"] == 1.0 and first["regularization"] == 1.0 and first["weighting"] == "auto"
    # The written alpha is the multiplier (1) times the rule's value on the whole training part,
    # which differs from its value on the smaller part the trial was fitted on.
    train, _ = split_data(load(sample_ratings), config)
    expected = ALS(factors=8).resolved_params(train)
    assert result.best_params["alpha"] == pytest.approx(expected["alpha"])
    assert result.best_params["regularization"] == pytest.approx(expected["regularization"])


def test_settings_written_before_als_took_device_still_read(tmp_path):
    """Regression (review): a config.toml logged for ALS before its `use_gpu` became `device`
    (and a grid file written then) was refused as naming an unknown hyper-parameter."""
    from recsys.jobs.grid import _model_grid

    old = tmp_path / "old.toml"
    old.write_text('model = "als"\n[params]\nfactors = 8\nuse_gpu = false\n')
    assert build_train_config(config_file=old).params == {"factors": 8, "device": "cpu"}
    grid = _model_grid({"model": "als", "params": {"use_gpu": True}, "grid": {"use_gpu": [False, "auto"]}}, "g.toml")
    assert grid.params == {"device": "cuda"} and grid.grid == {"device": ["cpu", "auto"]}
