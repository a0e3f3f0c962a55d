"""A trained model as an MLflow pyfunc model, and back.

The pyfunc model is logged "from code" (:mod:`recsys.tracking._pyfunc_model` is the
model's code file): nothing of ours is pickled. The saved model directory travels as
the pyfunc artifact ``recsys_model``; the recsys package travels as ``code_paths`` and
its third-party requirements are declared, so the model loads in a fresh environment::

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict(pd.DataFrame({"user": ["196", "186"], "k": 10}))

returns one row per recommendation: ``user``, ``rank`` (1 = best), ``item``, ``score``,
``fallback`` (in the data's own ids; seen items excluded; users unknown to the model get
the most popular items, ``fallback`` True and a NaN score). :func:`load_recommender` turns ``runs:/...``,
``models:/...`` or a local directory into the :class:`~recsys.models.Recommender` itself.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import recsys
from recsys.artifacts import OutputKind, atomic_directory
from recsys.errors import ModelFormatError, RecsysError, TrackingError

ARTIFACT = "recsys_model"
DOWNLOADED_MODEL = OutputKind("downloaded MLflow model", directory=True, marker="MLmodel")
"""Name of the pyfunc artifact that holds the model directory."""
MODEL_NAME = "model"
"""Name the pyfunc model is logged under: ``runs:/<run id>/model``."""
DEFAULT_K = 10
_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_ENTRY = Path(__file__).with_name("_pyfunc_model.py")
# What ``import recsys.models`` needs at serving time (training-only tools left out).
_SERVING_PACKAGES = ("numpy", "scipy", "pandas", "pyarrow", "torch", "implicit", "annoy")


def recommend_frame(model: Any, frame: pd.DataFrame, k: int = DEFAULT_K) -> pd.DataFrame:
    """Top-``k`` items for each row's ``user`` (a ``k`` column overrides ``k`` per row).

    Returns a long table with columns ``user``, ``rank``, ``item``, ``score``,
    ``fallback`` (True for users unknown to the model: the most popular items, score
    NaN); padding (fewer than ``k`` unseen items) is dropped.
    """
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if "user" not in frame.columns:
        raise ValueError(f"input needs a 'user' column, got columns {list(frame.columns)}")
    users = frame["user"].to_numpy()
    ks = frame["k"].fillna(k).astype(int).to_numpy() if "k" in frame.columns else np.full(len(users), k)
    if len(ks) and ks.min() < 1:
        raise ValueError("k must be a positive integer")
    users = _as_ints(users) if model.users.is_integer else users.astype(str)
    parts = []
    for value in np.unique(ks):
        rows = np.flatnonzero(ks == value)
        ids, scores = model.recommend(users[rows], int(value))
        ids, scores = np.asarray(ids), np.asarray(scores)
        unknown = ~np.asarray(model.users.contains(users[rows]), dtype=bool)
        part = pd.DataFrame({
            "order": np.repeat(rows, value),
            "user": np.repeat(users[rows], value),
            "rank": np.tile(np.arange(1, value + 1), len(rows)),
            "item": ids.reshape(-1),
            "score": scores.reshape(-1).astype(float),
            "fallback": np.repeat(unknown, value),
        })
        parts.append(part)
    if not parts:
        return pd.DataFrame({"user": users, "rank": [], "item": [], "score": [], "fallback": []})
    out = pd.concat(parts).sort_values(["order", "rank"], kind="stable")
    out = out[out["score"] != -np.inf]  # padding: the user has seen nearly everything
    return out.drop(columns="order").reset_index(drop=True)


def _as_ints(values: np.ndarray) -> np.ndarray:
    try:
        return values.astype(np.int64)
    except (TypeError, ValueError):
        return values


def serving_requirements() -> list[str]:
    """Pinned pip requirements of the serving code (recsys itself ships as code)."""
    reqs = []
    for name in _SERVING_PACKAGES:
        try:
            # A local build tag (torch's "+cpu") is not on PyPI: pin the release itself.
            reqs.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def log_pyfunc(model_dir: str | os.PathLike, name: str = MODEL_NAME) -> Any:
    """Log a saved model directory as a pyfunc model of the active MLflow run."""
    import shutil
    import tempfile

    import mlflow

    with _quiet_mlflow(), tempfile.TemporaryDirectory(prefix="recsys-code-") as tmp:
        # The package's source without byte code travels with the model.
        code = shutil.copytree(Path(recsys.__file__).resolve().parent, Path(tmp) / "recsys",
                               ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_ENTRY),
            artifacts={ARTIFACT: str(model_dir)},
            code_paths=[str(code)],
            pip_requirements=serving_requirements(),
        )


def _quiet_mlflow() -> Any:
    import contextlib
    import logging
    import sys
    import warnings

    @contextlib.contextmanager
    def quiet():
        logger = logging.getLogger("mlflow")
        level = logger.level
        logger.setLevel(logging.ERROR)
        bar = os.environ.get(_PROGRESS_ENV)
        os.environ[_PROGRESS_ENV] = "false"
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                yield
        finally:
            logger.setLevel(level)
            if bar is None:
                os.environ.pop(_PROGRESS_ENV, None)
            else:
                os.environ[_PROGRESS_ENV] = bar

    return quiet()


def is_model_uri(source: str | os.PathLike) -> bool:
    """True for MLflow URIs (``runs:/``, ``models:/``, ``s3://``...) rather than local paths."""
    text = os.fspath(source)
    if Path(text).exists():
        return False
    scheme, sep, _ = text.partition(":")
    return bool(sep) and len(scheme) > 1 and scheme.replace("-", "").isalnum()


def resolve_model_dir(source: str | os.PathLike, tracking_uri: str | None = None) -> Path:
    """A local recsys model directory for a directory, a pyfunc model directory or an MLflow URI.

    URIs (``runs:/<id>/model``, ``models:/<name>/<version>``) are downloaded from the
    tracking store (``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
    """
    if is_model_uri(source):
        import mlflow
        from mlflow.artifacts import download_artifacts

        from recsys.tracking.store import check_store, resolve_uri

        uri = resolve_uri(tracking_uri)
        cached = _download_cache(os.fspath(source), uri)
        if cached is not None and (cached / "MLmodel").is_file():
            return _pyfunc_artifact(cached)
        check_store(uri)
        # download_artifacts resolves a logged model through the global store whatever its
        # tracking_uri argument says: point the global store at ours first.
        mlflow.set_tracking_uri(uri)
        try:
            with _quiet_mlflow():
                path = Path(download_artifacts(artifact_uri=os.fspath(source), tracking_uri=uri,
                                               dst_path=tempfile.mkdtemp(dir=_session_dir())))
            if cached is not None:
                path = _keep(path, cached)
        except Exception as exc:  # MLflow raises many kinds for a missing run or model
            raise TrackingError(f"cannot fetch model {source} from {uri}: {exc}") from None
    else:
        path = Path(source)
    if (path / "MLmodel").is_file():
        path = _pyfunc_artifact(path)
    return path


# A logged model never changes once written: a run's model, or a logged model by its id.
# Those are downloaded once. A registered name's version number can be deleted and reused,
# and an alias or "latest" moves: those are fetched each time.
_IMMUTABLE = re.compile(r"^(runs:/[0-9a-f]+/.+|models:/m-[0-9a-f]+)$")
CACHE_ENV = "RECSYS_MODEL_CACHE"


def _download_cache(source: str, uri: str) -> Path | None:
    """Where a downloaded model is kept (``$RECSYS_MODEL_CACHE``, default
    ``~/.cache/recsys/models``), keyed by the store and the URI; None when it may change."""
    if not _IMMUTABLE.match(source):
        return None
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys" / "models")
    return root / hashlib.sha256(f"{_absolute_store(uri)}\n{source}".encode()).hexdigest()[:32]


def _absolute_store(uri: str) -> str:
    """The store's URI with a relative path made absolute: ``sqlite:///mlflow.db`` in two
    projects is two stores, and two caches."""
    import urllib.parse

    from recsys.tracking.store import local_store_path

    path = local_store_path(uri)
    return uri if path is None else f"{urllib.parse.urlparse(uri).scheme or 'file'}:{path.resolve()}"


@functools.cache
def _session_dir() -> str:
    """A folder for this process's downloads, removed when it exits."""
    path = tempfile.mkdtemp(prefix="recsys-models-")
    atexit.register(shutil.rmtree, path, True)
    return path


def _keep(downloaded: Path, cached: Path) -> Path:
    """Copy a download into the cache, whole or not at all; the download itself (removed
    at exit) where the cache cannot be written."""
    try:
        with atomic_directory(cached, kind=DOWNLOADED_MODEL) as tmp:
            shutil.copytree(downloaded, tmp, dirs_exist_ok=True)
    except (RecsysError, OSError):
        return downloaded
    shutil.rmtree(downloaded, ignore_errors=True)
    return cached


def _pyfunc_artifact(path: Path) -> Path:
    import yaml

    conf = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8")) or {}
    artifacts = conf.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    entry = artifacts.get(ARTIFACT)
    if not entry:
        raise ModelFormatError(f"{path}: an MLflow model without a recsys model in it (no {ARTIFACT!r} artifact)")
    return path / entry["path"]


def load_recommender(source: str | os.PathLike, tracking_uri: str | None = None) -> Any:
    """Load a model from a directory or an MLflow model URI (``runs:/<id>/model``, ``models:/...``).

    >>> model = load_recommender("runs:/3f2a.../model")
    >>> ids, scores = model.recommend("196", k=10)
    """
    from recsys.models import load_model

    return load_model(resolve_model_dir(source, tracking_uri))


def _python_model_class() -> type:
    """The pyfunc class, built lazily so importing this module does not import MLflow."""
    import mlflow.pyfunc

    class RecommenderModel(mlflow.pyfunc.PythonModel):
        """Top-N recommendations of a recsys model as an MLflow pyfunc model."""

        def load_context(self, context):
            from recsys.models import load_model

            self.model = load_model(context.artifacts[ARTIFACT])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            k = int((params or {}).get("k", DEFAULT_K))
            return recommend_frame(self.model, model_input, k)

    return RecommenderModel


def python_model() -> Any:
    """An instance of the pyfunc class (what the model's code file hands to ``set_model``)."""
    return _python_model_class()()
