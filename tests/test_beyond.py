"""Beyond-accuracy figures: hand-computed cases pin each definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation.beyond import (
    BEYOND_METRICS,
    beyond_accuracy,
    gini_index,
    intra_list_diversity,
    popularity_percentiles,
    self_information,
)

# Four items with 3, 2, 1 and 0 training users; two users' top-2 lists.
POPULARITY = np.array([3, 2, 1, 0])
TOP = np.array([[0, 1], [0, 2]])
FACTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], dtype=np.float32)


def test_hand_computed_figures():
    got = beyond_accuracy(TOP, [2], POPULARITY, FACTORS)
    assert list(got) == [f"{m}@2" for m in BEYOND_METRICS]
    # Items 0, 1, 2 of 4 are recommended.
    assert got["coverage@2"] == pytest.approx(0.75)
    # Counts [2, 1, 1, 0] sorted [0, 1, 1, 2]: (-3*0 - 1*1 + 1*1 + 3*2) / (4 * 4).
    assert got["gini@2"] == pytest.approx(6 / 16)
    # Mid-rank percentiles 0.875, 0.625, 0.375, 0.125; lists average 0.75 and 0.625.
    assert got["popularity_percentile@2"] == pytest.approx(0.6875)
    # Shares 3/7, 2/7, 1/7 (item 3 counts as one: total 7).
    novelty = (2 * math.log2(7 / 3) + math.log2(7 / 2) + math.log2(7)) / 4
    assert got["novelty@2"] == pytest.approx(novelty)
    # cos(item0, item1) = 0; cos(item0, item2) = 1/sqrt(2).
    assert got["diversity@2"] == pytest.approx((1.0 + (1 - 1 / math.sqrt(2))) / 2)


def test_gini_extremes():
    assert gini_index(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini_index(np.array([0, 0, 0, 4])) == pytest.approx(1 - 1 / 4)
    assert gini_index(np.zeros(3)) == 0.0


def test_percentiles_and_self_information():
    np.testing.assert_allclose(popularity_percentiles(POPULARITY), [0.875, 0.625, 0.375, 0.125])
    np.testing.assert_allclose(popularity_percentiles(np.array([1, 1])), [0.5, 0.5])
    np.testing.assert_allclose(self_information(np.array([1, 1, 2])), [2.0, 2.0, 1.0])


def test_diversity_with_padding_and_short_lists():
    top = np.array([[0, 1, 2], [0, -1, -1], [3, 0, -1]])
    d = intra_list_diversity(top, FACTORS, batch=2)
    # First list: pairs (0,1) 1, (0,2) 1-1/sqrt2, (1,2) 1-1/sqrt2.
    assert d[0] == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    assert math.isnan(d[1])
    assert d[2] == pytest.approx(2.0)  # opposite vectors
    # Zero vectors have cosine 0 with everything.
    assert intra_list_diversity(np.array([[0, 1]]), np.zeros((2, 3)))[0] == pytest.approx(1.0)


def test_padding_is_ignored_and_k_cuts_lists():
    top = np.array([[0, 1, -1], [0, 2, 3]])
    got = beyond_accuracy(top, [1, 3], POPULARITY)
    assert got["coverage@1"] == pytest.approx(0.25)
    assert got["gini@1"] == pytest.approx(0.75)
    assert got["coverage@3"] == pytest.approx(1.0)
    assert "diversity@3" not in got  # no factors given


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=30))
def test_gini_is_bounded(counts):
    g = gini_index(np.array(counts))
    n = len(counts)
    assert -1e-12 <= g <= 1 - 1 / n + 1e-12


def test_evaluate_reports_beyond_accuracy(checkerboard):
    from recsys.data.splits import split
    from recsys.evaluation.full_ranking import evaluate
    from recsys.models import ALS, Popular

    train, test = split(checkerboard, "user", test_fraction=0.3, seed=0)
    popular = evaluate(Popular().fit(train), test, ks=[5])
    als = evaluate(ALS(factors=8, epochs=5, random_state=0).fit(train), test, ks=[5])
    for result in (popular, als):
        assert {f"{m}@5" for m in BEYOND_METRICS} <= set(result.metrics)
        assert set(BEYOND_METRICS) <= set(result.table().index)
    # Popularity recommends the head to everyone: more concentrated, less novel.
    assert popular.metrics["gini@5"] > als.metrics["gini@5"]
    assert popular.metrics["novelty@5"] < als.metrics["novelty@5"]
