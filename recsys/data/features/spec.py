"""Feature-table specs: the id column and each column's type, from a string or a TOML file."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from recsys.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Kind = Literal["categorical", "multi", "numeric", "skip"]
KINDS: tuple[str, ...] = ("categorical", "multi", "numeric", "skip")


@dataclass(frozen=True)
class ColumnSpec:
    """The type of one feature column; ``sep`` splits a ``multi`` column's values."""

    kind: Kind
    sep: str = "|"


@dataclass
class FeatureSpec:
    """Overrides for reading a feature file: the id column and column types."""

    id_column: str | None = None
    columns: dict[str, ColumnSpec] = field(default_factory=dict)


def _column_spec(text: str, where: str) -> ColumnSpec:
    kind, colon, sep = text.strip().partition(":")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown feature type {kind!r}; use {', '.join(KINDS)}")
    if kind == "multi":
        if colon and not sep:
            # "multi:" names a separator and then gives none: say so rather than guess "|".
            raise ConfigError(f"{where}: 'multi:' needs a separator after the colon (multi:| or multi:comma), "
                              "or none at all for '|'")
        return ColumnSpec("multi", {"tab": "\t", "comma": ",", "space": " "}.get(sep, sep) or "|")
    if colon:
        raise ConfigError(f"{where}: only multi takes a separator ({kind}:{sep})")
    return ColumnSpec(kind)  # type: ignore[arg-type]


def parse_spec(spec: str | os.PathLike | FeatureSpec | None) -> FeatureSpec:
    """A :class:`FeatureSpec` from ``"col=kind[:sep],...,id=COL"``, a TOML path, or as given."""
    if spec is None:
        return FeatureSpec()
    if isinstance(spec, FeatureSpec):
        return spec
    text = os.fspath(spec)
    if text.endswith(".toml"):
        return _toml_spec(text)
    out = FeatureSpec()
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"feature spec entries look like column=type, got {part!r}")
        name, value = name.strip(), value.strip()
        if name == "id" and value.partition(":")[0] not in KINDS:
            out.id_column = value
        else:
            out.columns[name] = _column_spec(value, "feature spec")
    return out


def _toml_spec(path: str) -> FeatureSpec:
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such feature spec file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(table) - {"id", "columns"})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}; use id and [columns]")
    columns = table.get("columns", {})
    if not isinstance(columns, dict):
        raise ConfigError(f"{path}: [columns] must be a table of column = \"type\"")
    return FeatureSpec(table.get("id"), {str(k): _column_spec(str(v), path) for k, v in columns.items()})
