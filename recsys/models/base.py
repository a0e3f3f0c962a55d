"""The one small base every model shares: fit, recommend, similar_items, save, load.

A model learns ``user_factors`` (n_users, d) and ``item_factors`` (n_items, d); the score
of a (user, item) pair is their dot product, plus biases for models that have them. Biases
fold into two extra dimensions (:meth:`Recommender.user_vectors`,
:meth:`Recommender.item_vectors`), so exact search, Annoy and evaluation all rank by one
dot product that equals the model's own score.
"""

from __future__ import annotations

import inspect
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.artifacts import (
    atomic_directory,
)
from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.device import resolve_device
from recsys.embeddings import Embeddings, ExactIndex, cosine_neighbours
from recsys.errors import (
    DIVERGENCE_ADVICE,
    ConfigError,
    ModelFormatError,
    RecsysError,
    TrainingDiverged,
)
from recsys.models import persistence
from recsys.models.auto import DataShape, describe
from recsys.models.params import check_params


class NotFittedError(RecsysError):
    """The model is used before ``fit`` (or ``load``)."""


@dataclass
class FoldIn:
    """Users embedded from a history by :meth:`Recommender.fold_in`.

    ``users``: the history's users; ``vectors`` (n, d'): their query vectors (bias-folded
    like :meth:`Recommender.user_vectors`); ``seen`` (n, n_items) CSR: their history
    items, to exclude; ``dropped_entries``: history entries whose item the model does not
    know.
    """

    users: Vocabulary
    vectors: np.ndarray
    seen: sp.csr_matrix
    dropped_entries: int = 0

    def has_history(self) -> np.ndarray:
        """Which users have at least one entry the model could use, shape (n,)."""
        return np.diff(self.seen.indptr) > 0


class Recommender(ABC):
    """Base of every model.

    Subclasses take their hyper-parameters as keyword arguments of ``__init__`` (stored
    unchanged, validated in ``fit``) and implement :meth:`_fit`, which sets
    ``user_factors`` and ``item_factors`` (and optionally ``user_bias``, ``item_bias``,
    ``global_bias``).

    Learned attributes, set by :meth:`fit` or :meth:`load`:

    - ``users``, ``items``: :class:`Vocabulary` of the training data
    - ``user_factors`` (n_users, d), ``item_factors`` (n_items, d): float32 arrays
    - ``seen``: CSR (n_users, n_items) of training entries, for excluding seen items
    - ``item_popularity`` (n_items,): training users per item, for cold-user fallbacks
    - ``training_fingerprint``: content hash of the training data
    - ``fitted_params``: the hyper-parameters training used, with each ``"auto"`` replaced
      by the value its rule chose for the data (:mod:`recsys.models.auto`);
      ``data_shape`` the shape they were chosen for (None when nothing was ``"auto"``)
    """

    name: ClassVar[str] = ""
    predicts_ratings: ClassVar[bool] = False
    uses_features: ClassVar[bool] = False
    """Whether ``fit`` reads user and item feature tables (attached to the interactions)."""
    trains_by_epoch: ClassVar[bool] = False
    """Whether ``fit`` runs the shared epoch loop (callbacks, validation, progress, checkpoints)."""
    data_parallel: ClassVar[bool] = False
    """Whether ``fit`` trains data-parallel in a process group (``--nproc``, torchrun; see
    :mod:`recsys.distributed`): each process a shard of the pairs, gradients averaged."""
    legacy_params: ClassVar[dict[str, Any]] = {}
    """Values of hyper-parameters added after the first release, for models saved before them."""
    renamed_params: ClassVar[dict[str, tuple[str, Callable[[Any], Any]]]] = {}
    """Hyper-parameters renamed since the first release: old name -> (new name, a function
    from the old value to the new one), for models and checkpoints saved before the rename."""

    users: Vocabulary
    items: Vocabulary
    user_factors: np.ndarray
    item_factors: np.ndarray
    seen: sp.csr_matrix
    item_popularity: np.ndarray
    training_fingerprint: str
    user_bias: np.ndarray | None = None
    item_bias: np.ndarray | None = None
    global_bias: float = 0.0
    rating_range: tuple[float, float] | None = None  # the training ratings' (min, max); rating models
    fit_seconds: float = 0.0
    history: list[dict[str, float]]
    fitted_params: dict[str, Any]
    data_shape: dict[str, Any] | None = None
    best_epoch: int | None = None  # the epoch whose factors were kept (early stopping)

    # -- hyper-parameters -------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given to the constructor."""
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Recommender:
        unknown = sorted(set(params) - set(cls.param_names()))
        if unknown:
            raise ConfigError(
                f"model {cls.name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(cls.param_names())}"
            )
        check_params(cls, params)
        return cls(**params)

    @classmethod
    def rename_params(cls, saved: Mapping[str, Any]) -> dict[str, Any]:
        """Saved hyper-parameters (a model's, a checkpoint's, a stored run's) under today's
        names: each one in :attr:`renamed_params` under its new name, its value converted."""
        return dict(cls.rename_param(name, value) for name, value in saved.items())

    @classmethod
    def rename_param(cls, name: str, value: Any) -> tuple[str, Any]:
        """One saved hyper-parameter under today's name, its value converted."""
        if name not in cls.renamed_params:
            return name, value
        new, convert = cls.renamed_params[name]
        return new, convert(value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, data: Interactions, **fit_options: Any) -> Recommender:
        """Learn from ``data`` and return ``self``.

        Keyword options are passed to the model's training (``callbacks``,
        ``validation``, ``progress`` for iterative models).
        """
        if data.nnz == 0:
            raise ConfigError("cannot fit on data with no interactions")
        check_params(type(self), self.get_params())
        self._check_memory(data)
        self.fitted_params, shape = self._resolve_params(data)
        self.data_shape = None if shape is None else shape.to_dict()
        self._validate_params()
        self.users = data.users
        self.items = data.items
        self.seen = _binary(data.matrix)
        self.item_popularity = data.item_counts()
        self.training_fingerprint = data.fingerprint()
        self.history = []
        self.best_epoch = None
        ratings = data.matrix.data
        self.rating_range = ((float(ratings.min()), float(ratings.max()))
                             if self.predicts_ratings and data.feedback == "rating" else None)
        start = time.perf_counter()
        self._fit(data, **fit_options)
        self.fit_seconds = time.perf_counter() - start
        self.user_factors = np.ascontiguousarray(self.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        if not (np.isfinite(self.user_factors).all() and np.isfinite(self.item_factors).all()):
            # Never hand on (or save) a model that cannot score: the loader would refuse it.
            raise TrainingDiverged(f"{self.name}: training produced non-finite factors; nothing was saved. "
                                   f"{DIVERGENCE_ADVICE}")
        return self

    # Copies of the factor tables training holds at once (the tables, gradients or solver
    # state, optimizer moments): a lower bound used to refuse what cannot fit.
    memory_copies: int = 4

    def _check_memory(self, data: Interactions) -> None:
        """Refuse, before allocating, factor tables that cannot fit in this machine's memory
        (a typo such as ``--factors 100000000`` would take the machine's memory with it)."""
        factors = getattr(self, "factors", None)
        if not isinstance(factors, int) or factors < 1:
            return
        table = (data.n_users + data.n_items) * factors * 4
        work = self._work_bytes(data, factors)
        device = getattr(self, "device", "cpu")
        # On a GPU the training copies live in its memory; the host keeps the final tables.
        on_gpu = isinstance(device, str) and device != "cpu" and resolve_device(device).type == "cuda"
        places = [("this machine", table if on_gpu else table * self.memory_copies + work,
                   os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))]
        if on_gpu:
            import torch

            places.append(("the GPU", table * self.memory_copies + work,
                           torch.cuda.get_device_properties(resolve_device(device)).total_memory))
        what = f"the factor tables and {self.work_tables}" if work else "the factor tables alone"
        for where, need, total in places:
            if need > 0.8 * total:
                raise ConfigError(
                    f"model {self.name!r}: {factors:,} factors for {data.n_users:,} users and {data.n_items:,} "
                    f"items need about {need / 2**30:,.1f} GiB for {what}; {where} has "
                    f"{total / 2**30:,.1f} GiB. Use fewer factors")

    # What _work_bytes counts, in the refusal's words.
    work_tables: ClassVar[str] = ""

    def _work_bytes(self, data: Interactions, factors: int) -> int:
        """Bytes training holds besides the factor tables' copies, on the training device
        (tables that grow faster than ``factors``, such as BPMF's outer products); 0 by default."""
        return 0

    def _validate_params(self) -> None:
        """Check hyper-parameters; raise :class:`ConfigError`. Called at the start of ``fit``,
        after :meth:`_resolve_params` (so ``fitted_params`` holds no ``"auto"``)."""

    def _resolve_params(self, data: Interactions) -> tuple[dict[str, Any], DataShape | None]:
        """The hyper-parameters for ``data``, each ``"auto"`` that has a shape rule replaced by
        the rule's value, and the shape the rules read (None when no rule ran). Models with
        rules override this. (``"auto"`` also names choices a model makes itself, such as
        ``weighting`` or ``device``; those stay as given.)"""
        return self.get_params(), None

    def resolved_params(self, data: Interactions) -> dict[str, Any]:
        """The hyper-parameters :meth:`fit` would train ``data`` with (every ``"auto"`` that
        has a rule replaced by its value), without fitting."""
        return self._resolve_params(data)[0]

    def describe_auto(self) -> str | None:
        """One line naming the values ``"auto"`` chose and the data shape they were chosen
        for (see :func:`recsys.models.auto.describe`); None when nothing was ``"auto"``."""
        self.check_fitted()
        return describe(self.name, self.get_params(), self.fitted_params, self.data_shape)

    @abstractmethod
    def _fit(self, data: Interactions, **fit_options: Any) -> None:
        """Set ``user_factors`` and ``item_factors`` (and biases) from ``data``."""

    @classmethod
    def supports_checkpoints(cls) -> bool:
        """Whether training can be checkpointed and resumed (iterative models)."""
        return False

    def training_device(self) -> str:
        """The device ``fit`` trains on, in words (``cpu``, ``cuda``)."""
        return "cpu"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "item_factors")

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless the model was fitted or loaded."""
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    @property
    def scores_cold_items(self) -> bool:
        """Whether items without training interactions get meaningful scores (only a model
        that embeds items from their features can)."""
        return False

    # -- scoring geometry --------------------------------------------------------------------
    @property
    def has_bias(self) -> bool:
        return self.item_bias is not None

    def user_vectors(self, user_factors: np.ndarray | None = None, user_bias: np.ndarray | None = None) -> np.ndarray:
        """Query vectors whose dot product with :meth:`item_vectors` is the model's score.

        With biases: ``[p_u, 1, b_u + mu]`` against ``[q_i, b_i, 1]``. Shape (n, d') with
        d' = d (no biases) or d + 2.
        """
        self.check_fitted()
        p = self.user_factors if user_factors is None else user_factors
        if not self.has_bias:
            return p
        if user_bias is None:
            user_bias = self.user_bias if user_factors is None else np.zeros(len(p), np.float32)
        ones = np.ones((len(p), 1), dtype=np.float32)
        offset = (np.asarray(user_bias, dtype=np.float32) + np.float32(self.global_bias))[:, None]
        return np.hstack([p, ones, offset]).astype(np.float32, copy=False)

    def item_vectors(self) -> np.ndarray:
        """Item side of :meth:`user_vectors`, shape (n_items, d')."""
        self.check_fitted()
        if not self.has_bias:
            return self.item_factors
        ones = np.ones((len(self.item_factors), 1), dtype=np.float32)
        return np.hstack([self.item_factors, self.item_bias[:, None], ones]).astype(np.float32, copy=False)

    def item_embeddings(self) -> np.ndarray:
        """The item factors that place items relative to each other (similar items, maps,
        clusters, diversity): :attr:`item_factors` less any column that only adds to the
        score (two-tower's item bias)."""
        self.check_fitted()
        return self.item_factors

    def user_embeddings(self) -> np.ndarray:
        """The user factors that place users relative to each other (maps): :attr:`user_factors`
        less any column that only serves the score (two-tower's constant bias input)."""
        self.check_fitted()
        return self.user_factors

    def score_pairs(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """Model scores of (user, item) index pairs, shape (n,)."""
        return self.embeddings().score_pairs(user_index, item_index)

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Scores of (user, item) pairs given in external ids; NaN where either is unknown.
        A rating model's predictions stay within the range of the ratings it was trained on."""
        u = np.atleast_1d(self.users.index(users))
        i = np.atleast_1d(self.items.index(items))
        if u.shape != i.shape:
            raise ValueError("users and items must have the same length")
        out = np.full(len(u), np.nan, dtype=np.float32)
        ok = (u >= 0) & (i >= 0)
        out[ok] = self.score_pairs(u[ok], i[ok])
        self.embeddings().as_ratings(out)
        return out if np.ndim(users) else out[0]

    # -- queries ----------------------------------------------------------------------------
    def embeddings(self) -> Embeddings:
        """The model's vectors as an :class:`~recsys.embeddings.Embeddings` value (what
        retrieval, evaluation and diagnostics take), cached until the learned arrays change."""
        self.check_fitted()
        # Learned arrays are replaced, not edited in place (fit, the epoch loop and load all
        # assign new ones), so their identities tell whether the cache is current.
        sources = (self.user_factors, self.item_factors, self.user_bias, self.item_bias, self.seen,
                   self.item_popularity, self.users, self.items)
        cached = self.__dict__.get("_embeddings")
        # Holding the source arrays keeps identity checks sound (no id reuse after free).
        if (cached is None or cached[1] != (self.global_bias, self.rating_range)
                or any(a is not b for a, b in zip(cached[0], sources))):
            value = Embeddings(
                users=self.users, items=self.items, user_vectors=self.user_vectors(),
                item_vectors=self.item_vectors(), item_embeddings=self.item_embeddings(),
                user_embeddings=self.user_embeddings(), seen=self.seen,
                item_popularity=self.item_popularity, name=self.name,
                fingerprint=getattr(self, "training_fingerprint", ""), predicts_ratings=self.predicts_ratings,
                scores_cold_items=self.scores_cold_items,
                global_bias=self.global_bias if self.has_bias else None, rating_range=self.rating_range,
            )
            cached = (sources, (self.global_bias, self.rating_range), value)
            self._embeddings = cached
        return cached[2]

    def exact_index(self, device: Any = "auto") -> ExactIndex:
        """The exact dot-product index over :meth:`item_vectors` (that of :meth:`embeddings`)."""
        return self.embeddings().exact_index(device)

    def recommend_indices(
        self,
        user_index: np.ndarray,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        user_vectors: np.ndarray | None = None,
        exclude: sp.csr_matrix | None = None,
        index: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores for known user indices, shape (n, k) each.

        ``user_vectors`` (from :meth:`user_vectors`) may be given for users folded in
        from a history; ``exclude`` replaces the training matrix as the items to skip.
        ``index`` is any retrieval with a ``search(vectors, k, exclude)`` method (an
        :class:`~recsys.retrieval.AnnoyIndex`); the default is the exact index.
        """
        self.check_fitted()
        user_index = np.asarray(user_index, dtype=np.int64)
        vectors = self.embeddings().user_vectors[user_index] if user_vectors is None else user_vectors
        if exclude is None and exclude_seen:
            exclude = self.seen[user_index]
        index = self.exact_index() if index is None else index
        return index.search(vectors, k, exclude if exclude_seen else None)

    def recommend(
        self,
        users: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        history: Interactions | None = None,
        index: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for users given in external ids.

        Returns ``(item_ids, scores)``: shape (k,) for one user, (n, k) for a sequence.
        A user unknown to the model gets the most popular items with NaN scores (the
        fallback is visible; :meth:`Vocabulary.contains` on ``model.users`` tells who is
        known). Rows are padded with ``None``/-1 ids and -inf scores when fewer than
        ``k`` unseen items exist.

        ``history`` (interactions of users, known or not) folds those users in against the
        fixed item factors (:meth:`fold_in`) and excludes their history items; ``index``
        is an approximate index (see :meth:`recommend_indices`).

        Examples
        --------
        >>> ids, scores = model.recommend("alice", k=5)           # shape (5,)
        >>> ids, scores = model.recommend(["alice", "bob"], k=5)  # shape (2, 5)
        >>> ids, scores = model.recommend("new", k=5, history=Interactions.from_arrays(["new"], ["m1"]))
        """
        from recsys.models.queries import answer, plan_users

        self.check_fitted()
        single = np.ndim(users) == 0
        plan = plan_users(self, np.atleast_1d(np.asarray(users, dtype=object)), history)
        item_idx, scores, _ = answer(self, index, plan, np.arange(plan.n), k, include_seen=not exclude_seen)
        ids = self.item_ids(item_idx)
        return (ids[0], scores[0]) if single else (ids, scores)

    # -- new users -------------------------------------------------------------------------
    def fold_in(self, history: Interactions, **options: Any) -> FoldIn:
        """Embed the users of ``history`` against the fixed item factors, without retraining.

        Each model solves its own objective for the user side only (ALS and iALS: the
        closed-form weighted least squares; MF: a few gradient steps; popular: nothing to
        learn). History entries whose item the model does not know are dropped and counted.
        Returns a :class:`FoldIn` whose ``vectors`` are query vectors for any index.

        Examples
        --------
        >>> new = Interactions.from_arrays(["u1", "u1"], ["m3", "m7"])
        >>> folded = model.fold_in(new)
        >>> folded.vectors.shape                     # (1, d) or (1, d + 2) with biases
        """
        self.check_fitted()
        mapped, dropped = history.reindex(history.users, self.items)
        factors, bias = self._fold_in(mapped.matrix, mapped.feedback, **options)
        factors = np.asarray(factors, dtype=np.float32)
        if self.has_bias and bias is None:
            bias = np.zeros(len(factors), np.float32)
        return FoldIn(
            users=mapped.users,
            vectors=self.user_vectors(factors, bias),
            seen=_binary(mapped.matrix),
            dropped_entries=dropped,
        )

    def _fold_in(
        self, matrix: sp.csr_matrix, feedback: str, **options: Any
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """User factors (and biases) for the rows of ``matrix`` (n, n_items); override."""
        raise ConfigError(f"model {self.name!r} cannot fold in new users")

    def popular_items(self, k: int) -> np.ndarray:
        """Indices of the ``k`` items with the most training users, padded with -1."""
        return self.embeddings().popular_items(k)

    def item_ids(self, item_index: np.ndarray) -> np.ndarray:
        """External item ids for indices; -1 (padding) becomes -1 or None."""
        return self.embeddings().item_ids(item_index)

    def similar_items(self, items: Any, k: int = 10, *, index: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to each given item, by cosine of item factors.

        The item itself is left out. Returns ``(item_ids, similarities)``: shape (k,) for
        one item, (n, k) for a sequence; an unknown item gets ids -1/None and NaN.
        ``index`` (an :class:`~recsys.retrieval.AnnoyIndex`) answers approximately.
        """
        self.check_fitted()
        single = np.ndim(items) == 0
        index_of = np.atleast_1d(self.items.index(items))
        known = index_of >= 0
        out_idx = np.full((len(index_of), k), -1, dtype=np.int64)
        out_sim = np.full((len(index_of), k), np.nan, dtype=np.float32)
        if known.any():
            if index is None:
                found, sims = cosine_neighbours(self.item_embeddings(), index_of[known], k)
            else:
                found, sims = index.similar(index_of[known], k)
            out_idx[known], out_sim[known] = found, sims
        ids = self.item_ids(out_idx)
        return (ids[0], out_sim[0]) if single else (ids, out_sim)

    # -- persistence -------------------------------------------------------------------------
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Model-specific learned arrays to save beside the factors (override)."""
        return {}

    def _load_extra_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_extra_arrays` saved (override)."""

    def save(self, path: str | Path, *, extras: Callable[[Path], None] | None = None, lock: bool = True) -> Path:
        """Save to directory ``path`` atomically (replacing an existing model there).

        Layout (:mod:`recsys.models.persistence`): ``model.json`` (type, hyper-parameters,
        format version, shapes, training fingerprint, file checksums), ``factors.npz``,
        ``vocabulary.npz``, ``seen.npz``. No pickle anywhere. ``extras(tmp_dir)`` may add
        files (an index, a run record) before the directory is moved into place, so they
        land in the same atomic step. ``lock=False``: the caller already holds
        :func:`recsys.artifacts.output_lock` on ``path``.
        """
        self.check_fitted()
        path = Path(path)
        with atomic_directory(path, kind=persistence.MODEL_DIRECTORY, lock=lock) as tmp:
            persistence.write_model(self, tmp)
            if extras is not None:
                extras(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a directory written by :meth:`save`, verifying format, checksums and shapes.

        Called on :class:`Recommender` it returns whichever model type was saved; called
        on a subclass it also checks the type.
        """
        from recsys.models import MODELS

        path = Path(path)
        meta = persistence.read_meta(path)
        kind = meta.get("model")
        if not isinstance(kind, str) or kind not in MODELS:
            raise ModelFormatError(f"{path}: unknown model type {kind!r}")
        model_cls = MODELS[kind]
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise ModelFormatError(f"{path}: holds a {kind!r} model, not {cls.name!r}")
        params = meta.get("params")
        if not isinstance(params, dict):
            raise ModelFormatError(f"{path}: model.json has no hyper-parameters")
        try:
            # Hyper-parameters renamed or added after a model was saved read as it was trained.
            model = model_cls.from_params({**model_cls.legacy_params, **model_cls.rename_params(params)})
        except (ConfigError, TypeError) as exc:
            raise ModelFormatError(f"{path}: {exc}") from None
        persistence.read_model(model, path, meta)
        return model


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.copy()
    out.data = np.ones_like(out.data, dtype=np.float32)
    return out

