"""One validation layer for settings: whatever value reaches a model or a run's settings
(flags, -p, --config, grids, model.json), the outcome is a fitted model or a RecsysError
naming the setting, never another exception."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cli_invoke import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.data import Interactions
from recsys.data.synthetic import checkerboard
from recsys.errors import ConfigError, RecsysError
from recsys.jobs import TrainConfig
from recsys.jobs.config import build_train_config
from recsys.models import MODELS, create_model
from recsys.models.params import check_params

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=6), st.lists(st.integers(0, 3), max_size=2),
    st.integers(10**300, 10**400),  # TOML and JSON read these as ints; a float of one overflows
    st.sampled_from([np.int64(3), np.float32(0.5), np.float64("nan"), np.bool_(True)]),
)
DATA = checkerboard(n_users=24, n_items=12, seed=0)
RATINGS = Interactions.from_arrays(DATA.row_indices, DATA.matrix.indices, 1.0 + DATA.matrix.indices % 5,
                                   feedback="rating")  # for the models that fit ratings only


@pytest.mark.parametrize("name", [m for m in MODELS if m != "popular"])
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_of_any_hyper_parameter_fits_or_is_refused_by_name(name, data):
    param = data.draw(st.sampled_from(MODELS[name].param_names()))
    value = data.draw(VALUES)
    small = {"epochs": 1, "factors": 4, "device": "cpu"}
    params = {k: v for k, v in small.items() if k in MODELS[name].param_names()}
    params[param] = value
    default = create_model(name).get_params()[param]
    whole = isinstance(default, int) and not isinstance(default, bool) and param != "random_state"
    if whole and isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        # Keep every fit small (cg_steps = 10**300 is a valid, endless request); the types and
        # ranges are what this test is about.
        params[param] = min(int(value), 8)
    try:
        create_model(name, **params).fit(RATINGS if name == "bpmf" else DATA)
    except RecsysError as exc:
        assert str(exc)
    except Exception as exc:  # pragma: no cover - the failure this test exists to find
        pytest.fail(f"{name} {param}={value!r}: {type(exc).__name__}: {exc}")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(key=st.sampled_from(["k", "seed", "test_fraction", "split_n", "split", "patience", "validation_fraction",
                            "min_rating", "min_user_count", "min_item_count", "params", "model"]),
       value=VALUES)
def test_any_value_in_a_settings_file_is_accepted_or_refused_by_name(tmp_path_factory, key, value):
    import tomli_w

    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    try:
        path.write_text(tomli_w.dumps({key: value}))
    except (TypeError, ValueError):
        return  # TOML cannot hold it (None, NaN in some forms): nothing a user could write
    try:
        build_train_config(config_file=path)
    except ConfigError as exc:
        assert key in str(exc) or "model" in str(exc) or str(path) in str(exc)


@pytest.mark.parametrize("value", [math.nan, math.inf, "abc", True, [1], 10**400])
def test_numbers_must_be_finite_numbers(value):
    with pytest.raises(ConfigError, match="learning_rate must be a finite number"):
        check_params(MODELS["mf"], {"learning_rate": value})


def test_the_settings_name_what_is_wrong():
    with pytest.raises(ConfigError, match=r"seed must be a whole number, got 1\.5"):
        TrainConfig(seed=1.5).check()
    with pytest.raises(ConfigError, match="seed must be at least 0, got -1"):
        TrainConfig(seed=-1).check()
    with pytest.raises(ConfigError, match="ks must be a list"):
        TrainConfig(ks=("ten",)).check()
    check_params(MODELS["ials"], {"unobserved_weight": "auto", "factors": np.int64(8)})


@pytest.mark.parametrize("flags, message", [
    (("--learning-rate", "nan", "--model", "mf"), "learning_rate must be a finite number, got nan"),
    (("--seed", "-1"), "seed must be at least 0, got -1"),
    (("-p", "alpha=abc", "--model", "als"), "alpha must be a finite number or one of 'auto', got 'abc'"),
])
def test_flag_values_outside_their_domain_exit_2_with_the_setting(tmp_path, sample_ratings, flags, message):
    r = run("train", "--data", sample_ratings, *flags, "-o", tmp_path / "m", "--no-track", code=2)
    assert message in r.output and not (tmp_path / "m").exists()


@pytest.mark.parametrize("flags, message", [
    (("--factors", "100000000"), "need about"),
    (("--trees", "0"), "trees must be at least 1, got 0"),
    (("--sep", "::::"), "--sep takes one character"),
])
def test_impossible_settings_are_refused_before_any_work(tmp_path, sample_ratings, flags, message):
    """A typo in the factor count was allowed to allocate 135 GB; --trees 0 built 20 trees
    (or none, silently); a long separator crashed the reader."""
    r = run("train", "--data", sample_ratings, *flags, "-o", tmp_path / "m", "--no-track", code=2)
    assert message in r.output and not (tmp_path / "m").exists()
