"""Filters before training: minimum rating, k-core counts, vocabularies compacted; and the
line `recsys train` prints about what it read."""

from __future__ import annotations

import numpy as np
import pytest
from cli_invoke import run

from recsys.data.filters import Filters, apply_filters, describe_values
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError


def log(entries: list[tuple[str, str, float]], feedback: str = "rating") -> Interactions:
    users, items, values = zip(*entries)
    return Interactions.from_arrays(np.array(users, dtype=object), np.array(items, dtype=object),
                                    np.array(values, dtype=np.float32), feedback=feedback)


# Hand-worked: a 2-core keeps u1, u2 with a, b; u3's only item c goes, which leaves no one else short.
TOY = [("u1", "a", 5), ("u1", "b", 4), ("u2", "a", 3), ("u2", "b", 1), ("u3", "c", 5), ("u3", "a", 2)]


def test_min_rating_drops_low_ratings_and_compacts_the_vocabularies():
    out, report = apply_filters(log(TOY), Filters(min_rating=3))
    assert sorted(out.users.ids.tolist()) == ["u1", "u2", "u3"] and sorted(out.items.ids.tolist()) == ["a", "b", "c"]
    assert out.nnz == 4 and (report.entries, report.users, report.items) == (2, 0, 0)
    out, report = apply_filters(log(TOY), Filters(min_rating=4.5))
    assert sorted(out.users.ids.tolist()) == ["u1", "u3"] and sorted(out.items.ids.tolist()) == ["a", "c"]
    assert (report.entries, report.users, report.items) == (4, 1, 1)


def test_k_core_repeats_until_every_user_and_item_has_enough():
    out, report = apply_filters(log(TOY), Filters(min_user_count=2, min_item_count=2))
    # Round 1: item c (1 user) goes; round 2: u3 has 1 entry left and goes; then all have 2.
    assert sorted(out.users.ids.tolist()) == ["u1", "u2"] and sorted(out.items.ids.tolist()) == ["a", "b"]
    assert out.nnz == 4 and (report.entries, report.users, report.items) == (2, 1, 1)
    assert out.user_counts().min() >= 2 and out.item_counts().min() >= 2
    with pytest.raises(ConfigError, match="leave no entries"):
        apply_filters(log(TOY), Filters(min_user_count=5))


def test_bad_filters_and_min_rating_on_counts_are_refused():
    with pytest.raises(ConfigError, match="min_user_count must be a whole number"):
        apply_filters(log(TOY), Filters(min_user_count=0))
    with pytest.raises(ConfigError, match="min_rating must be a finite number"):
        apply_filters(log(TOY), Filters(min_rating=float("nan")))
    with pytest.raises(ConfigError, match="holds counts"):
        apply_filters(log(TOY, feedback="count"), Filters(min_rating=2))
    same, report = apply_filters(log(TOY), Filters())
    assert same.nnz == 6 and report.entries == 0


def test_values_described():
    assert describe_values(log(TOY)) == "ratings 1-5"
    assert describe_values(log([("u", "a", 1), ("u", "b", 1)], feedback="count")) == "binary (every value 1)"
    assert describe_values(log([("u", "a", 3), ("u", "b", 1200)], feedback="count")) == "counts 3-1,200"


def test_train_filters_says_so_and_a_tuned_config_keeps_them(tmp_path, sample_ratings):
    r = run("train", "--data", sample_ratings, "--model", "als", "-p", "factors=4", "-p", "epochs=2",
            "--min-rating", "4", "--min-user-count", "10", "-o", tmp_path / "m", "--no-track")
    assert "data     " in r.output and "ratings 4-5, each entry one positive (weighting auto: binary)" in r.output
    assert "filter   kept rating >= 4, users with >= 10 entries: dropped" in r.output
    run("tune", "--data", sample_ratings, "--model", "als", "--trials", "1", "--min-user-count", "10",
        "-o", tmp_path / "t.toml", "--quiet", "--no-track")
    assert "min_user_count = 10" in (tmp_path / "t.toml").read_text()
    again = run("train", "--config", tmp_path / "t.toml", "--data", sample_ratings, "-o", tmp_path / "m2", "--no-track")
    assert "users with >= 10 entries" in again.output


def test_train_says_how_many_repeated_rows_it_merged(tmp_path):
    corpus = __import__("pathlib").Path(__file__).parent / "bad_inputs"
    r = run("train", "--data", corpus / "duplicated_rows.csv", "--split", "none", "--model", "popular",
            "-o", tmp_path / "a", "--no-track")
    assert "3 repeated (user, item) rows merged, the latest rating kept" in r.output
    r = run("train", "--data", corpus / "duplicated_counts.csv", "--split", "none", "--model", "popular",
            "-o", tmp_path / "b", "--no-track")
    assert "1 repeated (user, item) rows merged, their values added up" in r.output


def test_min_rating_applies_to_a_test_file_too(tmp_path, sample_ratings):
    """The same rule for a test file of one's own: its entries rated below --min-rating are
    not relevant items (they were counted as relevant)."""
    import json

    import pandas as pd

    run("split", "--data", sample_ratings, "--out-dir", tmp_path / "s", "--quiet")
    r = run("train", "--data", tmp_path / "s" / "train.csv", "--test", tmp_path / "s" / "test.csv", "--model",
            "popular", "--min-rating", "4", "--no-index", "--no-track", "--format", "json", "--quiet", "-o", tmp_path / "a")
    train = pd.read_csv(tmp_path / "s" / "train.csv").query("rating >= 4")
    test = pd.read_csv(tmp_path / "s" / "test.csv").query("rating >= 4")
    known = test[test["user"].isin(train["user"]) & test["item"].isin(train["item"])]
    assert json.loads(r.stdout)["test_entries"] == len(known) < len(pd.read_csv(tmp_path / "s" / "test.csv"))
