"""Run settings from a TOML file and command-line flags, merged into a :class:`TrainConfig`.

A settings file looks like::

    model = "mf"
    split = "user"
    test_fraction = 0.2
    seed = 0
    k = [10, 20, 50]

    [params]
    factors = 128
    loss = "softmax"

Flags given on the command line win over the file; the file wins over defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError
from recsys.jobs.settings import TrainConfig
from recsys.models import MODELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FILTER_KEYS = ("min_rating", "min_user_count", "min_item_count")
_TOP_LEVEL = {
    "model", "params", "split", "test_fraction", "split_n", "seed", "k",
    "validation_fraction", "validation_metric", "patience", "device", "eval_users", *FILTER_KEYS,
}


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such settings file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a TOML settings file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def config_settings(config: TrainConfig) -> dict[str, Any]:
    """A :class:`TrainConfig` as the settings-file table :func:`build_train_config` reads back."""
    import numpy as np

    settings: dict[str, Any] = {
        "model": config.model,
        "split": config.split,
        "test_fraction": config.test_fraction,
        "split_n": config.split_n,
        "seed": config.seed,
        "k": list(config.ks),
    }
    for key in ("validation_fraction", "validation_metric", "patience", "eval_users"):
        value = getattr(config, key)
        if value is not None and (key != "validation_metric" or config.validation_fraction):
            settings[key] = value
    default = TrainConfig()
    settings.update({k: getattr(config, k) for k in FILTER_KEYS if getattr(config, k) != getattr(default, k)})
    settings["params"] = {k: v.item() if isinstance(v, np.generic) else v for k, v in config.params.items() if v is not None}
    return settings


def settings_toml(config: TrainConfig, header: str = "") -> str:
    """The resolved settings of a run as TOML text (``recsys train --config`` reads it)."""
    import tomli_w

    return header + tomli_w.dumps(config_settings(config))


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a TOML literal (number, bool, string), else as text."""
    if "=" not in text:
        raise ConfigError(f"--param takes KEY=VALUE, got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_device(model: str, params: dict[str, Any], device: str | None) -> dict[str, Any]:
    """Give a model that trains on a device (its ``device`` hyper-parameter) the run's device,
    unless the model's own settings name one."""
    if device is not None and "device" in MODELS[model].param_names():
        params.setdefault("device", device)
    return params


def _ks(value: Any) -> tuple[Any, ...]:
    """The cut-offs as a tuple (one number alone is one cut-off; text is refused, not split
    into its letters)."""
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    raise ConfigError(f"settings: k must be a list of whole numbers, got {value!r}")


def build_train_config(
    *,
    config_file: str | Path | None = None,
    model: str | None = None,
    hyper: dict[str, Any] | None = None,
    params: Sequence[str] = (),
    device: str | None = None,
    seed: int | None = None,
    split: str | None = None,
    test_fraction: float | None = None,
    split_n: int | None = None,
    ks: Sequence[int] | None = None,
    validation_fraction: float | None = None,
    patience: int | None = None,
    eval_users: int | None = None,
    filters: dict[str, Any] | None = None,
    engine: str = "local",
) -> TrainConfig:
    """Merge a settings file and flags (None means "not given"; ``filters``: FILTER_KEYS)
    into a checked config. ``engine="spark"`` makes ``als`` the default model (the one Spark
    trains)."""
    settings: dict[str, Any] = read_toml(config_file) if config_file is not None else {}
    unknown = sorted(set(settings) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{config_file}: unknown settings {', '.join(unknown)}; known: {', '.join(sorted(_TOP_LEVEL))}")
    if not isinstance(settings.get("params", {}), dict):
        raise ConfigError(f"{config_file}: params must be a table (params = {{ factors = 64 }}), got {settings['params']!r}")
    model_params = dict(settings.get("params", {}))
    chosen_model = model or settings.get("model", "als" if engine == "spark" else TrainConfig().model)
    if model is not None and "model" in settings and model != settings["model"]:
        model_params = {}  # the file's hyper-parameters belong to another model
    for key, value in (hyper or {}).items():
        if value is not None:
            model_params[key] = value
    for text in params:
        key, value = parse_param(text)
        model_params[key] = value
    if not isinstance(chosen_model, str) or chosen_model not in MODELS:
        raise ConfigError(f"unknown model {chosen_model!r}; choose one of {', '.join(MODELS)}")
    # Settings written by an earlier version (a logged config.toml) name parameters as it did.
    model_params = MODELS[chosen_model].rename_params(model_params)
    apply_device(chosen_model, model_params, device if device is not None else settings.get("device"))
    unknown_params = sorted(set(model_params) - set(MODELS[chosen_model].param_names()))
    if unknown_params:
        raise ConfigError(
            f"model {chosen_model!r} has no hyper-parameter {', '.join(map(repr, unknown_params))}; "
            f"it takes {', '.join(MODELS[chosen_model].param_names()) or 'none'}"
        )

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else settings.get(key, default)

    default = TrainConfig()
    config = TrainConfig(
        model=chosen_model,
        params=model_params,
        split=pick(split, "split", default.split),
        # No coercion: a file's "half" or 1.5 is refused by check() with the setting's name.
        test_fraction=pick(test_fraction, "test_fraction", default.test_fraction),
        split_n=pick(split_n, "split_n", default.split_n),
        seed=pick(seed, "seed", default.seed),
        ks=_ks(pick(ks, "k", default.ks)),
        validation_fraction=pick(validation_fraction, "validation_fraction", default.validation_fraction),
        validation_metric=settings.get("validation_metric", default.validation_metric),
        patience=pick(patience, "patience", default.patience),
        eval_users=pick(eval_users, "eval_users", default.eval_users),
        **{key: pick((filters or {}).get(key), key, getattr(default, key)) for key in FILTER_KEYS},
    )
    config.check()
    return config
