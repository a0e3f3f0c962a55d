"""2D maps of a model's embeddings: a PNG for reports, a self-contained HTML page to explore.

The map projects the *normalized* factors (cosine geometry, as in
:mod:`recsys.diagnostics.clusters`) to two dimensions with PCA (an SVD in NumPy), t-SNE
(scikit-learn), or UMAP when the optional ``umap-learn`` is installed
(``pip install 'recsys[umap]'``).

Subsampling rule (``max_points``, default 5000): a catalogue up to that size is drawn
whole. A larger one is split into popularity bands by powers of two of the number of
training users (0, 1, 2-3, 4-7, 8-15, ...); the points are shared equally among the
bands, a band smaller than its share is kept whole and its leftover is shared among the
others; within a band points are drawn at random (seeded). So the few head items are all
on the map and the rare items, however many, keep a visible share instead of being drowned
or dropped. Points are drawn with the rarest on top. Items (users) without training data
have vectors that were never learned; they are left out and counted in the title.

Colouring: ``popularity`` (log scale), ``cluster`` (k-means labels on the full factors,
see :func:`recsys.diagnostics.clusters.kmeans`), or the name of a column of the item table.
A categorical column with several values per item (``Drama|War``) colours each item by
its least common value in the catalogue, the most specific one (``War``); the hover text
shows all of them. The 12 most common colour values are shown, the rest as ``other``.
A numeric column gets a continuous scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsys.artifacts import OutputKind, atomic_file, starts_with
from recsys.diagnostics.clusters import default_k, kmeans, trained_items
from recsys.diagnostics.metadata import require_column, title_column, values_of
from recsys.embeddings import Embeddings, EmbeddingSource, unit_rows
from recsys.errors import ConfigError
from recsys.progress import status
from recsys.seeding import as_generator

Method = Literal["pca", "tsne", "umap"]
METHODS: tuple[str, ...] = ("pca", "tsne", "umap")
MAX_CATEGORIES = 12
# Twelve distinguishable colours (matplotlib's tab10 without its grey, then three more);
# grey is kept for "other" and "(none)".
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#000000", "#b8860b", "#00008b")
GREY = "#c0c0c0"
NO_VALUE = "(none)"
OTHER = "other"

# An earlier map is recognised by the mark recsys leaves in it (a PNG text chunk; the page's
# div id), not by the library that drew it: a user's own figure is not ours to replace.
_MARK = "recsys embedding map"
MAP_PNG = OutputKind("PNG embedding map", recognise=starts_with(_MARK))
MAP_HTML = OutputKind("HTML embedding map", recognise=starts_with('id="recsys-map"', limit=1 << 26))


def map_kind(path: str | os.PathLike) -> OutputKind:
    """The kind of map a path asks for, by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return MAP_PNG
    if suffix in (".html", ".htm"):
        return MAP_HTML
    raise ConfigError(f"{path}: the map is written as .png or .html")


def subsample(popularity: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of at most ``max_points`` items, by the module's popularity-band rule."""
    popularity = np.asarray(popularity)
    n = len(popularity)
    if max_points < 1:
        raise ConfigError(f"max_points must be positive, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    rng = as_generator(seed)
    band = np.where(popularity > 0, np.floor(np.log2(np.maximum(popularity, 1))) + 1, 0).astype(np.int64)
    members = [np.flatnonzero(band == b) for b in np.unique(band)]
    sizes = np.array([len(m) for m in members])
    # Water-filling: equal shares, small bands kept whole, leftovers passed on.
    quota = np.zeros(len(members), dtype=np.int64)
    left, open_bands = max_points, np.ones(len(members), dtype=bool)
    while left > 0 and open_bands.any():
        share = max(left // int(open_bands.sum()), 1)
        for b in np.flatnonzero(open_bands):
            take = min(share, sizes[b] - quota[b], left)
            quota[b] += take
            left -= take
            if quota[b] == sizes[b]:
                open_bands[b] = False
            if left == 0:
                break
    chosen = [rng.choice(m, size=q, replace=False) for m, q in zip(members, quota) if q]
    return np.sort(np.concatenate(chosen))


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the rows of ``x`` (n, d), d >= 2.

    An SVD of the centred points (at most a few thousand of them: maps are subsampled), each
    axis signed so that its largest loading is positive, so a map does not flip between runs.
    """
    centred = np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes *= np.sign(axes[np.arange(2), np.argmax(np.abs(axes), axis=1)])[:, None]
    return centred @ axes.T


def project(vectors: np.ndarray, method: Method = "pca", random_state: int = 0) -> np.ndarray:
    """Two-dimensional coordinates of ``vectors`` (n, d), shape (n, 2)."""
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 3:
        raise ConfigError(f"a map needs at least 3 points, got {n}")
    if method == "pca":
        out = pca_2d(x) if x.shape[1] >= 2 else np.hstack([x, np.zeros_like(x)])
    elif method == "tsne":
        from sklearn.manifold import TSNE

        if x.shape[1] > 50:  # the usual PCA step before t-SNE, for speed
            from sklearn.decomposition import PCA

            x = PCA(n_components=50, random_state=random_state).fit_transform(x)
        perplexity = float(min(30.0, (n - 1) / 3))
        out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state).fit_transform(x)
    elif method == "umap":
        try:
            import umap
        except ImportError:
            raise ConfigError(
                "--method umap needs the optional package umap-learn: pip install 'recsys[umap]' "
                "(or use --method pca or tsne)"
            ) from None
        out = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=random_state).fit_transform(x)
    else:
        raise ConfigError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    return np.asarray(out, dtype=np.float64)


@dataclass
class EmbeddingMap:
    """Projected points and what colours them.

    ``points`` has columns ``id``, ``x``, ``y``, ``popularity``, ``color`` and the hover
    columns (``title`` first when known); ``categorical`` tells whether ``color`` holds
    labels (one legend entry each) or numbers.
    """

    points: pd.DataFrame
    of: str
    method: str
    color_by: str
    categorical: bool
    n_total: int
    n_learned: int = -1

    @property
    def title(self) -> str:
        learned = self.n_total if self.n_learned < 0 else self.n_learned
        shown = f"{len(self.points)} of {learned} drawn" if len(self.points) < learned else f"{learned}"
        if learned < self.n_total:
            shown += f"; {self.n_total - learned} without training data left out"
        return f"{self.of} embeddings ({shown}), {self.method.upper()}, coloured by {self.color_by}"

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.png`` or ``.html`` (by the suffix) atomically."""
        path = Path(path)
        return save_png(self, path) if map_kind(path) is MAP_PNG else save_html(self, path)


def embedding_map(
    model: EmbeddingSource,
    *,
    of: Literal["items", "users"] = "items",
    method: Method = "pca",
    color: str = "popularity",
    features: pd.DataFrame | None = None,
    hover: tuple[str, ...] = (),
    max_points: int = 5000,
    k: int | None = None,
    random_state: int = 0,
    progress: bool = False,
) -> EmbeddingMap:
    """Project the model's item (or user) factors to 2D and attach colours and hover text.

    ``features`` is an item table aligned to the model's items
    (:func:`recsys.diagnostics.metadata.align_items`); it gives titles, hover columns and
    ``color=COLUMN``. Users have no table: they are coloured by ``popularity`` (their
    number of training items) or ``cluster``.

    Examples
    --------
    >>> embedding_map(model, method="tsne", color="genres", features=items).save("map.html")
    """
    model = Embeddings.of(model)
    if of not in ("items", "users"):
        raise ConfigError(f"--of takes items or users, got {of!r}")
    if of == "items":
        factors = model.item_embeddings
        popularity = np.asarray(model.item_popularity)
        ids = model.item_ids(np.arange(len(factors)))
    else:
        factors = model.user_embeddings
        popularity = np.diff(model.seen.indptr)
        ids = model.users.ids
        if color not in ("popularity", "cluster"):
            raise ConfigError("users are coloured by popularity or cluster (there is no user table)")
        features = None
    if method not in METHODS:
        raise ConfigError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    unit = unit_rows(factors)
    # Items (users) without training data have unlearned vectors: left out of the map.
    if of == "items":
        learned = np.flatnonzero(trained_items(model))  # cold items too, where features embed them
    else:
        learned = np.flatnonzero((popularity > 0) & (np.linalg.norm(factors, axis=1) > 0))
    keep = learned[subsample(popularity[learned], max_points, random_state)]
    # t-SNE on thousands of points takes a minute or more: say so while it runs.
    with status(f"{method} on {len(keep):,} points", progress):
        xy = project(unit[keep], method, random_state)
    points = pd.DataFrame({"id": np.asarray(ids)[keep], "x": xy[:, 0], "y": xy[:, 1], "popularity": popularity[keep]})

    categorical = True
    if color == "popularity":
        points["color"] = popularity[keep]
        categorical = False
    elif color == "cluster":
        labels = np.full(len(unit), -1, dtype=np.int64)
        labels[learned], _ = kmeans(unit[learned], default_k(len(learned)) if k is None else k, random_state)
        points["color"] = [f"cluster {c}" for c in labels[keep]]
    else:
        if features is None:
            raise ConfigError(f"--color {color}: give the item table with --item-features")
        column = require_column(features, color)
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().sum() > 0 and numeric.notna().sum() == column.notna().sum():
            points["color"] = numeric.to_numpy()[keep]
            categorical = False
        else:
            points["color"] = _category_labels(values_of(column))[keep]
    if features is not None:
        tcol = title_column(features)
        for name in dict.fromkeys([*([tcol] if tcol else []), *([color] if color in features.columns else []), *hover]):
            points[name] = require_column(features, name).to_numpy(dtype=object)[keep]
    # Rarest drawn last, on top.
    points = points.iloc[np.argsort(-points["popularity"].to_numpy(), kind="stable")].reset_index(drop=True)
    return EmbeddingMap(points, of, method, color, categorical, len(factors), len(learned))


def _category_labels(values: list[frozenset[str]]) -> np.ndarray:
    counts: dict[str, int] = {}
    for s in values:
        for v in s:
            counts[v] = counts.get(v, 0) + 1
    # Each item: its least common value (ties: alphabetical).
    label = np.array([min(s, key=lambda v: (counts[v], v)) if s else NO_VALUE for s in values], dtype=object)
    shown = pd.Series(label[label != NO_VALUE]).value_counts().index[:MAX_CATEGORIES]
    return np.where(np.isin(label, [*shown, NO_VALUE]), label, OTHER)


def _colour(category: str, order: list[str]) -> str:
    return GREY if category in (OTHER, NO_VALUE) else PALETTE[order.index(category) % len(PALETTE)]


def _category_order(points: pd.DataFrame) -> list[str]:
    counts = points["color"].value_counts()
    named = [c for c in counts.index if c not in (OTHER, NO_VALUE)]
    return named + [c for c in (OTHER, NO_VALUE) if c in counts.index]


def save_png(emap: EmbeddingMap, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """A static scatter plot (matplotlib, Agg backend) written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    pts = emap.points
    size = float(np.clip(20000 / max(len(pts), 1), 3, 40))
    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=dpi)
    try:
        if emap.categorical:
            order = _category_order(pts)
            # Grey "other" first, then the largest categories, so that small ones stay on top.
            handles = {}
            for cat in sorted(order, key=lambda c: c not in (OTHER, NO_VALUE)):
                sel = pts["color"] == cat
                handles[cat] = ax.scatter(pts.loc[sel, "x"], pts.loc[sel, "y"], s=size, color=_colour(cat, order),
                                          alpha=0.75, linewidths=0, label=f"{cat} ({int(sel.sum())})")
            ax.legend(handles=[handles[c] for c in order], loc="center left", bbox_to_anchor=(1.01, 0.5),
                      fontsize=8, markerscale=2, frameon=False)
        else:
            values = pts["color"].to_numpy(dtype=np.float64)
            norm = LogNorm(vmin=max(values.min(), 1), vmax=max(values.max(), 2)) if emap.color_by == "popularity" else None
            shown = np.maximum(values, 1) if norm is not None else values
            sc = ax.scatter(pts["x"], pts["y"], c=shown, s=size, cmap="viridis", norm=norm, alpha=0.8, linewidths=0)
            fig.colorbar(sc, ax=ax, label=emap.color_by + (" (training users, log scale)" if emap.color_by == "popularity" else ""))
        ax.set_title(emap.title)
        ax.set_xlabel(f"{emap.method} 1")
        ax.set_ylabel(f"{emap.method} 2")
        fig.tight_layout()
        path = Path(path)
        with atomic_file(path, kind=MAP_PNG) as tmp:
            fig.savefig(tmp, format="png", metadata={"Description": _MARK})
    finally:
        plt.close(fig)
    return path


# Lists the points of a lasso or box selection under the plot; plotly has the selection
# events but no built-in list of what is selected.
_SELECTION_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var out = document.createElement('pre');
out.id = 'recsys-selection';
out.textContent = 'Lasso or box-select points to list them here.';
gd.parentNode.appendChild(out);
gd.on('plotly_selected', function (ev) {
  var pts = (ev && ev.points) || [];
  out.textContent = pts.length + ' selected\\n' + pts.map(function (p) {
    return p.customdata.slice(0, 2).join('\\t');
  }).join('\\n');
});
gd.on('plotly_deselect', function () { out.textContent = '0 selected'; });
"""


def map_figure(emap: EmbeddingMap):
    """The plotly figure of a map: one trace per category (legend toggles them)."""
    import plotly.graph_objects as go

    pts = emap.points
    extra = [c for c in pts.columns if c not in ("id", "x", "y", "popularity", "color")]
    custom_cols = ["id", *(extra[:1] or ["popularity"]), "popularity", *extra[1:]]
    custom_cols = list(dict.fromkeys(custom_cols))
    label = "item" if emap.of == "items" else "user"
    lines = [f"{label} %{{customdata[0]}}"] + [
        f"{c}: %{{customdata[{i}]}}" for i, c in enumerate(custom_cols) if i > 0
    ]
    template = "<br>".join(lines) + "<extra></extra>"

    def custom(frame: pd.DataFrame) -> np.ndarray:
        return frame[custom_cols].astype(object).where(frame[custom_cols].notna(), "").to_numpy()

    fig = go.Figure()
    if emap.categorical:
        order = _category_order(pts)
        for cat in order:
            sel = pts[pts["color"] == cat]
            fig.add_trace(go.Scatter(
                x=sel["x"], y=sel["y"], mode="markers", name=f"{cat} ({len(sel)})",
                customdata=custom(sel), hovertemplate=template,
                marker={"size": 6, "opacity": 0.8, "color": _colour(cat, order)},
            ))
    else:
        values = pts["color"].to_numpy(dtype=np.float64)
        log = emap.color_by == "popularity"
        fig.add_trace(go.Scatter(
            x=pts["x"], y=pts["y"], mode="markers", name=emap.color_by, customdata=custom(pts),
            hovertemplate=template,
            marker={"size": 6, "opacity": 0.8, "color": np.log10(np.maximum(values, 1)) if log else values,
                    "colorscale": "Viridis", "showscale": True,
                    "colorbar": {"title": {"text": "log10 " + emap.color_by if log else emap.color_by}}},
        ))
    fig.update_layout(
        title=emap.title, dragmode="lasso", hovermode="closest", template="plotly_white",
        xaxis_title=f"{emap.method} 1", yaxis_title=f"{emap.method} 2", height=750,
        legend={"title": {"text": emap.color_by}, "itemsizing": "constant"},
    )
    return fig


def save_html(emap: EmbeddingMap, path: str | os.PathLike) -> Path:
    """A self-contained interactive page (plotly.js inlined; works offline), written atomically.

    Zoom (scroll or box), pan, hover (id, title and hover columns), legend toggles, lasso
    and box selection that lists the selected items under the plot.
    """
    fig = map_figure(emap)
    path = Path(path)
    with atomic_file(path, kind=MAP_HTML) as tmp:
        fig.write_html(
            tmp, include_plotlyjs=True, full_html=True, post_script=_SELECTION_SCRIPT,
            config={"scrollZoom": True, "displaylogo": False}, div_id="recsys-map",
        )
    return path
