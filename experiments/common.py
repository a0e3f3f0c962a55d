"""Shared by the experiment scripts: the public data sets, result files named by date and
commit, the machine, and implicit's ALS called directly.

Run the scripts as modules from the repository root (``python -m experiments.quality.benchmark``),
so that they import this one as ``experiments.common``.

``ImplicitALS`` is a thin :class:`~recsys.models.base.Recommender` around
``implicit.als.AlternatingLeastSquares``: one ``fit`` call with all iterations, as a user of
implicit would write it (no per-epoch loop of ours), so the reference's fit time is
implicit's own. It exists only so that evaluation (full ranking, seen items excluded) runs
through the same code for every model.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.interactions import Interactions
from recsys.data.io import read_interactions
from recsys.models.als import Weighting, confidence
from recsys.models.base import Recommender

DATA_DIR = Path(os.environ.get("RECSYS_BENCHMARK_DATA", "/work/shared/data"))

DATASETS: dict[str, str] = {
    "ml-100k": "ml-100k/u.data",
    "ml-latest-small": "ml-latest-small/ratings.csv",
    "lastfm-2k": "lastfm-2k/user_artists.dat",
}
"""Data set name -> file under the data folder (``--data-dir`` or ``$RECSYS_BENCHMARK_DATA``)."""


def load_dataset(name: str, data_dir: Path = DATA_DIR) -> Interactions:
    path = Path(data_dir) / DATASETS[name]
    if not path.is_file():
        raise SystemExit(f"{path}: not found; give --data-dir (or set RECSYS_BENCHMARK_DATA) to the folder of the public data sets")
    return read_interactions(path)


@functools.cache
def stamp() -> str:
    """``<UTC date>.<short commit>`` (``+dirty`` when the tree has changes): the name of a
    result file, so every figure can be traced to the code that produced it. Read once per
    process: the code a run imported is that of its start, whatever is committed meanwhile
    (run long benchmarks from a work tree of their own)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "nogit"
    dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", "recsys", "experiments") else ""
    return f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.{commit}{dirty}"


stamp()  # read now, when the benchmark starts and imports its code


def write_result(folder: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``folder/<name>.<stamp>.json`` with the machine recorded beside the payload."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{stamp()}.json"
    # "written" orders same-day results in a fresh checkout, where file times say nothing.
    written = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record = {"name": name, "stamp": stamp(), "written": written, "machine": machine(), **payload}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return path


def machine() -> dict[str, Any]:
    """The machine a result was measured on: processor, cores, memory, load, accelerator."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # an experiment without torch still records the rest
        gpu = None
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "gpu": gpu,
        "python": platform.python_version(),
    }


def machine_line(threads: int) -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} thread(s) per model, "
            f"load average {load} (a shared machine: timings are noisy)")


class ImplicitALS(Recommender):
    """implicit's ``AlternatingLeastSquares``, fitted in one call on our confidence matrix.

    ``weighting`` and ``alpha`` build the confidence matrix as ``recsys``'s ``als`` does
    (binary: alpha; log: alpha * log1p(r); linear: alpha * r) and implicit gets it with its
    own ``alpha=1``. ``callback(model, iteration)`` runs after each iteration (1-based) with
    the current factors set on ``model``; it is how the grid search scores several
    iteration counts from one fit.
    """

    name = "implicit-als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        weighting: Weighting = "auto",
        iterations: int = 15,
        num_threads: int = 1,
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.weighting = weighting
        self.iterations = iterations
        self.num_threads = num_threads
        self.random_state = random_state

    def _fit(self, data: Interactions, callback: Callable[[Recommender, int], Any] | None = None) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        conf = confidence(data.matrix, data.feedback, self.weighting, self.alpha)
        model = AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=1.0,
            iterations=self.iterations, num_threads=self.num_threads, random_state=self.random_state,
        )

        def on_iteration(iteration: int, _elapsed: float, _loss: float) -> None:
            self.user_factors = np.array(model.user_factors, dtype=np.float32)
            self.item_factors = np.array(model.item_factors, dtype=np.float32)
            callback(self, iteration + 1)

        with threadpool_limits(1, "blas"):  # implicit's own advice: no BLAS threads under its threads
            model.fit(conf, show_progress=False, callback=on_iteration if callback else None)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)


def train_as_a_user(data: Path, model: str | None = None, params: dict[str, Any] | None = None, seed: int = 0,
                    k: int = 20, test: Path | None = None, **options: Any) -> tuple[Any, dict[str, Any]]:
    """``recsys train --data DATA [--test TEST] [--model MODEL] --seed SEED`` through the library's
    own job (reading, splitting, fitting, scoring): what a user gets. ``model`` None: the job's
    default model; ``options`` go to :func:`recsys.jobs.train` (``save`` False unless given).

    Returns the job's result and its figures: ``model``, ``seed``, ``fitted_params``,
    ``fit_seconds``, ``job_seconds`` (the whole job, wall clock), ``recall@k`` and ``ndcg@k``.
    """
    from recsys.jobs import TrainConfig, train

    settings = TrainConfig(seed=seed, ks=(k,), params=dict(params or {}))
    if model is not None:
        settings.model = model
    options.setdefault("save", False)
    start = time.perf_counter()
    result = train(data, settings, test=test, **options)
    wall = time.perf_counter() - start
    metrics = result.evaluation.metrics
    return result, {"model": settings.model, "seed": seed, "fitted_params": result.model.fitted_params,
                    "fit_seconds": result.seconds["fit"], "job_seconds": wall,
                    f"recall@{k}": metrics[f"recall@{k}"], f"ndcg@{k}": metrics[f"ndcg@{k}"]}


# -- shared by the benchmark scripts: configs, result files, README tables -----------------
def read_config(path: Path) -> dict[str, Any]:
    """A benchmark's config (TOML): what varies between runs (data files, seeds, models,
    settings); the script holds the protocol."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such config")
    return tomllib.loads(path.read_text())


def data_file(relative: str | Path, data_dir: Path = DATA_DIR) -> Path:
    """A file of the public data sets, under ``data_dir``; a clear exit when it is absent."""
    path = Path(data_dir) / relative
    if not path.is_file():
        raise SystemExit(f"{path}: not found; give --data-dir (or set RECSYS_BENCHMARK_DATA) to the folder of the public data sets")
    return path


def result_path(folder: Path, name: str, suffix: str) -> Path:
    """``folder/<name>.<stamp><suffix>``: a figure or other non-JSON output of a run, named
    like the run's :func:`write_result` file."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.{stamp()}{suffix}"


def result_files(folder: Path, name: str, suffix: str = ".json") -> list[Path]:
    """Every ``folder/<name>.<date>.<commit><suffix>``, oldest first (by the date in the name,
    then the time a JSON result records it was written, then file time); ``name`` may itself
    contain dots."""
    prefix = f"{name}."

    def date(path: Path) -> str:
        rest = path.name[len(prefix):]
        return rest.split(".", 1)[0]

    paths = [p for p in folder.glob(f"{name}.*{suffix}") if _is_date(date(p))]
    return sorted(paths, key=lambda p: (date(p), _written(p), p.stat().st_mtime))


def _written(path: Path) -> str:
    if path.suffix != ".json":
        return ""
    try:
        return str(json.loads(path.read_text()).get("written", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def latest_result(folder: Path, name: str) -> dict[str, Any] | None:
    """The newest result of ``name`` (see :func:`result_files`), or None."""
    paths = result_files(folder, name)
    return json.loads(paths[-1].read_text()) if paths else None


def write_table(readme: Path, text: str, name: str = "") -> bool:
    """Put ``text`` between ``<!-- table -->`` and ``<!-- /table -->`` in ``readme``
    (``<!-- table NAME -->`` and ``<!-- /table NAME -->`` when a README holds several);
    False when the markers are missing."""
    start, end = (f"<!-- table {name} -->", f"<!-- /table {name} -->") if name else ("<!-- table -->", "<!-- /table -->")
    body = readme.read_text()
    if start not in body or end not in body:
        return False
    head, rest = body.split(start, 1)
    readme.write_text(head + start + "\n" + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])
    return True


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std) of ``values``; the value alone when there is one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def machine_words(machine: dict[str, Any], load: bool = True) -> str:
    """A result's machine in a few words (what :func:`machine` records); ``load=False``
    leaves out the load average (for one line over several results)."""
    words = [str(machine.get("processor", "?")), f"{machine.get('cores', '?')} cores"]
    if machine.get("memory_gib"):
        words.append(f"{machine['memory_gib']:g} GiB")
    words.append(machine["gpu"] if machine.get("gpu") else "no GPU")
    if load and machine.get("load_average"):
        words.append("load average " + ", ".join(f"{v:.1f}" for v in machine["load_average"]))
    if machine.get("note"):
        words.append(machine["note"])
    return ", ".join(words)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines (a ``|`` inside a cell escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def say(line: str) -> None:
    print(line, flush=True)


ROOT = Path(__file__).resolve().parents[1]
"""The repository root: result files are named relative to it in the READMEs."""


def result_file_name(folder: Path, result: dict[str, Any], suffix: str = ".json") -> str:
    """``experiments/<folder>/results/<name>.<stamp>.json`` of a result read back."""
    return str((folder / f"{result['name']}.{result['stamp']}{suffix}").relative_to(ROOT))


def merged_rows(folder: Path, name: str, key: Callable[[dict[str, Any]], Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``rows`` of every result of ``name``, oldest first, a later result's row replacing
    an earlier one with the same ``key`` (so a run of a few models or data sets updates only
    their rows); and the results that still supply rows, oldest first."""
    rows: dict[Any, tuple[dict[str, Any], str]] = {}
    results: dict[str, dict[str, Any]] = {}
    for path in result_files(folder, name):
        result = json.loads(path.read_text())
        results[result["stamp"]] = result
        for row in result["rows"]:
            rows[key(row)] = (row, result["stamp"])
    used = {stamp for _, stamp in rows.values()}
    return [row for row, _ in rows.values()], [r for stamp, r in results.items() if stamp in used]


def sources(folder: Path, results: Sequence[dict[str, Any]]) -> str:
    """The result files behind a table, with their machine (once for files that share one)."""
    groups: dict[str, list[str]] = {}
    for r in results:
        groups.setdefault(machine_words(r["machine"]), []).append(f"`{result_file_name(folder, r)}`")
    return "; ".join(f"{', '.join(files)} ({words})" for words, files in groups.items())


def publish_table(module: str, lines: Sequence[str], places: Sequence[tuple[Path, str]]) -> str:
    """A generated table (``lines``; none: a note that there are no results yet), marked with the
    command that makes it, written into each ``(README, marker name)`` of ``places`` (see
    :func:`write_table`) and printed."""
    lines = lines or [f"(no results yet: see `python -m {module} --help`)"]
    text = "\n".join([f"<!-- generated by: python -m {module} table -->", "", *lines])
    for readme, name in places:
        if not write_table(readme, text, name):
            say(f"{readme.relative_to(ROOT)}: no <!-- table {name} --> markers; left as it is")
    say(text)
    return text


def write_rows(folder: Path, name: str, payload: dict[str, Any], key: Callable[[dict[str, Any]], Any]) -> Path:
    """:func:`write_result` for a run that produces ``rows``, without losing an earlier result of
    the same name, date and commit (a run of other models or data sets, say): its rows that
    this run does not replace (by ``key``) are kept, first. Says where it wrote."""
    earlier = folder / f"{name}.{stamp()}.json"
    if earlier.is_file():
        new = {key(row) for row in payload["rows"]}
        kept = [row for row in json.loads(earlier.read_text())["rows"] if key(row) not in new]
        payload = {**payload, "rows": [*kept, *payload["rows"]]}
    path = write_result(folder, name, payload)
    say(f"wrote {path}")
    return path
