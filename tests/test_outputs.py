"""Never lose a user's file: an output replaces only an earlier output of the same kind.

Every command that writes is tried against a folder of the user's own files, the very file
it reads, the working directory and a directory given for a file: each is refused with exit
2 before any work, and the file system is the same afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_invoke import run

from recsys.artifacts import (
    OutputKind,
    check_output,
    json_with_keys,
    starts_with,
    table_with_columns,
)
from recsys.errors import RecsysError

MODEL_KIND = OutputKind("model directory", directory=True, marker="model.json")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory, sample_ratings):
    out = tmp_path_factory.mktemp("model") / "als"
    run("train", "--data", sample_ratings, "--model", "als", "-p", "factors=4", "-p", "epochs=2",
        "--output", out, "--quiet", "--no-track")
    return out


@pytest.fixture
def workspace(tmp_path, sample_ratings, monkeypatch):
    """A user's folder: their data and notes; the working directory for the test."""
    (tmp_path / "data").mkdir()
    shutil.copy(sample_ratings, tmp_path / "data" / "ratings.csv")
    (tmp_path / "data" / "notes.txt").write_text("my notes\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "paper.md").write_text("# draft\n")
    (tmp_path / "report.csv").write_text("my,own,table\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- the rule, directly ------------------------------------------------------------------------
def test_new_empty_and_same_kind_outputs_pass(tmp_path):
    check_output(tmp_path / "new", MODEL_KIND)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", MODEL_KIND)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.json").write_text("{}")
    (tmp_path / "old" / "factors.npz").write_bytes(b"")
    check_output(tmp_path / "old", MODEL_KIND)


@pytest.mark.parametrize("case, message", [
    ("foreign", "holds other files (notes.txt) and is not a model directory"),
    ("file", "exists and is not a directory"),
    ("input", "which this run reads"),
    ("cwd", "is the working directory"),
    ("parent", "is the working directory (or above it)"),
])
def test_a_directory_output_is_refused_where_it_would_destroy_something(tmp_path, monkeypatch, case, message):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "ratings.csv").write_text("user,item\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    target = {"cwd": Path("."), "parent": Path("..")}.get(case, tmp_path / case)
    inputs = [tmp_path / "input" / "ratings.csv"] if case == "input" else []
    with pytest.raises(RecsysError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_output(target, MODEL_KIND, inputs=inputs)


def test_a_file_output_replaces_only_a_file_of_its_kind(tmp_path):
    kind = OutputKind("recommendations table", recognise=table_with_columns(["user", "item", "rank"]))
    (tmp_path / "recs.csv").write_text('"user","item","rank","score"\n1,2,1,0.5\n')
    check_output(tmp_path / "recs.csv", kind)
    (tmp_path / "mine.csv").write_text("user,title\n")
    with pytest.raises(RecsysError, match="is not a recommendations table written by recsys"):
        check_output(tmp_path / "mine.csv", kind)
    with pytest.raises(RecsysError, match="is a directory"):
        check_output(tmp_path, kind)
    with pytest.raises(RecsysError, match="which this run reads"):
        check_output(tmp_path / "recs.csv", kind, inputs=[str(tmp_path / "recs.csv")])
    config = OutputKind("tuned config", recognise=starts_with("written by recsys tune"))
    (tmp_path / "a.toml").write_text("# (written by recsys tune; ...)\nmodel = 'ials'\n")
    check_output(tmp_path / "a.toml", config)
    summary = OutputKind("summary", recognise=json_with_keys(["clusters"]))
    (tmp_path / "s.json").write_text('{"clusters": []}')
    check_output(tmp_path / "s.json", summary)
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(RecsysError):
        check_output(tmp_path / "bad.json", summary)


# -- every writing command, through the CLI ----------------------------------------------------
def refused(workspace: Path, *args: object, says: str) -> None:
    before = snapshot(workspace)
    result = run(*args, "--quiet", code=2)
    assert says in result.output and "Traceback" not in result.output, result.output
    after = {k: v for k, v in snapshot(workspace).items() if not k.startswith(("mlruns", "mlflow"))}
    assert after == before


def test_train_never_writes_over_the_users_files(workspace):
    data = Path("data/ratings.csv")
    refused(workspace, "train", "--data", data, "-o", "docs", "--no-track", says="holds other files (paper.md)")
    refused(workspace, "train", "--data", data, "-o", "data", "--no-track", says="which this run reads")
    refused(workspace, "train", "--data", data, "-o", ".", "--no-track", says="is the working directory")
    refused(workspace, "train", "--data", data, "-o", "report.csv", "--no-track", says="is not a directory")


def test_train_replaces_an_earlier_model(workspace):
    args = ("train", "--data", "data/ratings.csv", "--model", "popular", "-o", "m", "--quiet", "--no-track")
    run(*args)
    first = (workspace / "m" / "model.json").stat().st_ino
    run(*args)
    assert (workspace / "m" / "model.json").stat().st_ino != first  # a new directory took its place


def test_recommend_evaluate_tune_and_embeddings_refuse_other_files(workspace, model):
    refused(workspace, "recommend", "--model", model, "--users", "all", "--out", "report.csv", "--no-track",
            says="is not a recommendations table")
    refused(workspace, "recommend", "--model", model, "--users", "all", "--out", "data", "--no-track",
            says="is a directory")
    refused(workspace, "evaluate", "--model", model, "--data", "data/ratings.csv", "--per-user", "report.csv",
            "--no-track", says="is not a per-user metrics table")
    refused(workspace, "evaluate", "--model", model, "--data", "data/ratings.csv", "--per-user",
            "data/ratings.csv", "--no-track", says="which this run reads")
    refused(workspace, "tune", "--data", "data/ratings.csv", "--model", "als", "--trials", "1", "-o",
            "data/notes.txt", "--no-track", says="is not a tuned config")
    (workspace / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    refused(workspace, "embeddings", "plot", "--model", model, "-o", "photo.png", says="is not a PNG embedding map")
    refused(workspace, "embeddings", "clusters", "--model", model, "-o", "data/notes.txt",
            says="is not a cluster summary")


def test_recommend_replaces_its_own_earlier_output(workspace, model):
    args = ("recommend", "--model", model, "--users", "all", "--k", "3", "--out", "recs.csv", "--quiet", "--no-track")
    run(*args)
    run(*args)
    assert (workspace / "recs.csv").read_text().startswith(('user,item', '"user","item"'))


def test_split_refuses_a_folder_of_other_files(workspace):
    refused(workspace, "split", "--data", "data/ratings.csv", "--out-dir", "docs", says="holds other files")
    refused(workspace, "split", "--data", "data/ratings.csv", "--out-dir", "data", says="which this run reads")


def test_the_machines_conditions_exit_2_not_as_a_bug(tmp_path, sample_ratings, monkeypatch):
    """A full disk or a directory without write permission is the user's to fix: one line,
    exit 2 (it read "unexpected ... a bug in recsys", exit 1)."""
    import errno

    from recsys.models.base import Recommender

    def full(self, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Recommender, "save", full)
    r = run("train", "--data", sample_ratings, "--model", "popular", "-o", tmp_path / "m", "--no-track", code=2)
    assert "No space left on device" in r.output and "bug" not in r.output


def test_another_programs_files_of_the_same_name_are_not_replaced(workspace):
    """A folder with some other tool's model.json, or a Matplotlib figure of the user's, is
    not a recsys output because of its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (workspace / "exports").mkdir()
    (workspace / "exports" / "model.json").write_text('{"format": "layers-model"}')
    refused(workspace, "train", "--data", "data/ratings.csv", "-o", "exports", "--no-track", says="is not a model directory")
    fig = plt.figure()
    fig.savefig(workspace / "figure.png")
    plt.close(fig)
    run("train", "--data", "data/ratings.csv", "--model", "als", "-p", "factors=4", "-p", "epochs=1", "-o", "m",
        "--no-track", "--quiet")
    refused(workspace, "embeddings", "plot", "--model", "m", "-o", "figure.png", says="is not a PNG embedding map")
    refused(workspace, "index", "--model", "runs:/0123abcd/model", says="writes into a model directory")


def test_a_checkpoint_folder_of_the_users_is_refused_before_training(workspace):
    """The checkpoint folder is replaced at each save and removed at the end: a folder of the
    user's was found out only at the first checkpoint."""
    refused(workspace, "train", "--data", "data/ratings.csv", "--model", "ials", "--checkpoint-every", "1",
            "--checkpoint-dir", "docs", "-o", "m", "--no-track", says="is not a checkpoint directory")


@pytest.mark.parametrize("content", ['"x"', "[1]", "3"])
def test_a_marker_file_that_is_json_but_not_an_object_is_just_not_ours(tmp_path, content):
    """Regression: a model.json holding a JSON string or list crashed the check
    (AttributeError, exit 1) instead of refusing the folder as not a model directory."""
    from recsys.models.persistence import MODEL_DIRECTORY

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.json").write_text(content)
    with pytest.raises(RecsysError, match="not a model directory"):
        check_output(tmp_path / "out", MODEL_DIRECTORY)
