"""Approximate top-k through Annoy, saved inside the model directory.

Two Annoy forests live in ``<model>/index/``:

- ``items.ann``, for user-to-item retrieval over the model's bias-folded item vectors
  (:meth:`Recommender.item_vectors`): either metric ``angular`` over the vectors with one
  extra dimension, ``sqrt(M^2 - |v|^2)`` (``M`` the largest norm), the augmentation of
  Bachrach et al. (2014), so that every item has norm ``M`` and a query ``[u, 0]`` ranks
  them by cosine exactly as by ``u . v`` (how implicit hands factors to Annoy); or Annoy's
  own ``dot`` metric, meant to do the same internally. Which one's trees find more depends
  on the model: on a 256-factor iALS of ml-latest-small, 20 trees and the same
  ``search_k`` found 80% of the exact top-20 with ``dot`` and 100% with ``angular``; on a
  32-factor ALS of lastfm-2k, 99% with ``dot`` and 87% with ``angular``
  (experiments/quality/README.md, "Round two"; spotify/annoy#619 reports ``dot`` splitting
  poorly). By default (``metric="auto"``) both are built and the one that finds more of a
  sample of users' exact top-20 is kept. Every candidate is re-scored with the exact dot
  product, so the order of what is returned is exactly the model's own score order; the
  approximation is only in which candidates are found.
- ``similar.ann``, metric ``angular``, over the raw item factors, for item-to-item
  "more like this". Angular distance ranks by cosine; candidates are re-scored with the
  exact cosine, the same similarity the exact path uses.

``index.json`` records the dimension, metric, item count, a fingerprint of the vectors the
forest was built from, the files' sizes and checksums, and the build settings. Loading
compares the fingerprint with the model's current vectors and refuses a mismatch with
:class:`ModelFormatError`. The ``.ann`` files are memory-mapped (not prefaulted), so
opening an index of a million items costs nothing until queries touch it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.artifacts import (
    OutputKind,
    atomic_directory,
    json_format,
    read_description,
    sha256_file,
    write_json,
)
from recsys.embeddings import Embeddings, EmbeddingSource, unit_rows
from recsys.errors import ConfigError, ModelFormatError

INDEX_DIR = "index"
ITEMS_FILE = "items.ann"
SIMILAR_FILE = "similar.ann"
META_FILE = "index.json"
INDEX_FORMAT = "recsys-annoy-index"
INDEX_DIRECTORY = OutputKind("Annoy index directory", directory=True, marker=META_FILE, recognise=json_format(INDEX_FORMAT))
INDEX_FORMAT_VERSION = 1
ITEM_METRICS = ("angular", "dot")
DEFAULT_ITEM_METRIC = "auto"
"""The user-to-item forest: ``angular`` over explicitly augmented vectors, or Annoy's ``dot``
(which older indexes used; ``index.json`` records which, so both load); ``auto`` builds both
and keeps the one that finds more of a sample of users' exact top-20 (:func:`choose_metric`)."""
METRIC_SAMPLE_USERS = 64
DEFAULT_TREES = 20
"""Trees per forest. See experiments/retrieval/README.md for the trade-off."""


AUTO_SEARCH_K_CAP = 50_000
AUTO_SEARCH_K_PER_ITEM = 4
"""Leaf hits per catalogue item of the default ``search_k`` (below the cap)."""


def auto_search_k(n_items: int, trees: int, n: int) -> int:
    """The default ``search_k`` for ``n`` candidates: four times the catalogue, capped at
    :data:`AUTO_SEARCH_K_CAP`, and never below Annoy's own ``n x trees``.

    Annoy counts leaf hits with repeats across trees: with 20 trees, twice the catalogue
    reaches only 70-75% of the distinct items, enough for overlap@20 >= 0.95 with the exact
    top-20 (experiments/retrieval) but not for recall@20 within 1% of exact search, which
    four times does on iALS models of ml-latest-small and lastfm-2k (experiments/quality,
    "Round two": overlap@20 0.997-0.999; twice: 0.965-0.97 and 1.7-1.9% less recall on
    lastfm-2k). On such small catalogues the index then inspects about as many items as exact
    search scores; the cap keeps queries on huge catalogues far cheaper than scoring every
    item, and experiments/retrieval shows what a smaller or larger value buys there.
    """
    return max(n * trees, min(AUTO_SEARCH_K_PER_ITEM * n_items, AUTO_SEARCH_K_CAP))


def resolve_jobs(n_jobs: int | None) -> int:
    """Threads to use: ``None`` or ``-1`` means every CPU this process may use
    (:func:`recsys.device.cpu_budget`: ``--threads``, affinity, a cgroup quota)."""
    if n_jobs is None or n_jobs < 0:
        from recsys.device import cpu_budget

        return cpu_budget()
    if n_jobs == 0:
        raise ConfigError("n_jobs must be a positive number of threads, or -1 for every core")
    return int(n_jobs)


def fingerprint(vectors: np.ndarray) -> str:
    """Content hash of a float32 matrix (shape and values), hex."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    h = hashlib.sha256()
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(arr.tobytes())
    return h.hexdigest()[:32]


def augment(vectors: np.ndarray) -> np.ndarray:
    """Item vectors with one extra column ``sqrt(M^2 - |v|^2)``: every row gets norm ``M``
    (the largest), so for a query ``[u, 0]`` cosine order is ``u . v`` order."""
    vectors = np.asarray(vectors, dtype=np.float64)
    sq = np.einsum("ij,ij->i", vectors, vectors)
    extra = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0))
    return np.hstack([vectors, extra[:, None]]).astype(np.float32)


def choose_metric(
    forests: dict[str, Any], vectors: np.ndarray, queries: np.ndarray, trees: int, seed: int, k: int = 20
) -> tuple[str, dict[str, float]]:
    """The item forest that finds more of the exact top-``k`` of up to
    :data:`METRIC_SAMPLE_USERS` sampled query vectors at the default ``search_k``.

    Which one wins depends on the model (experiments/quality/README.md, "Round two"): on a
    256-factor iALS of ml-latest-small ``angular`` over augmented vectors found all of the
    top-20 where ``dot`` found 80%; on a 32-factor ALS of lastfm-2k, 87% against 99%.
    Returns the metric (``angular`` on ties) and each one's share found.
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(queries), min(METRIC_SAMPLE_USERS, len(queries)), replace=False)
    k = min(k, len(vectors))
    budget = auto_search_k(len(vectors), trees, k)
    found = {metric: 0 for metric in forests}
    for q in np.asarray(queries[rows], dtype=np.float32):
        truth = np.argpartition(-(vectors @ q), k - 1)[:k] if k < len(vectors) else np.arange(len(vectors))
        for metric, forest in forests.items():
            query = np.append(q, np.float32(0.0)) if metric == "angular" else q
            found[metric] += int(np.isin(truth, forest.get_nns_by_vector(query, k, search_k=budget)).sum())
    shares = {metric: n / max(1, k * len(rows)) for metric, n in found.items()}
    best = max(sorted(shares), key=lambda m: (shares[m], m == "angular"))
    return best, shares


def _forest(vectors: np.ndarray, metric: str, trees: int, n_jobs: int, seed: int) -> Any:
    from annoy import AnnoyIndex as _Annoy

    forest = _Annoy(vectors.shape[1], metric)
    forest.set_seed(int(seed))
    for i, row in enumerate(vectors):
        forest.add_item(i, row)
    forest.build(int(trees), n_jobs=n_jobs)
    return forest


class AnnoyIndex:
    """Approximate retrieval over one model's items, with exact re-scoring of candidates.

    Build with :meth:`build` (from a fitted model), persist with :meth:`save`, reopen with
    :meth:`load`. The query interface is the one :class:`ExactRetrieval` has, so the two
    are interchangeable: :meth:`search` for users, :meth:`similar` for items.

    Parameters of the search
    ------------------------
    search_k : int or None
        Annoy's ``search_k``: how many leaf items (candidates, counted with repeats across
        trees) a query inspects; larger is slower and more accurate. ``None`` is
        :func:`auto_search_k`; ``-1`` is Annoy's own default, ``candidates x trees``, which
        on embeddings with skewed norms (ALS) finds well under 95% of the exact top-k.
    n_jobs : int
        Threads answering queries (Annoy releases the GIL while searching); -1 for all.

    Examples
    --------
    >>> index = AnnoyIndex.build(model, trees=50)
    >>> index.save("models/als/index")
    >>> index = AnnoyIndex.load(model, "models/als")
    >>> ids, scores = model.recommend(["alice"], k=10, index=index)
    """

    name = "annoy"

    def __init__(
        self,
        items: Any,
        similar: Any,
        item_vectors: np.ndarray,
        unit_factors: np.ndarray,
        meta: dict[str, Any],
        *,
        search_k: int | None = None,
        n_jobs: int | None = -1,
    ) -> None:
        self._items = items
        self._similar = similar
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.unit_factors = unit_factors
        self.meta = meta
        self.n_items = len(self.item_vectors)
        self.trees = int(meta["trees"])
        if search_k is not None and search_k < 1 and search_k != -1:
            raise ConfigError("search_k must be a positive number of nodes (or -1 for Annoy's default)")
        self.search_k = None if search_k is None else int(search_k)
        self.n_jobs = resolve_jobs(n_jobs)
        self._augmented = bool(meta.get("augmented", False))

    # -- building and persistence ------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: EmbeddingSource,
        *,
        trees: int = DEFAULT_TREES,
        search_k: int | None = None,
        n_jobs: int | None = -1,
        seed: int = 0,
        metric: str = DEFAULT_ITEM_METRIC,
    ) -> AnnoyIndex:
        """Build both forests from a fitted model's item vectors (or from :class:`Embeddings`).

        ``metric`` is the user-to-item forest's: ``angular`` over the augmented vectors,
        Annoy's ``dot``, or ``auto`` (default): build both and keep the one that finds more
        of a sample of the model's users' exact top-20 (:func:`choose_metric`; its shares
        are in ``meta["metric_choice"]``). ``auto`` doubles the build time of that forest.
        """
        model = Embeddings.of(model)
        if trees < 1:
            raise ConfigError(f"trees must be at least 1, got {trees}")
        if metric not in (*ITEM_METRICS, "auto"):
            raise ConfigError(f"metric must be one of {(*ITEM_METRICS, 'auto')}, got {metric!r}")
        jobs = resolve_jobs(n_jobs)
        vectors = model.item_vectors
        embeddings = model.item_embeddings
        unit = unit_rows(embeddings)
        start = time.perf_counter()
        metrics = ITEM_METRICS if metric == "auto" else (metric,)
        forests = {m: _forest(augment(vectors) if m == "angular" else vectors, m, trees, jobs, seed) for m in metrics}
        shares: dict[str, float] = {}
        if metric == "auto":
            metric, shares = choose_metric(forests, vectors, model.user_vectors, trees, seed)
        items = forests[metric]
        similar = _forest(unit, "angular", trees, jobs, seed)
        meta = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "model": model.name,
            "n_items": len(vectors),
            "dimension": int(vectors.shape[1]),
            "metric": metric,
            "augmented": metric == "angular",
            "metric_choice": shares,  # with metric="auto": each forest's share of a sample's exact top-20
            "similar_dimension": int(unit.shape[1]),
            "similar_metric": "angular",
            "trees": int(trees),
            "seed": int(seed),
            "fingerprint": fingerprint(vectors),
            "similar_fingerprint": fingerprint(embeddings),
            "training_fingerprint": model.fingerprint,
            "build_seconds": time.perf_counter() - start,
            "search_k": search_k,
        }
        return cls(items, similar, vectors, unit, meta, search_k=search_k, n_jobs=jobs)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the forests and ``index.json`` to ``directory`` (replaced atomically)."""
        directory = Path(directory)
        with atomic_directory(directory, kind=INDEX_DIRECTORY) as tmp:
            self.write(tmp)
        return directory

    def write(self, directory: Path) -> None:
        """Write into an existing (temporary) directory; :meth:`save` is the atomic form."""
        meta = dict(self.meta)
        files = {}
        for name, forest in ((ITEMS_FILE, self._items), (SIMILAR_FILE, self._similar)):
            forest.save(str(directory / name), prefault=False)
            files[name] = {"bytes": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
        meta["files"] = files
        write_json(directory / META_FILE, meta)
        self.meta = meta

    @classmethod
    def load(
        cls,
        model: EmbeddingSource,
        model_dir: str | os.PathLike,
        *,
        search_k: int | None = None,
        n_jobs: int | None = -1,
        verify: bool = True,
    ) -> AnnoyIndex:
        """Open ``<model_dir>/index`` memory-mapped and check it belongs to ``model``.

        ``search_k`` None uses the one saved at build time (itself None: :func:`auto_search_k`).

        Raises :class:`ModelFormatError` when the index is missing, of another format,
        truncated, or built from other factors than the model's. ``verify`` also checks the
        files' SHA-256 (reads them fully). It is on by default: Annoy trusts its files, and a
        damaged forest of the right size crashes the process (SIGSEGV) at query time.
        """
        from annoy import AnnoyIndex as _Annoy

        model = Embeddings.of(model)
        directory = Path(model_dir) / INDEX_DIR
        if not (directory / META_FILE).is_file():
            raise ModelFormatError(
                f"{model_dir}: has no Annoy index; build it with `recsys index --model {model_dir}`"
            )
        meta = read_description(directory / META_FILE, format=INDEX_FORMAT, version=INDEX_FORMAT_VERSION,
                                what="index", where=directory, advice="rebuild it with `recsys index`")
        vectors, embeddings = model.item_vectors, model.item_embeddings
        rebuild = f"; rebuild it with `recsys index --model {model_dir}`"
        if meta.get("n_items") != len(vectors) or meta.get("dimension") != vectors.shape[1]:
            raise ModelFormatError(
                f"{directory}: index has {meta.get('n_items')} items of dimension {meta.get('dimension')}, "
                f"the model {len(vectors)} of dimension {vectors.shape[1]}{rebuild}"
            )
        if meta.get("fingerprint") != fingerprint(vectors) or meta.get("similar_fingerprint") != fingerprint(
            embeddings
        ):
            raise ModelFormatError(f"{directory}: index was built from other item factors than this model's{rebuild}")
        files = meta.get("files")
        if not isinstance(files, dict):
            raise ModelFormatError(f"{directory / META_FILE}: does not list the index files")
        item_metric = meta.get("metric", "dot")
        if item_metric not in ITEM_METRICS:
            raise ModelFormatError(f"{directory / META_FILE}: unknown item metric {item_metric!r}{rebuild}")
        forests = []
        for name, metric, dim in (
            (ITEMS_FILE, item_metric, vectors.shape[1] + int(bool(meta.get("augmented")))),
            (SIMILAR_FILE, "angular", embeddings.shape[1]),
        ):
            path = directory / name
            record = files.get(name) or {}
            if not path.is_file():
                raise ModelFormatError(f"{directory}: missing {name}{rebuild}")
            if path.stat().st_size != record.get("bytes"):
                raise ModelFormatError(f"{path}: size differs from {META_FILE} (truncated or altered){rebuild}")
            if verify and sha256_file(path) != record.get("sha256"):
                raise ModelFormatError(f"{path}: does not match its checksum{rebuild}")
            forest = _Annoy(int(dim), metric)
            try:
                forest.load(str(path), prefault=False)
            except OSError as exc:
                raise ModelFormatError(f"{path}: Annoy cannot open it ({exc}){rebuild}") from None
            if forest.get_n_items() != len(vectors):
                raise ModelFormatError(f"{path}: holds {forest.get_n_items()} items, the model {len(vectors)}{rebuild}")
            forests.append(forest)
        if search_k is None:
            search_k = meta.get("search_k")
        return cls(forests[0], forests[1], vectors, unit_rows(embeddings), meta,
                   search_k=search_k, n_jobs=n_jobs)

    # -- queries -------------------------------------------------------------------------------
    def _node_budget(self, n: int) -> int:
        # Annoy returns at most search_k leaf hits before de-duplication, so a fixed
        # search_k below the number of candidates asked for would starve the widening.
        if self.search_k == -1:
            return -1
        budget = auto_search_k(self.n_items, self.trees, n) if self.search_k is None else self.search_k
        return max(budget, n)

    def _one_user(self, vector: np.ndarray, k: int, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` unseen items of one query: widen the candidate list until enough survive."""
        available = self.n_items - len(seen)
        want = min(k, available)
        if want <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        asked = min(k + len(seen), self.n_items)
        # The augmented dimension is 0 for queries.
        query = np.append(vector, np.float32(0.0)) if self._augmented else vector
        while True:
            found = np.asarray(
                self._items.get_nns_by_vector(query, asked, search_k=self._node_budget(asked)), dtype=np.int64
            )
            keep = found[~np.isin(found, seen, assume_unique=True)] if len(seen) else found
            if len(keep) >= want or asked >= self.n_items:
                break
            asked = min(2 * asked, self.n_items)
        if len(keep) < want:
            # The forest did not reach enough unseen items even when asked for all of them
            # (a tiny search_k); finish this one row exactly so the guarantee holds.
            keep = np.setdiff1d(np.arange(self.n_items), seen, assume_unique=True)
        scores = self.item_vectors[keep] @ vector
        order = np.argsort(-scores, kind="stable")[:want]
        return keep[order], scores[order]

    def search(
        self,
        user_vectors: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each row of ``user_vectors`` (shape (B, d')), best first.

        ``exclude`` (CSR, shape (B, n_items)) lists items to skip per row; each row still
        gets exactly ``k`` items whenever ``k`` unseen items exist (padding -1 / -inf
        otherwise). Scores are the exact dot products. Returns ``(indices, scores)``,
        each of shape (B, k).
        """
        user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        n = len(user_vectors)
        if user_vectors.ndim != 2 or (n and user_vectors.shape[1] != self.item_vectors.shape[1]):
            raise ValueError(f"user vectors must have shape (n, {self.item_vectors.shape[1]})")
        out_idx = np.full((n, k), -1, dtype=np.int64)
        out_scores = np.full((n, k), -np.inf, dtype=np.float32)
        empty = np.zeros(0, dtype=np.int64)
        if exclude is not None:
            indptr, indices = exclude.indptr, exclude.indices.astype(np.int64, copy=False)

        def row(r: int) -> None:
            seen = indices[indptr[r]:indptr[r + 1]] if exclude is not None else empty
            idx, scores = self._one_user(user_vectors[r], k, seen)
            out_idx[r, :len(idx)] = idx
            out_scores[r, :len(idx)] = scores

        self._map(row, n)
        return out_idx, out_scores

    def similar(self, item_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items of highest cosine with each given item (the item itself left out).

        Returns ``(indices, cosines)``, each of shape (len(item_index), k), padded with -1
        and NaN where the catalogue has fewer than ``k`` other items.
        """
        item_index = np.asarray(item_index, dtype=np.int64)
        out_idx = np.full((len(item_index), k), -1, dtype=np.int64)
        out_sim = np.full((len(item_index), k), np.nan, dtype=np.float32)
        want = min(k, self.n_items - 1)

        def row(r: int) -> None:
            item = int(item_index[r])
            asked = min(want + 1, self.n_items)
            while True:
                found = np.asarray(
                    self._similar.get_nns_by_item(item, asked, search_k=self._node_budget(asked)), dtype=np.int64
                )
                found = found[found != item]
                if len(found) >= want or asked >= self.n_items:
                    break
                asked = min(2 * asked, self.n_items)
            if len(found) < want:
                found = np.delete(np.arange(self.n_items), item)
            sims = self.unit_factors[found] @ self.unit_factors[item]
            order = np.argsort(-sims, kind="stable")[:want]
            out_idx[r, :want] = found[order]
            out_sim[r, :want] = sims[order]

        if want > 0:
            self._map(row, len(item_index))
        return out_idx, out_sim

    def _map(self, fn: Any, n: int) -> None:
        """Call ``fn(r)`` for every row, in ``n_jobs`` threads over contiguous slices."""
        jobs = min(self.n_jobs, max(1, n // 32))
        if jobs == 1:
            for r in range(n):
                fn(r)
            return

        def part(rows: range) -> None:
            for r in rows:
                fn(r)

        bounds = np.linspace(0, n, jobs + 1).astype(int)
        with ThreadPoolExecutor(jobs) as pool:
            # list(): re-raise the first error of any worker.
            list(pool.map(part, [range(a, b) for a, b in itertools.pairwise(bounds)]))

def build_index(
    model: EmbeddingSource,
    model_dir: str | os.PathLike,
    *,
    trees: int = DEFAULT_TREES,
    search_k: int | None = None,
    n_jobs: int | None = -1,
    seed: int = 0,
    metric: str = DEFAULT_ITEM_METRIC,
) -> AnnoyIndex:
    """Build the Annoy index of ``model`` and save it (atomically) as ``<model_dir>/index``.

    ``search_k`` is saved as the default of later searches.
    """
    index = AnnoyIndex.build(model, trees=trees, search_k=search_k, n_jobs=n_jobs, seed=seed, metric=metric)
    index.save(Path(model_dir) / INDEX_DIR)
    return index
