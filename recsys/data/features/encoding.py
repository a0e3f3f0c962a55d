"""Feature frames as index arrays for a model: value vocabularies and numeric scales
learned once (:class:`FeatureEncoder`, saved as JSON), applied to any aligned frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.features.tables import feature_kinds, is_present
from recsys.errors import InputError


@dataclass
class EncodedFeatures:
    """Index arrays for one side, row ``i`` = vocabulary index ``i``.

    ``categorical`` (n, C) int64, 0 = missing/unknown; ``multi`` a list of (n, L_c)
    int64 arrays padded with 0; ``numeric`` (n, N) float32, standardized, 0 = missing.
    """

    categorical: np.ndarray
    multi: list[np.ndarray]
    numeric: np.ndarray


@dataclass
class FeatureEncoder:
    """Learned value vocabularies and numeric scales of one side's feature columns.

    Saved as JSON (:meth:`to_dict`); unknown values map to 0 ("missing").
    """

    categorical: dict[str, list[str]] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_values: int = 32

    @classmethod
    def fit(cls, frame: pd.DataFrame | None, max_values: int = 32) -> FeatureEncoder:
        enc = cls(max_values=max_values)
        if frame is None:
            return enc
        for name, kind in feature_kinds(frame).items():
            col = frame[name]
            if kind == "numeric":
                v = col.to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                mean = float(v.mean()) if len(v) else 0.0
                std = float(v.std()) if len(v) > 1 else 1.0
                enc.numeric[name] = (mean, std if std > 0 else 1.0)
            elif kind == "multi":
                enc.multi[name] = sorted({t for vals in col if isinstance(vals, (tuple, list)) for t in vals})
            elif kind == "categorical":
                enc.categorical[name] = sorted({str(v) for v in col if is_present(v)})
        return enc

    @property
    def cardinalities(self) -> tuple[list[int], list[int], int]:
        """(values+1 per categorical, tokens+1 per multi, number of numeric columns)."""
        return (
            [len(v) + 1 for v in self.categorical.values()],
            [len(v) + 1 for v in self.multi.values()],
            len(self.numeric),
        )

    def transform(self, frame: pd.DataFrame | None, n: int) -> EncodedFeatures:
        """Encode ``n`` rows of ``frame`` (columns by name; absent columns are missing)."""
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        multi = []
        has = (lambda c: False) if frame is None else (lambda c: c in frame.columns)
        for j, (name, values) in enumerate(self.categorical.items()):
            if has(name):
                col = frame[name]
                # One vectorized lookup; unknown values (-1) and missing ones become 0.
                found = pd.Index(values).get_indexer(col.astype(str)) + 1
                cat[:, j] = np.where(col.notna().to_numpy(), found, 0)
        for name, tokens in self.multi.items():
            lookup = {v: i + 1 for i, v in enumerate(tokens)}
            # A table of new rows may hold one value per row, read as text: split it as training did.
            column = [tuple(v.split("|")) if isinstance(v, str) else v for v in frame[name]] if has(name) else []
            rows = [[lookup[t] for t in vals if t in lookup][: self.max_values] if isinstance(vals, (tuple, list)) else []
                    for vals in column]
            width = max([1, *map(len, rows)])
            arr = np.zeros((n, width), dtype=np.int64)
            for r, ixs in enumerate(rows):
                arr[r, : len(ixs)] = ixs
            multi.append(arr)
        for j, (name, (mean, std)) in enumerate(self.numeric.items()):
            if has(name):
                raw = pd.to_numeric(frame[name], errors="coerce")
                bad = raw.isna() & frame[name].notna()
                if bad.any():
                    row = int(np.flatnonzero(bad.to_numpy())[0])
                    raise InputError(f"column {name!r}, row {row + 1}: expected a number (the model was trained "
                                     f"with numbers there), got {frame[name].iloc[row]!r}")
                v = (raw.to_numpy(dtype=np.float64) - mean) / std
                num[:, j] = np.where(np.isfinite(v), v, 0.0)
        return EncodedFeatures(cat, multi, num)

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": self.categorical,
            "multi": self.multi,
            "numeric": {k: list(v) for k, v in self.numeric.items()},
            "max_values": self.max_values,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(
            categorical={k: list(v) for k, v in d.get("categorical", {}).items()},
            multi={k: list(v) for k, v in d.get("multi", {}).items()},
            numeric={k: (float(v[0]), float(v[1])) for k, v in d.get("numeric", {}).items()},
            max_values=int(d.get("max_values", 32)),
        )
