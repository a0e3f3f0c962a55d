"""Embedding diagnostics on synthetic data with planted clusters and a planted mislabelled item."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_invoke import run

from recsys.data.synthetic import GENRES, generate
from recsys.diagnostics import (
    align_items,
    cluster_items,
    clusters,
    embedding_map,
    label_audit,
    read_item_features,
    subsample,
    write_diagnostics,
)
from recsys.diagnostics.clusters import kmeans, nearest_neighbours
from recsys.diagnostics.maps import pca_2d
from recsys.diagnostics.metadata import values_of
from recsys.embeddings import unit_rows
from recsys.errors import ConfigError
from recsys.models import ALS

N_CLUSTERS = 5
ARI_THRESHOLD = 0.8


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """An ALS model on 5 planted clusters; item genres name the cluster, one item mislabelled.

    Returns (model, saved model dir, item table file, aligned item table, planted cluster
    of each model item, id of the mislabelled item).
    """
    data = generate(n_users=400, n_items=150, n_clusters=N_CLUSTERS, mean_items_per_user=25,
                    cold_item_fraction=0.0, feature_noise=0.0, seed=3)
    model = ALS(factors=16, epochs=10, random_state=0).fit(data.to_interactions())
    items = data.items.copy()
    ids = model.item_ids(np.arange(len(model.items)))
    cluster_of = dict(zip(data.items["item_id"], data.item_cluster))
    truth = np.array([cluster_of[i] for i in ids])
    # The most popular item of cluster 0, relabelled with cluster 1's genre only.
    in_zero = np.flatnonzero(truth == 0)
    wrong = ids[in_zero[np.argmax(model.item_popularity[in_zero])]]
    items.loc[items["item_id"] == wrong, "genres"] = GENRES[1]
    folder = tmp_path_factory.mktemp("planted")
    items_file = folder / "items.csv"
    items.to_csv(items_file, index=False)
    model.save(folder / "model")
    aligned = align_items(items, ids)
    return model, folder / "model", items_file, aligned, truth, wrong


def test_kmeans_recovers_planted_clusters(planted):
    from sklearn.metrics import adjusted_rand_score

    model, _, _, features, truth, _ = planted
    report = cluster_items(model, N_CLUSTERS, features=features)
    ari = adjusted_rand_score(truth, report.labels)
    assert ari > ARI_THRESHOLD, ari
    assert sum(c["size"] for c in report.summary) == len(truth)
    # Each cluster's dominant genre is the genre of the planted cluster it matches.
    for c in report.summary:
        members = report.labels == c["cluster"]
        majority = np.bincount(truth[members]).argmax()
        assert c["dominant"][0]["value"] == GENRES[majority]
        assert c["dominant"][0]["lift"] > 1.5
        pops = [p["popularity"] for p in c["popular"]]
        assert pops == sorted(pops, reverse=True) and "title" in c["popular"][0]


def test_pca_matches_the_principal_axes_and_keeps_its_sign():
    rng = np.random.default_rng(0)
    # Variance 9, 4, then 1 and 0.25 along four orthogonal directions, shifted off the origin.
    basis, _ = np.linalg.qr(rng.normal(size=(6, 4)))
    x = (rng.normal(size=(2000, 4)) * [3.0, 2.0, 1.0, 0.5]) @ basis.T + 5.0
    xy = pca_2d(x)
    assert np.allclose(xy.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(np.var(xy, axis=0), [9, 4], rtol=0.1)
    from sklearn.decomposition import PCA

    reference = PCA(n_components=2).fit_transform(x)
    assert np.allclose(np.abs(xy), np.abs(reference), atol=1e-8)  # the same axes, up to sign
    order = rng.permutation(len(x))  # signed by the largest loading, not by what the SVD returns
    assert np.allclose(pca_2d(x[order]), xy[order])
    assert np.allclose(pca_2d(-x), -xy)


def test_kmeans_fitted_on_a_sample_still_labels_every_point(monkeypatch):
    rng = np.random.default_rng(1)
    centres = np.eye(3, 8) * 4
    truth = rng.integers(0, 3, size=3000)
    points = centres[truth] + rng.normal(scale=0.3, size=(3000, 8))
    monkeypatch.setattr(clusters, "KMEANS_FIT_POINTS", 300)
    labels, found = kmeans(points, 3, random_state=0)
    assert labels.shape == (3000,) and found.shape == (3, 8)
    # Each planted cluster maps to exactly one found cluster, and every point follows it.
    mapping = {t: np.bincount(labels[truth == t]).argmax() for t in range(3)}
    assert sorted(mapping.values()) == [0, 1, 2]
    assert (labels == np.array([mapping[t] for t in truth])).all()
    again, _ = kmeans(points, 3, random_state=0)
    assert (again == labels).all()  # seeded


def test_planted_mislabelled_item_tops_the_audit(planted):
    model, _, _, features, _, wrong = planted
    table = label_audit(model, features, "genres")
    assert table.iloc[0]["item"] == wrong
    assert table.iloc[0]["neighbour_value"] == GENRES[0]
    assert table.iloc[0]["disagreement"] >= 0.8
    assert list(table["disagreement"]) == sorted(table["disagreement"], reverse=True)


def test_outliers_flag_a_planted_stray_vector(planted):
    model, *_ = planted
    stray = ALS(factors=16)
    stray.__dict__.update(model.__dict__)
    # Item 7 moved onto a new axis: orthogonal to every other item.
    factors = np.hstack([model.item_factors, np.zeros((len(model.items), 1), np.float32)])
    factors[7] = 0.0
    factors[7, -1] = 1.0
    stray.item_factors = factors
    report = cluster_items(stray, N_CLUSTERS)
    assert model.item_ids(np.array([7]))[0] in set(report.outliers["item"])
    assert {"centre_distance", "neighbour_distance", "reason"} <= set(report.outliers.columns)


def test_nearest_neighbours_leave_self_out_and_respect_candidates():
    unit = unit_rows(np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32))
    idx, _ = nearest_neighbours(unit, 2, batch=3)
    assert idx[0].tolist() == [1, 2]
    assert idx[3, 0] == 2
    idx, _ = nearest_neighbours(unit, 3, candidates=np.array([True, False, True, True]))
    assert 1 not in idx[0] and idx[0, -1] == -1  # only two other candidates


def test_subsample_keeps_every_popularity_band():
    rng = np.random.default_rng(0)
    popularity = np.concatenate([np.zeros(5000), np.ones(3000), rng.integers(2, 8, 1500), [500, 900, 1200]]).astype(int)
    keep = subsample(popularity, 400, seed=1)
    assert len(keep) == 400 and len(np.unique(keep)) == 400
    assert {9500, 9501, 9502} <= set(keep)  # the tiny head band is kept whole
    assert (popularity[keep] == 0).sum() >= 90  # the rare items keep a visible share
    assert (popularity[keep] == 1).sum() >= 90
    assert subsample(popularity[:10], 400).tolist() == list(range(10))


def test_png_and_html_maps(planted, tmp_path):
    model, _, _, features, _, wrong = planted
    png = embedding_map(model, color="genres", features=features, hover=("year",)).save(tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    emap = embedding_map(model, color="genres", features=features, hover=("year",))
    html = emap.save(tmp_path / "m.html").read_text()
    assert "<script" in html and "<script src=" not in html  # plotly.js inlined: works offline
    assert len(html) > 1_000_000
    figure = _figure_json(html)
    traces = figure["data"]
    assert len(traces) >= N_CLUSTERS  # one per genre: legend toggles them
    assert figure["layout"]["dragmode"] == "lasso"
    assert all("%{customdata[0]}" in t["hovertemplate"] and "title" in t["hovertemplate"] for t in traces)
    hovered = {row[0]: row[1] for t in traces for row in t["customdata"]}
    assert hovered[wrong].startswith("Title ")
    assert "plotly_selected" in html and "recsys-selection" in html
    # Users map, popularity colour.
    users = embedding_map(model, of="users", method="tsne", max_points=100)
    assert len(users.points) == 100 and not users.categorical


def _figure_json(html: str) -> dict:
    """The figure plotly embeds in its page: Plotly.newPlot(id, data, layout, config)."""
    import plotly.io

    start = html.index("Plotly.newPlot(")
    call = html[start:]
    data_start = call.index("[")
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(call, data_start)
    layout_start = re.compile(r"\s*,\s*").match(call, end).end()
    layout, _ = decoder.raw_decode(call, layout_start)
    plotly.io.from_json(json.dumps({"data": data, "layout": layout}))  # a valid figure
    return {"data": data, "layout": layout}


def test_map_errors_are_clear(planted):
    model, _, _, features, _, _ = planted
    with pytest.raises(ConfigError, match="item-features"):
        embedding_map(model, color="genres")
    with pytest.raises(ConfigError, match="no column"):
        embedding_map(model, color="nope", features=features)
    with pytest.raises(ConfigError, match=r"png or \.html"):
        embedding_map(model).save("map.svg")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="umap-learn"):
            embedding_map(model, method="umap")


def test_write_diagnostics_for_run_artifacts(planted, tmp_path):
    model, _, _, features, _, _ = planted
    paths = write_diagnostics(model, tmp_path / "diag", features=features)
    assert paths["map"].name == "embedding_map.png" and paths["map"].is_file()
    summary = json.loads(paths["clusters"].read_text())
    assert summary["column"] == "genres" and summary["clusters"]
    from recsys.models import Popular

    popular = Popular().fit(generate(n_users=50, n_items=30, seed=0).to_interactions())
    assert write_diagnostics(popular, tmp_path / "none") == {}
    with pytest.raises(ConfigError, match="distinct directions"):
        cluster_items(popular, 3)


def test_align_items_matches_text_and_integer_ids():
    frame = pd.DataFrame({"movieId": ["3", "1", "9"], "title": ["c", "a", "z"]})
    aligned = align_items(frame, np.array([1, 2, 3]))
    assert aligned["title"].tolist()[::2] == ["a", "c"] and pd.isna(aligned["title"].iloc[1])
    from recsys.errors import InputError

    with pytest.raises(InputError, match="matches"):
        align_items(frame, np.array([100, 200]))


# -- command line -----------------------------------------------------------------------------
def test_cli_plot_clusters_audit(planted, tmp_path: Path):
    _, model_dir, items_file, _, _, wrong = planted
    out = tmp_path / "map.html"
    r = run("embeddings", "plot", "--model", str(model_dir), "--item-features", str(items_file),
             "--color", "genres", "--out", str(out), "--format", "json", "--quiet")
    assert json.loads(r.stdout)["points"] == 150 and out.is_file()
    run("embeddings", "plot", "--model", str(model_dir), "--color", "cluster", "--out", str(tmp_path / "m.png"), "-q")
    assert (tmp_path / "m.png").is_file()
    r = run("embeddings", "clusters", "--model", str(model_dir), "--k", "5", "--item-features", str(items_file),
             "--format", "json")
    assert len(json.loads(r.stdout)["clusters"]) == 5
    r = run("embeddings", "clusters", "--model", str(model_dir), "--item-features", str(items_file))
    assert "popular:" in r.stdout
    r = run("embeddings", "audit", "--model", str(model_dir), "--item-features", str(items_file),
             "--column", "genres", "--format", "json", "--out", str(tmp_path / "audit.csv"))
    assert json.loads(r.stdout)[0]["item"] == wrong
    assert pd.read_csv(tmp_path / "audit.csv")["item"].iloc[0] == wrong
    r = run("embeddings", "audit", "--model", str(model_dir), "--item-features", str(items_file),
             "--column", "nope", code=2)
    assert "no column 'nope'" in r.output and "Traceback" not in r.output


def test_cli_plot_options(planted, tmp_path: Path):
    """--of users, --method tsne, --max-points and --hover, through the command line."""
    _, model_dir, items_file, _, _, _ = planted
    r = run("embeddings", "plot", "--model", str(model_dir), "--of", "users", "--method", "tsne",
            "--max-points", "60", "--out", str(tmp_path / "users.png"), "--format", "json", "--quiet")
    payload = json.loads(r.stdout)
    assert (payload["points"], payload["total"], payload["method"]) == (60, 400, "tsne")
    assert (tmp_path / "users.png").stat().st_size > 0
    out = tmp_path / "items.html"
    run("embeddings", "plot", "--model", str(model_dir), "--item-features", str(items_file),
        "--hover", "year", "--out", str(out), "--quiet")
    assert "year: %{customdata" in out.read_text()  # the hover column is in the points' hover text


def test_cli_item_id_col_names_the_id_column(planted, tmp_path: Path):
    """--item-id-col picks the id column of a table with two columns of catalogue ids."""
    _, model_dir, items_file, _, _, wrong = planted
    table = pd.read_csv(items_file)
    id_col = next(c for c in ("item_id", "item", "movieId", "id") if c in table.columns)
    renamed = table.rename(columns={id_col: "sku"})
    renamed.insert(1, "decoy", np.roll(renamed["sku"].to_numpy(), 1))  # the same ids, each on the wrong row
    odd = tmp_path / "odd.csv"
    renamed.to_csv(odd, index=False)
    audit = ["embeddings", "audit", "--model", str(model_dir), "--item-features", str(odd), "--column", "genres",
             "--format", "json"]
    assert json.loads(run(*audit, "--item-id-col", "sku").stdout)[0]["item"] == wrong
    assert json.loads(run(*audit, "--item-id-col", "decoy").stdout)[0]["item"] != wrong
    r = run("embeddings", "audit", "--model", str(model_dir), "--item-features", str(odd), "--item-id-col", "nope",
            "--column", "genres", code=2)
    assert "nope" in r.output and "Traceback" not in r.output


def test_audit_and_cluster_counts_are_checked(planted, tmp_path: Path):
    _, model_dir, items_file, _, _, _ = planted
    r = run("embeddings", "audit", "--model", str(model_dir), "--item-features", str(items_file),
            "--column", "genres", "--neighbours", "0", code=2)
    assert "neighbours must be at least 1" in r.output
    r = run("embeddings", "clusters", "--model", str(model_dir), "--top", "-1", code=2)
    assert "top must be 0 or more" in r.output


def test_item_table_separator_is_guessed_as_for_feature_tables(planted, tmp_path: Path):
    """Regression (review): a tab-separated .txt table, which training reads, failed here."""
    _, model_dir, items_file, _, _, wrong = planted
    tabbed = tmp_path / "items.txt"
    pd.read_csv(items_file).to_csv(tabbed, sep="\t", index=False)
    r = run("embeddings", "audit", "--model", str(model_dir), "--item-features", str(tabbed),
            "--column", "genres", "--format", "json")
    assert json.loads(r.stdout)[0]["item"] == wrong


def test_movielens_u_item_reads_without_flags(tmp_path: Path):
    """Regression: read_item_features read every text table as UTF-8 with a header row, so
    MovieLens 100K's u.item (Latin-1, '|'-separated, no header) failed with 'cannot read the
    item table ('utf-8' codec can't decode byte 0xe9 ...)'."""
    flags = ["0"] * 19
    drama = flags.copy()
    drama[8] = "1"
    rows = ["1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0", "0", "0", "1", "1", "1", *flags[6:]]),
            "2|Café Society (1996)|01-Jan-1996||http://y|" + "|".join(drama),
            "3|Untitled (????)|||http://z|" + "|".join(flags)]
    path = tmp_path / "u.item"
    path.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    frame = align_items(read_item_features(path), np.array([3, 1, 2]))
    assert values_of(frame["genres"]) == [frozenset(), frozenset({"Animation", "Children's", "Comedy"}),
                                          frozenset({"Drama"})]
    assert pd.isna(frame["year"].iloc[0]) and frame["year"].tolist()[1:] == ["1995", "1996"]
    # The titles come along for people reading the diagnostics (training leaves them out).
    assert frame["title"].tolist() == ["Untitled (????)", "Toy Story (1995)", "Café Society (1996)"]
