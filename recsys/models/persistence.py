"""A model's directory: what :meth:`Recommender.save` writes and :meth:`Recommender.load` checks.

Layout: ``model.json`` (type, hyper-parameters and the values "auto" chose, format version,
shapes, training fingerprint, per-file SHA-256), ``factors.npz`` (factors, biases,
popularity, model-specific arrays as ``extra_*``), ``vocabulary.npz`` (the id maps) and
``seen.npz`` (the training matrix's pattern). No pickle; every array's dtype, shape and
finiteness is checked on load, and a directory altered or damaged after saving is refused
with :class:`~recsys.errors.ModelFormatError`, never crashed on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

import recsys
from recsys.artifacts import (
    OutputKind,
    inside,
    json_format,
    load_arrays,
    read_description,
    save_arrays,
    sha256_file,
    write_json,
)
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ModelFormatError

FORMAT_NAME = "recsys-model"
FORMAT_VERSION = 1
META = "model.json"
MODEL_DIRECTORY = OutputKind("model directory", directory=True, marker=META, recognise=json_format(FORMAT_NAME))
FACTORS = "factors.npz"
VOCABULARY = "vocabulary.npz"
SEEN = "seen.npz"
DATA_FILES = (FACTORS, VOCABULARY, SEEN)


def write_model(model: Any, directory: Path) -> None:
    """Write ``model``'s files and ``model.json`` into ``directory`` (the caller makes it atomic)."""
    factors = {"user_factors": model.user_factors, "item_factors": model.item_factors,
               "item_popularity": model.item_popularity}
    if model.has_bias:
        factors.update(user_bias=model.user_bias, item_bias=model.item_bias,
                       global_bias=np.asarray(model.global_bias, dtype=np.float32))
    for name, arr in model._extra_arrays().items():
        factors[f"extra_{name}"] = arr
    save_arrays(directory / FACTORS, factors)
    save_arrays(directory / VOCABULARY, {**model.users.to_arrays("users"), **model.items.to_arrays("items")})
    save_arrays(directory / SEEN, {"indptr": model.seen.indptr, "indices": model.seen.indices})
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "params": model.get_params(),
        # A model assembled by hand (factors set, not fitted) was "trained" with its params.
        "fitted_params": model.__dict__.get("fitted_params", model.get_params()),
        "data_shape": model.data_shape,
        "n_users": len(model.users),
        "n_items": len(model.items),
        "factors": int(model.item_factors.shape[1]),
        "has_bias": model.has_bias,
        "rating_range": None if model.rating_range is None else list(model.rating_range),
        "training_fingerprint": model.training_fingerprint,
        "fit_seconds": model.fit_seconds,
        "history": model.history,
        "recsys_version": recsys.__version__,
        "files": {name: sha256_file(directory / name) for name in DATA_FILES},
    }
    write_json(directory / META, meta)


def read_meta(path: Path) -> dict[str, Any]:
    """``model.json`` of the directory ``path``, its format checked and every data file
    present and matching its checksum."""
    if not path.is_dir():
        raise ModelFormatError(f"{path}: not a model directory (no such directory)")
    meta = read_description(path / META, format=FORMAT_NAME, version=FORMAT_VERSION, what="model", where=path,
                            advice="re-train or use the recsys version that wrote it")
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != set(DATA_FILES):
        raise ModelFormatError(f"{path}: {META} does not list the model's files")
    for name in DATA_FILES:
        file = inside(path, name)  # a data file linked out of the directory is refused
        if not file.is_file():
            raise ModelFormatError(f"{path}: missing {name}")
        if sha256_file(file) != files[name]:
            raise ModelFormatError(f"{path}: {name} does not match its checksum (corrupt or altered)")
    return meta


def read_model(model: Any, path: Path, meta: dict[str, Any]) -> None:
    """Set ``model``'s learned state from the directory ``path`` (``meta`` from :func:`read_meta`)."""
    try:
        _read(model, path, meta)
    except (KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
        # Whatever else a damaged or hand-edited directory holds is refused, not crashed on.
        raise ModelFormatError(f"{path}: inconsistent model files ({type(exc).__name__}: {exc})") from None


def _read(model: Any, path: Path, meta: dict[str, Any]) -> None:
    factors = load_arrays(path / FACTORS)
    vocab = load_arrays(path / VOCABULARY)
    try:
        model.users = Vocabulary.from_arrays(vocab, "users")
        model.items = Vocabulary.from_arrays(vocab, "items")
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {VOCABULARY}: {exc}") from None
    n_users, n_items = len(model.users), len(model.items)
    if (meta.get("n_users"), meta.get("n_items")) != (n_users, n_items):
        raise ModelFormatError(f"{path}: id maps do not match the sizes in {META}")
    _check_factors(factors, meta, n_users, n_items, path)
    model.user_factors = factors["user_factors"].astype(np.float32, copy=False)
    model.item_factors = factors["item_factors"].astype(np.float32, copy=False)
    model.item_popularity = factors["item_popularity"].astype(np.int64, copy=False)
    if meta.get("has_bias"):
        model.user_bias = factors["user_bias"].astype(np.float32, copy=False)
        model.item_bias = factors["item_bias"].astype(np.float32, copy=False)
        model.global_bias = float(factors["global_bias"])
    for name in ("user_factors", "item_factors"):
        if not np.isfinite(getattr(model, name)).all():
            raise ModelFormatError(f"{path}: {name} holds non-finite values")
    model.seen = _read_seen(path, n_users, n_items)
    model.training_fingerprint = str(meta.get("training_fingerprint", ""))
    model.fit_seconds = float(meta.get("fit_seconds", 0.0))
    model.rating_range = _rating_range(meta.get("rating_range"), path)
    model.history = list(meta.get("history", []))
    fitted = meta.get("fitted_params")
    # Models saved before "auto" existed were trained with their params as given.
    model.fitted_params = model.rename_params(fitted) if isinstance(fitted, dict) else model.get_params()
    if set(model.fitted_params) != set(model.get_params()):
        raise ModelFormatError(f"{path}: {META}'s fitted_params do not match the model's hyper-parameters")
    shape = meta.get("data_shape")
    model.data_shape = dict(shape) if isinstance(shape, dict) else None
    model._load_extra_arrays({k[6:]: v for k, v in factors.items() if k.startswith("extra_")})


def _rating_range(value: Any, path: Path) -> tuple[float, float] | None:
    """``model.json``'s rating range: two finite numbers, low first; absent (models saved
    before it was recorded) is None, and their predictions are not clipped."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int | float) for v in value)
            or not all(math.isfinite(v) for v in value) or value[0] > value[1]):
        raise ModelFormatError(f"{path}: {META}'s rating_range must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def _check_factors(factors: dict[str, np.ndarray], meta: dict[str, Any], n_users: int, n_items: int,
                   path: Path) -> None:
    d = meta.get("factors")
    expected = {"user_factors": (n_users, d), "item_factors": (n_items, d), "item_popularity": (n_items,)}
    if meta.get("has_bias"):
        expected.update(user_bias=(n_users,), item_bias=(n_items,), global_bias=())
    for name, shape in expected.items():
        if name not in factors:
            raise ModelFormatError(f"{path}: {FACTORS} lacks {name}")
        if factors[name].dtype.kind not in "fiu":
            raise ModelFormatError(f"{path}: {name} has dtype {factors[name].dtype}, expected real numbers")
        if factors[name].shape != shape:
            raise ModelFormatError(f"{path}: {name} has shape {factors[name].shape}, expected {shape} from {META}")


def _read_seen(path: Path, n_users: int, n_items: int) -> sp.csr_matrix:
    seen = load_arrays(path / SEEN)
    indptr, indices = seen.get("indptr"), seen.get("indices")
    if (
        indptr is None or indices is None or indptr.shape != (n_users + 1,)
        or indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0)
        or (len(indices) and (indices.min() < 0 or indices.max() >= n_items))
    ):
        raise ModelFormatError(f"{path}: {SEEN} is inconsistent with the model's shape")
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))
