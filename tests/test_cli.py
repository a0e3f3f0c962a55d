"""The command line, end to end on the bundled sample (typer's CliRunner, real files)."""

from __future__ import annotations

import json

import pytest
from cli_invoke import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_ratings):
    """Train each model once on the sample; returns {model: (dir, metrics)}."""
    out = tmp_path_factory.mktemp("models")
    results = {}
    for model in ("popular", "als", "mf"):
        r = run("train", "--data", str(sample_ratings), "--model", model, "--output", str(out / model),
                "--k", "10,20", "--quiet", "--format", "json")
        payload = json.loads(r.stdout)
        results[model] = (out / model, payload["metrics"])
    return results


def test_learned_models_beat_popularity_by_a_clear_margin(trained):
    popular = trained["popular"][1]["recall@10"]
    for model in ("als", "mf"):
        recall = trained[model][1]["recall@10"]
        assert recall > 2.0 * popular, (model, recall, popular)


def test_train_then_evaluate_gives_the_same_metrics(trained, tmp_path, sample_ratings):
    # Re-create the split the training run used, then evaluate the saved model on it.
    run("split", "--data", str(sample_ratings), "--out-dir", str(tmp_path / "split"), "--quiet")
    model_dir, metrics = trained["als"]
    r = run("evaluate", "--model", str(model_dir), "--data", str(tmp_path / "split" / "test.csv"),
            "--k", "10,20", "--format", "json", "--quiet")
    evaluated = json.loads(r.stdout)
    assert evaluated["recall@10"] == pytest.approx(metrics["recall@10"], abs=1e-9)
    assert evaluated["users"] > 900 and evaluated["dropped_entries"] == 0
    assert list(evaluated)[0] == "recall@10"


def test_evaluate_table_and_per_user_file(trained, tmp_path, sample_ratings):
    run("split", "--data", str(sample_ratings), "--out-dir", str(tmp_path / "s"), "--quiet")
    per_user = tmp_path / "per_user.csv"
    r = run("evaluate", "--model", str(trained["mf"][0]), "--data", str(tmp_path / "s" / "test.csv"),
            "--per-user", str(per_user), "--quiet")
    assert r.stdout.splitlines()[1].startswith("recall")
    import pandas as pd

    frame = pd.read_csv(per_user)
    assert {"user", "n_relevant", "recall@20", "ndcg@50"} <= set(frame.columns)
    assert len(frame) > 900


def test_train_defaults_and_split_none(tmp_path, sample_ratings, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("train", "--data", str(sample_ratings), "--epochs", "2")
    assert "recall" in r.stdout
    assert any((tmp_path / "models").iterdir())
    r = run("train", "--data", str(sample_ratings), "--split", "none", "--epochs", "1", "-o", "all", "--format", "json", "--quiet")
    assert json.loads(r.stdout)["metrics"] is None


def test_split_writes_train_and_test(tmp_path, sample_ratings):
    r = run("split", "--data", str(sample_ratings), "--out-dir", str(tmp_path / "d"), "--strategy", "last-n", "--n", "2", "--format", "json")
    payload = json.loads(r.stdout)
    header = (tmp_path / "d" / "train.csv").read_text().splitlines()[0]
    assert header == "user,item,rating,timestamp"
    assert payload["test_entries"] > 0
    # The record names the settings the strategy read, no others.
    record = json.loads((tmp_path / "d" / "split.json").read_text())
    assert record["strategy"] == "last-n" and record["n"] == 2 and "test_fraction" not in record


def test_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    r = run("train", "--data", str(tmp_path / "missing.csv"), code=2)
    assert "no such file" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,x\n")
    r = run("train", "--data", str(bad), "--output", str(tmp_path / "m"), code=2)
    assert f"{bad}:2: column 'rating'" in r.output
    assert not (tmp_path / "m").exists()
    r = run("train", "--data", str(bad), "--model", "nope", code=2)
    assert "unknown model" in r.output
    r = run("train", "--data", str(bad), "--model", "als", "--loss", "bpr", code=2)
    assert "no hyper-parameter 'loss'" in r.output


def test_train_without_data_says_so_and_records_no_run(tmp_path, monkeypatch):
    """Regression (issue "The first hour"): `recsys train` without --data (or with only
    --config) ended in a TypeError, then in a FAILED MLflow run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECSYS_NO_TRACK", raising=False)  # tracking on, as for a new user
    config = tmp_path / "tuned.toml"
    config.write_text('model = "ials"\n[params]\nfactors = 8\n')
    for args in ((), ("--config", str(config))):
        r = run("train", *args, code=2)
        assert "no training data: give --data" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.toml"]  # no mlflow.db, no mlruns


def test_help_for_every_command():
    for command in ("train", "evaluate", "split", "datasets"):
        output = run(command, "--help").output
        assert ("Usage" in output and "--quiet" in output) or command == "datasets"


def test_version_and_flags_shown_without_a_value():
    import recsys

    assert run("--version").stdout.strip() == f"recsys {recsys.__version__}"
    quiet = next(line for line in run("train", "--help").output.splitlines() if "--quiet" in line)
    assert "<bool>" not in quiet and "No progress bars" in quiet


def test_the_built_in_split_and_the_same_split_read_back_score_the_same(tmp_path, sample_ratings):
    """One rule (issue: two numbers for one split): test entries of items without training
    entries are dropped and counted on both paths, so the numbers agree."""
    import pandas as pd

    frame = pd.read_csv(sample_ratings)
    # Items rated once: the per-user split puts some of them in the test part only.
    rare = pd.DataFrame({"user_id": frame["user_id"].unique()[:200], "item_id": [f"rare{i}" for i in range(200)],
                         "rating": 5, "timestamp": 1})
    data = tmp_path / "ratings.csv"
    pd.concat([frame, rare]).to_csv(data, index=False)

    def scored(*args):
        r = run("train", *args, "--model", "popular", "--no-index", "--no-track", "--format", "json", "--quiet")
        return json.loads(r.stdout)

    built_in = scored("--data", data, "-o", tmp_path / "a")
    run("split", "--data", data, "--out-dir", tmp_path / "s", "--quiet")
    read_back = scored("--data", tmp_path / "s" / "train.csv", "--test", tmp_path / "s" / "test.csv", "-o", tmp_path / "b")
    assert built_in["metrics"] == pytest.approx(read_back["metrics"], abs=1e-12)
    shown = run("train", "--data", data, "--model", "popular", "--no-index", "--no-track", "-o", tmp_path / "c")
    import re

    dropped = int(re.search(r"; (\d+) test entries of users or items without training entries dropped", shown.output)[1])
    assert 0 < dropped < 200
    evaluated = json.loads(run("evaluate", "--model", tmp_path / "b", "--data", tmp_path / "s" / "test.csv",
                               "--format", "json", "--quiet", "--no-track").stdout)
    assert evaluated["dropped_entries"] == dropped


def test_slow_stages_say_what_they_do(tmp_path, sample_ratings, monkeypatch):
    """Saving, indexing and t-SNE show a line once they run over a second (a spinner on a
    terminal); --quiet silences them. Here every stage counts as slow."""
    monkeypatch.setattr("recsys.progress.STATUS_AFTER_SECONDS", 0.0)
    r = run("train", "--data", sample_ratings, "--model", "als", "-p", "factors=4", "-p", "epochs=1",
            "--split", "none", "-o", tmp_path / "m", "--no-track")
    assert "saving the model and building its Annoy index ..." in r.output
    quiet = run("train", "--data", sample_ratings, "--model", "als", "-p", "factors=4", "-p", "epochs=1",
                "--split", "none", "-o", tmp_path / "m", "--no-track", "--quiet")
    assert "saving the model" not in quiet.output
    plotted = run("embeddings", "plot", "--model", tmp_path / "m", "-o", tmp_path / "map.png", "--method", "pca")
    assert "pca on " in plotted.output


def test_experiment_run_help_names_the_grid_files_experiment_as_the_default():
    words = [w for w in run("experiment", "run", "--help").output.split() if w not in ("│", "╰", "╯")]
    assert "(default: the grid file's `experiment`, else its file name)." in " ".join(words)


def test_split_with_a_negative_seed_is_a_user_mistake(tmp_path, sample_ratings):
    """It crashed in numpy's SeedSequence (exit 1)."""
    r = run("split", "--data", sample_ratings, "--seed", "-1", "--out-dir", tmp_path / "s", code=2)
    assert "seed must be at least 0, got -1" in r.output and not (tmp_path / "s").exists()


def test_the_data_line_counts_the_file_and_the_train_line_the_training_part(tmp_path, sample_ratings):
    r = run("train", "--data", sample_ratings, "--model", "popular", "--no-index", "-o", tmp_path / "m", "--no-track")
    assert "data     " in r.output and ": 1,000 users, 1,425 items;" in r.output
    assert "train    32,044 entries (" in r.output
