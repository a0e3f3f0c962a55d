"""``recsys embeddings``: maps, clusters and a label audit of a saved model's embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from recsys_cli.common import Format, Quiet, command, note, print_json

app = typer.Typer(help="Look at a model's embeddings: 2D maps, clusters and outliers, label audit.", no_args_is_help=True)

ModelDir = Annotated[Path, typer.Option("--model", help="Saved model directory.")]
ItemFeatures = Annotated[Path | None, typer.Option("--item-features", help="Item table (CSV, TSV or Parquet with a header): id column, title, categories such as genres ('a|b' for several).")]
IdCol = Annotated[str | None, typer.Option("--item-id-col", help="Id column of the item table (default: item_id/item/movieId/id, else the best match).")]


def _load(model_dir: Path, item_features: Path | None, id_col: str | None):
    from recsys.diagnostics import load_item_features
    from recsys.models import load_model

    model = load_model(model_dir)
    return model, load_item_features(model, item_features, id_column=id_col)


@app.command("plot")
@command
def plot(
    model: ModelDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="map.png (static) or map.html (interactive, self-contained).")],
    of: Annotated[Literal["items", "users"], typer.Option("--of", help="Which factors to draw.")] = "items",
    method: Annotated[Literal["pca", "tsne", "umap"], typer.Option("--method", help="Projection; umap needs the optional umap-learn.")] = "pca",
    color: Annotated[str, typer.Option("--color", help="popularity, cluster, or a column of --item-features.")] = "popularity",
    item_features: ItemFeatures = None,
    item_id_col: IdCol = None,
    hover: Annotated[str, typer.Option("--hover", help="More item-table columns to show on hover, comma-separated.")] = "",
    max_points: Annotated[int, typer.Option("--max-points", help="Subsample larger catalogues to this many points (popularity bands, rare items kept).")] = 5000,
    k: Annotated[int | None, typer.Option("--k", help="Clusters for --color cluster (default: from the catalogue size).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the projection, subsample and k-means.")] = 0,
    fmt: Format = "table",
    quiet: Quiet = False,
) -> None:
    """Draw the model's item (or user) embeddings in 2D, as a PNG or an interactive HTML page."""
    from recsys.artifacts import check_output
    from recsys.diagnostics import embedding_map
    from recsys.diagnostics.maps import map_kind

    check_output(out, map_kind(out), inputs=[model, item_features])
    loaded, features = _load(model, item_features, item_id_col)
    columns = tuple(c.strip() for c in hover.split(",") if c.strip())
    emap = embedding_map(loaded, of=of, method=method, color=color, features=features, hover=columns,
                         max_points=max_points, k=k, random_state=seed, progress=not quiet)
    path = emap.save(out)
    if fmt == "json":
        print_json({"out": str(path), "points": len(emap.points), "total": emap.n_total,
                    "method": method, "color": color})
        return
    note(emap.title, quiet)
    print(path)


@app.command("clusters")
@command
def clusters(
    model: ModelDir,
    k: Annotated[int | None, typer.Option("--k", help="Number of clusters (default: round(sqrt(n_items / 20)) in [2, 20]).")] = None,
    item_features: ItemFeatures = None,
    item_id_col: IdCol = None,
    column: Annotated[str | None, typer.Option("--column", help="Categorical column whose dominant values each cluster lists (default: genres/genre/category).")] = None,
    top: Annotated[int, typer.Option("--top", help="Most popular items listed per cluster.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="k-means seed.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the summary as JSON to this file.")] = None,
    fmt: Format = "table",
    quiet: Quiet = False,
) -> None:
    """k-means clusters of the normalized item factors (size, popular items, dominant metadata) and outliers."""
    from recsys.artifacts import atomic_file, check_output, write_json
    from recsys.diagnostics import cluster_items
    from recsys.diagnostics.clusters import CLUSTER_SUMMARY

    if out is not None:
        check_output(out, CLUSTER_SUMMARY, inputs=[model, item_features])
    loaded, features = _load(model, item_features, item_id_col)
    report = cluster_items(loaded, k, features=features, column=column, top=top, random_state=seed)
    summary = report.to_dict()
    if out is not None:
        with atomic_file(out, kind=CLUSTER_SUMMARY) as tmp:
            write_json(tmp, summary)
    if fmt == "json":
        print_json(summary)
        return
    for c in report.summary:
        names = ", ".join(p.get("title", str(p["item"])) for p in c["popular"])
        print(f"cluster {c['cluster']:>2}  {c['size']:>6} items  popular: {names}")
        if c.get("dominant"):
            print("            " + ", ".join(f"{d['value']} {d['share']:.0%} (x{d['lift']:.1f})" for d in c["dominant"]))
    note(f"\n{len(report.outliers)} outliers (modified z-score above 3.5 for centre or nearest-neighbour distance)", quiet)
    if len(report.outliers):
        print(report.outliers.head(20).to_string(index=False))


@app.command("audit")
@command
def audit(
    model: ModelDir,
    item_features: Annotated[Path, typer.Option("--item-features", help="Item table with the categorical column.")],
    column: Annotated[str, typer.Option("--column", help="Categorical column to audit, e.g. genre ('a|b' for several values).")],
    item_id_col: IdCol = None,
    neighbours: Annotated[int, typer.Option("--neighbours", help="Nearest neighbours compared with each item.")] = 10,
    threshold: Annotated[float, typer.Option("--threshold", help="Report items whose neighbours disagree at least this much (0-1).")] = 0.8,
    min_popularity: Annotated[int, typer.Option("--min-popularity", help="Leave out items with fewer training users (noisy embeddings).")] = 5,
    limit: Annotated[int, typer.Option("--limit", help="Rows printed (the --out file has all).")] = 30,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the whole audit to this CSV or Parquet file.")] = None,
    fmt: Format = "table",
    quiet: Quiet = False,
) -> None:
    """List items whose nearest neighbours overwhelmingly carry a different category: candidates for mislabelled or unusual items."""
    from recsys.artifacts import check_output
    from recsys.diagnostics import label_audit
    from recsys.diagnostics.clusters import AUDIT_TABLE
    from recsys.jobs import write_table

    if out is not None:
        check_output(out, AUDIT_TABLE, inputs=[model, item_features])
    loaded, features = _load(model, item_features, item_id_col)
    assert features is not None
    table = label_audit(loaded, features, column, neighbours=neighbours, threshold=threshold,
                        min_popularity=min_popularity)
    if out is not None:
        write_table(table, out, AUDIT_TABLE)
    if fmt == "json":
        print_json(table.head(limit).to_dict(orient="records"))
        return
    note(f"{len(table)} items whose neighbours disagree with their {column} (>= {threshold:.0%})", quiet)
    if len(table):
        print(table.head(limit).to_string(index=False))
