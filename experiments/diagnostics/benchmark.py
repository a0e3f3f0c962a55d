"""Embedding diagnostics on a public data set: item maps, clusters, label audit, beyond accuracy.

One script, one config per data set (``configs/<name>.toml``: the files, the model, the
settings); each run writes ``results/<name>.<part>.<date>.<commit>.json`` (``clusters``,
``audit``, ``beyond``) and the maps beside them as ``.png``; ``table`` puts the newest into
the README. Run from the repository root:

    python -m experiments.diagnostics.benchmark run [--config ml-100k]        # ~45 s on 2 busy cores
    python -m experiments.diagnostics.benchmark screenshot [--config ml-100k] # needs chromium
    python -m experiments.diagnostics.benchmark table [--config ml-100k]

``run`` trains the config's model and baseline with ``recsys.jobs.train`` on a per-user
80/20 split, turns the MovieLens item files into an item table (``item_id,title,year,genres``
with the genre flags joined by ``|``), and writes with the library (``recsys.diagnostics``):
PCA and t-SNE maps coloured by the config's column and a t-SNE map coloured by popularity;
k-means clusters and outliers; the label audit; accuracy and beyond-accuracy figures of
both models, diversity also in the model's item space. The interactive map goes to
``--html`` (not committed: it inlines plotly.js and is several MB); ``screenshot`` photographs
it in headless Chromium after a box selection and a hover.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import common
from recsys.diagnostics import cluster_items, embedding_map, label_audit, load_item_features
from recsys.evaluation.beyond import beyond_accuracy
from recsys.jobs import ReadOptions, TrainConfig, train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURES = {
    "items-tsne": "t-SNE of the normalized item factors, coloured by {column} (an item with several takes its least common one)",
    "items-tsne-popularity": "the same layout coloured by training popularity (log scale)",
    "items-pca": "PCA, coloured by {column}",
    "items-html": "the interactive page (`--html`, not committed) in headless Chromium after a box selection "
                  "(listed under the plot) and a hover",
}


def item_table(items: Path, genres: Path, out: Path) -> Path:
    """MovieLens's ``u.item`` (``|``-separated, Latin-1, genre flags) as ``item_id,title,year,genres``."""
    names = [line.split("|")[0] for line in genres.read_text(encoding="latin-1").splitlines() if line]
    cols = ["item_id", "title", "release", "video", "url", *names]
    raw = pd.read_csv(items, sep="|", names=cols, encoding="latin-1", dtype=str)
    flags = raw[names].astype(int).to_numpy().astype(bool)
    raw["genres"] = ["|".join(g for g, f in zip(names, row) if f and g != "unknown") for row in flags]
    raw["year"] = raw["release"].str[-4:]
    raw[["item_id", "title", "year", "genres"]].to_csv(out, index=False)
    return out


def stage_run(name: str, config: dict[str, Any], data_dir: Path, html: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    html.parent.mkdir(parents=True, exist_ok=True)
    ratings = common.data_file(config["ratings"], data_dir)
    items_csv = item_table(common.data_file(config["items"], data_dir), common.data_file(config["genres"], data_dir),
                           work / "items.csv")
    ks, column = tuple(config["ks"]), config["column"]
    runs = {}
    for spec in (config["model"], config["baseline"]):
        settings = TrainConfig(model=spec["model"], params=dict(spec.get("params", {})), ks=ks, seed=config["seed"])
        runs[spec["model"]] = train(ratings, settings, read_options=ReadOptions(**config["read"]), output=work / spec["model"])
    main = runs[config["model"]["model"]]
    model = main.model
    features = load_item_features(model, items_csv)

    for method in config["maps"]:
        embedding_map(model, method=method, color=column, features=features).save(_figure(name, f"items-{method}"))
    embedding_map(model, method="tsne", color="popularity", features=features).save(_figure(name, "items-tsne-popularity"))
    embedding_map(model, method="tsne", color=column, features=features, hover=("year", column)).save(html)

    settings = {"model": config["model"], "seed": config["seed"]}
    report = cluster_items(model, features=features)
    common.write_result(RESULTS, f"{name}.clusters", {**settings, **report.to_dict()})
    audit = label_audit(model, features, column, **config["audit"])
    common.write_result(RESULTS, f"{name}.audit", {**settings, "column": column, **config["audit"],
                                                   "rows": audit.to_dict(orient="records")})
    metrics = {label: dict(run.evaluation.metrics) for label, run in runs.items()}
    # Diversity in each model's own space is not comparable (popularity's factors are its
    # counts, one dimension): also measure both models' lists in the diagnosed model's space.
    users = np.flatnonzero(np.diff(main.test.matrix.indptr) > 0)
    for label, run in runs.items():
        top, _ = run.model.recommend_indices(users, max(ks))
        figures = beyond_accuracy(top, ks, model.item_popularity, model.item_factors)
        for k in ks:
            metrics[label][f"diversity@{k} ({model.name.upper()} space)"] = figures[f"diversity@{k}"]
    path = common.write_result(RESULTS, f"{name}.beyond", {**settings, "ks": ks, "metrics": metrics})
    common.say(f"{len(audit)} items flagged by the audit; clusters k={report.k}; outliers {len(report.outliers)}; "
               f"wrote {path.parent}")


def _figure(name: str, figure: str) -> Path:
    return common.result_path(RESULTS, f"{name}.{figure}", ".png")


def stage_screenshot(name: str, html: Path) -> None:
    """The interactive map in headless Chromium, after a box selection and a hover."""
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1150"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(html.resolve().as_uri())
        time.sleep(3)
        driver.execute_script("Plotly.relayout(document.getElementById('recsys-map'), {dragmode: 'select'});")
        area = driver.find_element("css selector", "rect.nsewdrag")
        w, h = area.size["width"], area.size["height"]
        # A box over the upper-left part of the map, then hover one point.
        (ActionChains(driver).move_to_element_with_offset(area, -w // 2 + 40, -h // 2 + 40).click_and_hold()
         .move_by_offset(w // 6, h // 6).move_by_offset(w // 6, h // 6).release().perform())
        time.sleep(1)
        point = driver.find_elements("css selector", "g.trace path.point")[0]
        ActionChains(driver).move_to_element(point).perform()
        time.sleep(1)
        common.say(driver.find_element("id", "recsys-selection").text[:400])
        _figure(name, "items-html").write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()


# -- table: the README's tables from the newest results ----------------------------------
def maps_table(name: str, column: str) -> list[str]:
    rows = []
    for figure, what in FIGURES.items():
        paths = common.result_files(RESULTS, f"{name}.{figure}", ".png")
        if paths:
            rows.append((f"[`{paths[-1].name}`](results/{paths[-1].name})", what.format(column=column)))
    return common.markdown_table(["file", "what"], rows)


def clusters_table(name: str) -> list[str]:
    result = common.latest_result(RESULTS, f"{name}.clusters")
    if result is None:
        return []
    rows = []
    for c in result["clusters"]:
        dominant = ", ".join(f"{d['value']} {d['share']:.0%} (x{d['lift']:.1f})" for d in c.get("dominant", []))
        popular = "; ".join(p.get("title", str(p["item"])) for p in c["popular"][:4])
        rows.append((c["cluster"], c["size"], dominant, popular))
    return [f"k-means, k = {result['k']}, on the normalized item factors; {result['untrained_items_left_out']} items "
            f"without training data left out; {len(result['outliers'])} outliers ({result['outlier_rule']}); "
            f"{common.sources(RESULTS, [result])}.", "",
            *common.markdown_table(["cluster", "size", f"top {result['column']} (share, lift)", "most popular"], rows)]


def audit_table(name: str, shown: int = 10) -> list[str]:
    result = common.latest_result(RESULTS, f"{name}.audit")
    if result is None:
        return []
    flagged = pd.DataFrame(result["rows"])
    top = flagged.sort_values("popularity", ascending=False).head(shown)
    rows = [(r.title, r.values, f"{r.disagreement:.2f}", f"{r.neighbour_value} ({r.neighbour_share:.0%})", r.popularity)
            for r in top.itertuples()]
    return [f"{len(flagged)} items flagged ({result['neighbours']} nearest neighbours, disagreement >= "
            f"{result['threshold']}, at least {result['min_popularity']} training users); the {shown} most popular "
            f"of them ({common.sources(RESULTS, [result])}):", "",
            *common.markdown_table(["title", result["column"], "disagreement", "neighbours' value (share)", "training users"], rows)]


def beyond_table(name: str) -> list[str]:
    result = common.latest_result(RESULTS, f"{name}.beyond")
    if result is None:
        return []
    models = list(result["metrics"])
    names = list(dict.fromkeys(m for model in models for m in result["metrics"][model]))
    rows = [(metric, *(_figure_cell(result["metrics"][model].get(metric)) for model in models)) for metric in names]
    return [f"Per-user 80/20 split, seed {result['seed']}; {common.sources(RESULTS, [result])}.", "",
            *common.markdown_table(["metric", *models], rows)]


def _figure_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def stage_table(name: str, column: str) -> None:
    readme, top = HERE / "README.md", HERE.parent / "README.md"
    module = "experiments.diagnostics.benchmark"
    common.publish_table(module, maps_table(name, column), [(readme, f"{name}/maps")])
    common.publish_table(module, clusters_table(name), [(readme, f"{name}/clusters")])
    common.publish_table(module, audit_table(name), [(readme, f"{name}/audit")])
    common.publish_table(module, beyond_table(name), [(readme, f"{name}/beyond"), (top, f"diagnostics/{name}/beyond")])
    tsne = common.result_files(RESULTS, f"{name}.items-tsne", ".png")
    if tsne:
        common.publish_table(module, [f"![{name} item map by {column}](diagnostics/results/{tsne[-1].name})"],
                             [(top, f"diagnostics/{name}/map")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["run", "screenshot", "table"])
    parser.add_argument("--config", default="ml-100k", help="configs/CONFIG.toml")
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR)
    parser.add_argument("--html", type=Path, default=Path("/tmp/recsys-diagnostics/items.html"),
                        help="run: where the interactive map goes; screenshot: the page to photograph")
    parser.add_argument("--work", type=Path, default=Path("/tmp/recsys-diagnostics"),
                        help="run: the item table and the trained models")
    args = parser.parse_args(argv)
    config = common.read_config(HERE / "configs" / f"{args.config}.toml")
    if args.stage == "run":
        stage_run(args.config, config, args.data_dir, args.html, args.work)
    elif args.stage == "screenshot":
        stage_screenshot(args.config, args.html)
    else:
        stage_table(args.config, config["column"])


if __name__ == "__main__":
    main()
