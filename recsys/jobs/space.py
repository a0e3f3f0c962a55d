"""What ``recsys tune`` searches: the dimensions of each model's space, how a space is read
from TOML, how a point of it becomes hyper-parameters, and how long a search may take."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from recsys.errors import ConfigError
from recsys.models import MODELS, create_model
from recsys.models.auto import AUTO


@dataclass(frozen=True)
class Dimension:
    """One searched hyper-parameter: a float or int range (optionally log-scaled) or choices.

    A ``relative`` range is a multiplier of the value the model's ``"auto"`` rule gives the
    data (:mod:`recsys.models.auto`): alpha x [1/4, 4] suits a dense log and a sparse one
    alike, where any fixed range of alpha fits one density only.
    """

    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    relative: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"{'auto x ' if self.relative else ''}[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


def _f(low: float, high: float, log: bool = True) -> Dimension:
    return Dimension("float", low, high, log)


def _x(low: float, high: float) -> Dimension:
    """A multiplier of the ``"auto"`` value, log-scaled."""
    return Dimension("float", low, high, True, relative=True)


def _c(*choices: Any) -> Dimension:
    return Dimension("categorical", choices=choices)


SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    # Relative ranges first: ALS's ridge rule reads the alpha chosen before it.
    "als": {
        "alpha": _x(0.25, 4.0),
        "regularization": _x(0.1, 10.0),
        "factors": _c(64, 128, 256, 512),
        "epochs": _c(10, 15, 25),
        "weighting": _c("auto", "binary", "log", "linear"),
    },
    "ials": {
        "unobserved_weight": _x(0.1, 10.0),
        "factors": _c(64, 128, 256, 512),
        "regularization": _f(1e-3, 0.1),
        "epochs": _c(8, 16, 24),
        "weighting": _c("auto", "binary", "log", "linear"),
    },
    "mf": {
        "factors": _c(32, 64, 128),
        "learning_rate": _f(1e-3, 0.1),
        "regularization": _f(1e-5, 0.1),
        "epochs": _c(10, 20, 40),
        "loss": _c("bpr", "softmax"),
        "negatives": _c(64, 256, 1024),
    },
    "two-tower": {
        "factors": _c(32, 64, 128),
        "learning_rate": _f(5e-4, 1e-2),
        "temperature": _f(0.03, 0.3),
        "id_dropout": _c(0.0, 0.25, 0.5),
        "epochs": _c(10, 20, 30),
        "regularization": _c(0.0, 1e-4, 1e-2),
        "lr_schedule": _c("constant", "cosine"),
    },
}
"""Default search spaces of ``recsys tune`` per model (the model defaults themselves come from
the leave-one-data-set-out search in ``experiments/quality``; see the README)."""


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``5m``, ``1.5h`` (a number alone is seconds)."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text).lower())
        if match is None:
            raise ConfigError(f"a time budget looks like 90s, 5m or 1.5h, not {text!r}")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"a time budget must be positive, got {text!r}")
    return seconds


def parse_space(spec: Mapping[str, Any], model: str) -> dict[str, Dimension]:
    """A search space from TOML-like data: ``name = [choices]`` or ``name = {low, high, log, int}``."""
    known = set(MODELS[model].param_names())
    space: dict[str, Dimension] = {}
    for name, value in spec.items():
        if name not in known:
            raise ConfigError(f"model {model!r} has no hyper-parameter {name!r}; it takes {', '.join(sorted(known))}")
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"search space for {name!r} lists no choices")
            space[name] = _c(*value)
        elif isinstance(value, Mapping) and {"low", "high"} <= set(value):
            kind = "int" if value.get("int") else "float"
            low, high = float(value["low"]), float(value["high"])
            relative = bool(value.get("relative", False))
            if not low < high or ((value.get("log") or relative) and low <= 0):
                raise ConfigError(f"search range for {name!r} must have 0 < low < high (log, relative) or low < high")
            space[name] = Dimension(kind, low, high, bool(value.get("log", False)) or relative, relative=relative)
        else:
            raise ConfigError(f"search space for {name!r} must be a list of choices or a table with low and high")
    return space


def absolute(model: str, fixed: Mapping[str, Any], search: Mapping[str, Dimension], point: Mapping[str, Any],
              data: Any) -> dict[str, Any]:
    """The hyper-parameters of a trial ``point`` for ``data``: relative values times what the
    ``"auto"`` rule gives ``data`` (in the space's order: a rule may read a value set before it)."""
    params = {**fixed, **{k: v for k, v in point.items() if not search[k].relative}}
    for name, dim in search.items():
        if dim.relative:
            base = create_model(model, **{**params, name: AUTO}).resolved_params(data)[name]
            params[name] = float(point[name]) * float(base)
    return params


def default_point(model: str, search: Mapping[str, Dimension]) -> dict[str, Any]:
    """The model's defaults as a point of the space (1 for relative dimensions); a default
    outside a dimension's range is left to the sampler."""
    defaults = {p.name: p.default for p in inspect.signature(MODELS[model].__init__).parameters.values()}
    point: dict[str, Any] = {}
    for name, dim in search.items():
        value = defaults.get(name)
        if dim.relative and value == AUTO:
            point[name] = 1.0
        elif _holds(dim, value):
            point[name] = value
    return point


def _holds(dim: Dimension, value: Any) -> bool:
    if dim.kind == "categorical":
        return value in dim.choices
    return not dim.relative and isinstance(value, int | float) and dim.low <= value <= dim.high


def describe_space(space: Mapping[str, Dimension]) -> list[str]:
    return [f"{name} in {dim.describe()}" for name, dim in space.items()]

