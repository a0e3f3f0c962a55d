"""One check of hyper-parameter values against the constructor's annotations.

Every way a setting reaches a model (flags, ``-p``, a ``--config`` file, a grid, a tuned
config, a saved ``model.json``) ends in :meth:`Recommender.from_params` or ``fit``, and
both call :func:`check_params`: a whole number where ``int`` is declared (not ``True``,
not ``2.5``), a finite number where ``float`` is (not NaN, not infinity, not text), one of
the declared choices for a ``Literal``. Ranges (``factors >= 1``) stay with each model.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import numpy as np

from recsys.errors import ConfigError


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # an annotation only a type checker can resolve
        return {}


def check_params(cls: type, params: Mapping[str, Any], owner: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first value its annotation does not admit
    (``owner`` names what the settings belong to; default: the model)."""
    hints = _hints(cls)
    for name, value in params.items():
        hint = hints.get(name)
        if hint is not None and not _admits(hint, value):
            where = owner or f"model {getattr(cls, 'name', cls.__name__)!r}"
            raise ConfigError(f"{where}: {name} must be {_describe(hint)}, got {value!r}")


def _options(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is Union or isinstance(hint, types.UnionType):
        return tuple(o for arg in typing.get_args(hint) for o in _options(arg))
    return (hint,)


def _admits(hint: Any, value: Any) -> bool:
    for option in _options(hint):
        origin = typing.get_origin(option)
        if origin is Literal:
            if value in typing.get_args(option) and not isinstance(value, bool | float):
                return True
        elif option is type(None):
            if value is None:
                return True
        elif option is bool:
            if isinstance(value, bool | np.bool_):
                return True
        elif option is int:
            if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
                return True
        elif option is float:
            if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_):
                try:
                    if math.isfinite(value):  # an integer too large for a float overflows here
                        return True
                except OverflowError:
                    pass
        elif option is str:
            if isinstance(value, str):
                return True
        elif origin in (tuple, list):
            if isinstance(value, tuple | list) and all(_admits(typing.get_args(option)[0], v) for v in value):
                return True
        elif origin is dict:
            if isinstance(value, dict):
                return True
        else:  # arrays, sequences, callables: not a setting a user types
            return True
    return False


def _describe(hint: Any) -> str:
    words = []
    for option in _options(hint):
        if typing.get_origin(option) is Literal:
            words.append("one of " + ", ".join(repr(v) for v in typing.get_args(option)))
        elif option is type(None):
            words.append("unset (None)")
        elif typing.get_origin(option) in (tuple, list):
            words.append(f"a list (each {_describe(typing.get_args(option)[0])})")
        elif typing.get_origin(option) is dict:
            words.append("a table")
        else:
            words.append({bool: "true or false", int: "a whole number", float: "a finite number",
                          str: "text"}.get(option, str(option)))
    return " or ".join(dict.fromkeys(words))
