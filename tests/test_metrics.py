"""Every metric pinned by values computed by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation.metrics import user_metrics

# User 0: relevant {A, C, F} (3 items); ranking A B C D E -> hits 1 0 1 0 0.
# User 1: relevant {Z} (1 item);        ranking B Z ...   -> hits 0 1 0 0 0.
HITS = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=bool)
N_REL = np.array([3, 1])
IDCG3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("recall@1", [1 / 3, 0.0]),
        ("recall@3", [2 / 3, 1.0]),
        ("recall@5", [2 / 3, 1.0]),
        ("precision@1", [1.0, 0.0]),
        ("precision@3", [2 / 3, 1 / 3]),
        ("precision@5", [2 / 5, 1 / 5]),
        ("ndcg@1", [1.0, 0.0]),
        ("ndcg@3", [(1 + 1 / math.log2(4)) / IDCG3, 1 / math.log2(3)]),
        ("ndcg@5", [(1 + 1 / math.log2(4)) / IDCG3, 1 / math.log2(3)]),
        # AP@k = sum of precision at each hit rank / min(k, R): (1 + 2/3) / 3; (1/2) / 1.
        ("map@1", [1.0, 0.0]),
        ("map@3", [(1 + 2 / 3) / 3, 0.5]),
        ("map@5", [(1 + 2 / 3) / 3, 0.5]),
        ("mrr@1", [1.0, 0.0]),
        ("mrr@3", [1.0, 0.5]),
        ("hit_rate@1", [1.0, 0.0]),
        ("hit_rate@3", [1.0, 1.0]),
    ],
)
def test_hand_computed_values(name, expected):
    values = user_metrics(HITS, N_REL, [1, 3, 5])
    np.testing.assert_allclose(values[name], expected, rtol=1e-12)


def test_recall_is_divided_by_all_relevant_items_not_by_k():
    # 10 relevant items, 2 hits in the top 5: recall@5 = 2/10 (LightGCN's definition).
    hits = np.array([[1, 1, 0, 0, 0]], dtype=bool)
    assert user_metrics(hits, np.array([10]), [5])["recall@5"][0] == pytest.approx(0.2)


def test_perfect_ranking_scores_one():
    hits = np.array([[1, 1, 0, 0]], dtype=bool)
    values = user_metrics(hits, np.array([2]), [2, 4])
    for name in ("recall@2", "ndcg@2", "ndcg@4", "map@2", "map@4", "mrr@4", "hit_rate@2"):
        assert values[name][0] == pytest.approx(1.0), name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=5, max_size=5), st.integers(1, 8))
def test_invariants(hit_list, extra):
    hits = np.array([hit_list])
    n_rel = np.array([max(sum(hit_list), 1) + extra - 1])
    values = user_metrics(hits, n_rel, [1, 3, 5])
    for name, v in values.items():
        assert 0.0 <= v[0] <= 1.0 + 1e-12, name
    # Metrics never fall as k grows, except precision.
    for m in ("recall", "hit_rate", "mrr"):
        assert values[f"{m}@1"][0] <= values[f"{m}@3"][0] <= values[f"{m}@5"][0]
