"""Clusters, outliers and the label audit of a model's item embeddings.

Everything works on the *normalized* item factors (each row scaled to unit length), so
closeness is cosine similarity, the geometry ``similar_items`` uses, and an item's
popularity (which mostly shows in its vector's length) does not decide its cluster.
Items without training users (their vectors were never learned) are left out and counted.

- Clusters: k-means (SciPy's k-means++ and Lloyd iterations, the best of 4 seeded restarts,
  fitted on at most 20,000 items, then every item takes its nearest centre) with ``k``
  clusters; default ``k = round(sqrt(n_items / 20))`` clipped to [2, 20].
- Outliers: an item is flagged when its distance to the nearest cluster centre, or its
  cosine distance to its nearest other item, is extreme for this catalogue: a modified
  z-score ``0.6745 * (x - median) / MAD`` above 3.5 (Iglewicz and Hoaglin's rule).
- Label audit: for each item with a value in a categorical column (several values such as
  ``Drama|War`` allowed), its ``neighbours`` nearest labelled items by cosine. A neighbour
  agrees when it shares at least one value with the item. ``disagreement`` is the
  similarity-weighted share of neighbours that share none; items at or above
  ``threshold`` (default 0.8) are reported, most disagreeing first (ties: the larger share
  of neighbours carrying one other value first).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.artifacts import OutputKind, json_with_keys, table_with_columns
from recsys.diagnostics.metadata import membership, require_column, title_column, values_of
from recsys.embeddings import Embeddings, EmbeddingSource, unit_rows
from recsys.errors import ConfigError

OUTLIER_Z = 3.5
CLUSTER_SUMMARY = OutputKind("cluster summary", recognise=json_with_keys(["clusters", "outlier_rule", "outliers"]))
AUDIT_TABLE = OutputKind("label audit table", recognise=table_with_columns(["item", "values", "disagreement"]))


def nearest_neighbours(
    unit: np.ndarray, k: int, *, candidates: np.ndarray | None = None, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most cosine-similar to each row (itself left out), best first.

    ``unit`` holds unit-length rows; ``candidates`` (bool mask) limits who can be a
    neighbour. Returns (indices (n, k), similarities (n, k)); -1 and NaN where fewer exist.
    """
    n = len(unit)
    pool = np.arange(n) if candidates is None else np.flatnonzero(candidates)
    k_eff = min(k, max(len(pool) - 1, 0))
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), np.nan, dtype=np.float32)
    if k_eff == 0:
        return idx, sim
    pool_vectors = unit[pool]
    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        scores = unit[rows] @ pool_vectors.T  # (B, |pool|)
        # Leave each row out of its own neighbours.
        self_pos = np.searchsorted(pool, rows)
        is_self = (self_pos < len(pool)) & (pool[np.minimum(self_pos, len(pool) - 1)] == rows)
        scores[np.flatnonzero(is_self), self_pos[is_self]] = -np.inf
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        idx[rows, :k_eff] = pool[np.take_along_axis(part, order, axis=1)]
        sim[rows, :k_eff] = np.take_along_axis(part_scores, order, axis=1)
    return idx, sim


def default_k(n_items: int) -> int:
    return int(np.clip(round(np.sqrt(n_items / 20)), 2, 20))


# k-means is fitted on at most this many points (then every point takes its nearest centre):
# the diagnostics of a 500K-item catalogue cost what a 20K one does.
KMEANS_FIT_POINTS = 20_000
KMEANS_RESTARTS = 4
KMEANS_ITERATIONS = 50


def kmeans(unit: np.ndarray, k: int, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means labels (n,) and centres (k, d) of the rows of ``unit``.

    SciPy's k-means++ and Lloyd iterations, the best of a few seeded restarts by inertia
    (restarts that leave a cluster empty lose to any that do not).
    """
    from scipy.cluster.vq import kmeans2, vq

    if not 1 <= k <= len(unit):
        raise ConfigError(f"k must be between 1 and the number of points ({len(unit)}), got {k}")
    distinct = len(np.unique(unit, axis=0))
    if distinct < k:
        raise ConfigError(
            f"the factors have only {distinct} distinct directions, fewer than k={k} clusters "
            "(a model without a learned embedding, such as popular, cannot be clustered)"
        )
    rng = np.random.default_rng(random_state)
    points = np.asarray(unit, dtype=np.float64)
    fit_on = points if len(points) <= KMEANS_FIT_POINTS else points[np.sort(rng.choice(len(points), KMEANS_FIT_POINTS, replace=False))]
    best: tuple[tuple[bool, float], np.ndarray, np.ndarray] | None = None
    for _ in range(KMEANS_RESTARTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "one of the clusters is empty": ranked below
            centres, _ = kmeans2(fit_on, k, iter=KMEANS_ITERATIONS, minit="++", seed=rng)
        labels, distance = vq(points, centres, check_finite=False)
        rank = (bool(np.bincount(labels, minlength=k).min() == 0), float(np.square(distance).sum()))
        if best is None or rank < best[0]:
            best = (rank, labels, centres)
    assert best is not None
    return best[1].astype(np.int64), best[2].astype(np.float32)


def modified_z(x: np.ndarray) -> np.ndarray:
    """``0.6745 * (x - median) / MAD``; 0 everywhere when the MAD is 0."""
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad == 0:
        return np.zeros_like(x, dtype=np.float64)
    return 0.6745 * (x - med) / mad


@dataclass
class ClusterReport:
    """What :func:`cluster_items` found.

    ``labels`` (n_items,; -1 for items without training users, left out) and ``centres``
    (k, d) are in the normalized space;
    ``summary`` is one dict per cluster (largest first): ``cluster``, ``size``,
    ``popular`` (the most popular items: ``item``, ``popularity``, ``title`` if known),
    ``dominant`` (when metadata is given: values with the share of the cluster's items
    carrying them and the lift over their share of the catalogue; over-represented
    values, lift above 1, first). ``outliers`` is a
    table of flagged items, most extreme first.
    """

    k: int
    labels: np.ndarray
    centres: np.ndarray
    summary: list[dict[str, Any]]
    outliers: pd.DataFrame
    column: str | None = None
    untrained: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (clusters and outliers, not the labels)."""
        return {
            "k": self.k,
            "column": self.column,
            "untrained_items_left_out": self.untrained,
            "clusters": self.summary,
            "outlier_rule": f"modified z-score above {OUTLIER_Z} for centre or neighbour distance",
            "outliers": self.outliers.to_dict(orient="records"),
        }


def cluster_items(
    model: EmbeddingSource,
    k: int | None = None,
    *,
    features: pd.DataFrame | None = None,
    column: str | None = None,
    top: int = 5,
    random_state: int = 0,
) -> ClusterReport:
    """k-means clusters of the model's normalized item factors, with a summary and outliers.

    ``features`` is an item table aligned to the model's items
    (:func:`recsys.diagnostics.metadata.align_items`); with ``column`` (default: a column
    named ``genres``, ``genre`` or ``category`` if present) each cluster lists its dominant
    values.
    """
    model = Embeddings.of(model)
    if top < 0:
        raise ConfigError(f"top must be 0 or more, got {top}")
    unit = unit_rows(model.item_embeddings)
    n = len(unit)
    popularity = np.asarray(model.item_popularity)
    trained = np.flatnonzero(trained_items(model))
    k = default_k(len(trained)) if k is None else int(k)
    labels = np.full(n, -1, dtype=np.int64)
    labels[trained], centres = kmeans(unit[trained], k, random_state)
    ids = model.item_ids(np.arange(n))
    titles = None
    if features is not None:
        tcol = title_column(features)
        titles = None if tcol is None else features[tcol].to_numpy(dtype=object)
        if column is None:
            column = next((c for c in ("genres", "genre", "category", "categories") if c in features.columns), None)
    value_matrix = names = None
    if features is not None and column is not None:
        value_matrix, names = membership(values_of(require_column(features, column)))
    base_share = None if value_matrix is None else value_matrix.mean(axis=0)

    summary = []
    for c in np.argsort(-np.bincount(labels[trained], minlength=k), kind="stable"):
        members = np.flatnonzero(labels == c)
        best = members[np.argsort(-popularity[members], kind="stable")[:top]]
        entry: dict[str, Any] = {
            "cluster": int(c),
            "size": len(members),
            "popular": [_item_record(i, ids, popularity, titles) for i in best],
        }
        if value_matrix is not None and names is not None and len(members):
            share = value_matrix[members].mean(axis=0)
            lift = np.divide(share, base_share, out=np.zeros_like(share), where=base_share > 0)
            # Over-represented values first (lift above 1), each group by share.
            order = np.lexsort((-share, lift <= 1))[:3]
            entry["dominant"] = [
                {"value": names[j], "share": round(float(share[j]), 4), "lift": round(float(lift[j]), 2)}
                for j in order if share[j] > 0
            ]
        summary.append(entry)

    # Outliers: far from every centre, or no near neighbour.
    centre_dist = _min_centre_distance(unit[trained], centres).astype(np.float64)
    _, nn_sim = nearest_neighbours(unit[trained], 1)
    nn_dist = 1.0 - np.nan_to_num(nn_sim[:, 0], nan=-1.0).astype(np.float64)
    z_centre, z_nn = modified_z(centre_dist), modified_z(nn_dist)
    hit = np.flatnonzero((z_centre > OUTLIER_Z) | (z_nn > OUTLIER_Z))
    hit = hit[np.argsort(-np.maximum(z_centre, z_nn)[hit], kind="stable")]
    centre_dist, nn_dist, z_centre, z_nn = (a[hit] for a in (centre_dist, nn_dist, z_centre, z_nn))
    flagged = trained[hit]
    outliers = pd.DataFrame({
        "item": ids[flagged],
        "cluster": labels[flagged],
        "centre_distance": np.round(centre_dist, 4),
        "neighbour_distance": np.round(nn_dist, 4),
        "reason": np.where(z_centre > OUTLIER_Z,
                           np.where(z_nn > OUTLIER_Z, "both", "far from centres"),
                           "no near neighbour"),
        "popularity": popularity[flagged],
    })
    if titles is not None:
        outliers.insert(1, "title", titles[flagged])
    return ClusterReport(k, labels, centres, summary, outliers, column, untrained=n - len(trained))


def trained_items(model: EmbeddingSource) -> np.ndarray:
    """Bool mask of items with training users and a non-zero factor vector.

    An item in the model's id map without training interactions (it reached the id map
    through data that was then split off) keeps its initial vector: it is no part of
    the learned geometry, so clusters, outliers and maps leave it out. A model that
    embeds such items from their features (``scores_cold_items``: two-tower with an
    item table) learned their vectors too: they stay in.
    """
    norms = np.linalg.norm(model.item_embeddings, axis=1)
    if model.scores_cold_items:
        return norms > 0
    return (np.asarray(model.item_popularity) > 0) & (norms > 0)


def _min_centre_distance(unit: np.ndarray, centres: np.ndarray) -> np.ndarray:
    sq = (unit**2).sum(1)[:, None] - 2 * unit @ centres.T + (centres**2).sum(1)[None, :]
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0))


def _item_record(i: int, ids: np.ndarray, popularity: np.ndarray, titles: np.ndarray | None) -> dict[str, Any]:
    record: dict[str, Any] = {"item": _plain(ids[i]), "popularity": int(popularity[i])}
    if titles is not None and isinstance(titles[i], str):
        record["title"] = titles[i]
    return record


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def label_audit(
    model: EmbeddingSource,
    features: pd.DataFrame,
    column: str,
    *,
    neighbours: int = 10,
    threshold: float = 0.8,
    min_popularity: int = 5,
) -> pd.DataFrame:
    """Items whose nearest neighbours overwhelmingly carry a different value of ``column``.

    Only items with at least ``min_popularity`` training users and a value take part
    (as audited items and as neighbours): rarer items have embeddings too noisy to judge.
    Returns one row per flagged item, most disagreeing first: ``item``, ``title`` (if the
    table has one), ``values`` (the item's own, ``|``-joined), ``disagreement``,
    ``neighbour_value`` (the other value most neighbours carry) and ``neighbour_share``,
    ``expected_agreement`` (share of all audited items that share a value with it: the
    agreement random neighbours would give), ``popularity`` and ``neighbours`` (the first
    five neighbours' ids).
    """
    model = Embeddings.of(model)
    if not 0 <= threshold <= 1:
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
    if neighbours < 1:
        raise ConfigError(f"neighbours must be at least 1, got {neighbours}")
    values = values_of(require_column(features, column))
    matrix, names = membership(values)
    popularity = np.asarray(model.item_popularity)
    audited = matrix.any(axis=1) & (popularity >= min_popularity) & trained_items(model)
    if audited.sum() < 2:
        raise ConfigError(
            f"fewer than two items have a value in {column!r} and at least {min_popularity} training users"
        )
    unit = unit_rows(model.item_embeddings)
    rows = np.flatnonzero(audited)
    nbr, sim = nearest_neighbours(unit[rows], neighbours)
    valid = nbr >= 0
    nbr_items = rows[np.where(valid, nbr, 0)]  # back to model indices
    own = matrix[rows]  # (m, V)
    theirs = matrix[nbr_items]  # (m, k, V)
    agree = (theirs & own[:, None, :]).any(axis=2) & valid
    weight = np.where(valid, np.maximum(np.nan_to_num(sim), 0.0) + 1e-6, 0.0)
    disagreement = 1.0 - (weight * agree).sum(1) / np.maximum(weight.sum(1), 1e-12)
    carried = (theirs & valid[:, :, None]).sum(axis=1).astype(np.float64)  # (m, V)
    carried[own] = -1  # the item's own values do not count as "different"
    other = carried.argmax(axis=1)
    other_share = np.maximum(carried[np.arange(len(rows)), other], 0) / np.maximum(valid.sum(1), 1)
    # Share of audited items (other than the item) sharing a value with it.
    # Computed once per distinct value set (few), not per pair of items.
    patterns, inverse = np.unique(own, axis=0, return_inverse=True)
    sharing = ((patterns.astype(np.float32) @ own.T.astype(np.float32)) > 0).sum(axis=1)
    expected = (sharing[inverse.ravel()] - 1) / max(len(rows) - 1, 1)

    flagged = np.flatnonzero(disagreement >= threshold - 1e-12)
    order = np.lexsort((-expected[flagged], -other_share[flagged], -disagreement[flagged]))
    flagged = flagged[order]
    ids = model.item_ids(np.arange(len(unit)))
    table = pd.DataFrame({
        "item": ids[rows[flagged]],
        "values": ["|".join(sorted(values[i])) for i in rows[flagged]],
        "disagreement": np.round(disagreement[flagged], 4),
        "neighbour_value": [names[j] for j in other[flagged]],
        "neighbour_share": np.round(other_share[flagged], 4),
        "expected_agreement": np.round(expected[flagged], 4),
        "popularity": popularity[rows[flagged]],
        "neighbours": [" ".join(map(str, ids[nbr_items[r][valid[r]][:5]])) for r in flagged],
    })
    tcol = title_column(features)
    if tcol is not None:
        table.insert(1, "title", features[tcol].to_numpy(dtype=object)[rows[flagged]])
    return table
