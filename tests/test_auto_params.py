"""Hyper-parameters that follow the data ("auto"): the iALS collapse they fix, the rules'
arithmetic, and how the chosen values are kept and reported."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.splits import split
from recsys.data.synthetic import checkerboard, latent_factor_log
from recsys.evaluation.full_ranking import evaluate
from recsys.models import IALS, Popular, Recommender
from recsys.models.als import confidence
from recsys.models.auto import UNOBSERVED_RATIO, DataShape


@pytest.fixture(scope="module")
def sparse_catalogue():
    """Like amazon-book: 10 interactions per user, thousands of items, structure spread over
    24 weak directions (3000 users x 5609 items used, 30,000 pairs)."""
    data = latent_factor_log(n_users=3000, n_items=10_000, dim=24, items_per_user=10, signal=10.0, seed=0)
    return split(data, "user", test_fraction=0.3, seed=0)


def _recall(model, test) -> float:
    return evaluate(model, test, ks=[20]).metrics["recall@20"]


def test_a_fixed_unobserved_weight_collapses_ials_on_a_sparse_large_catalogue(sparse_catalogue):
    # Issue 13: the old default alpha0 = 0.1 puts the regularization lambda * (n_u + alpha0 |I|)
    # far above each user's observed confidence (0.69 * 7 against 0.01 * 560): every direction
    # but the strongest shrinks each sweep, the factors go to almost zero and the ranking is
    # no better than popularity (amazon-book: recall@20 0.019 against 0.15).
    train, test = sparse_catalogue
    collapsed = IALS(unobserved_weight=0.1, epochs=8).fit(train)
    popular = _recall(Popular().fit(train), test)
    assert np.linalg.norm(collapsed.item_factors, axis=1).mean() < 0.1
    assert _recall(collapsed, test) < 1.5 * popular


def test_auto_unobserved_weight_learns_the_same_log(sparse_catalogue):
    train, test = sparse_catalogue
    model = IALS(epochs=8).fit(train)  # unobserved_weight="auto", the default
    assert np.linalg.norm(model.item_factors, axis=1).mean() > 0.3
    assert _recall(model, test) > 3 * _recall(Popular().fit(train), test)


def test_auto_unobserved_weight_is_the_ratio_times_the_confidence_density():
    data = checkerboard()
    model = IALS(factors=4, epochs=1, alpha=2.0, weighting="linear").fit(data)
    # Hand-computed: every value is 1, so each confidence is alpha = 2.
    expected = UNOBSERVED_RATIO * 2.0 * data.nnz / (data.n_users * data.n_items)
    assert model.fitted_params["unobserved_weight"] == pytest.approx(expected)
    assert model.unobserved_weight == "auto"  # the constructor's value stays as given
    assert model.data_shape == DataShape.of(data.matrix, data.feedback, confidence(data.matrix, data.feedback, "linear", 2.0)).to_dict()


def test_auto_keeps_the_balance_when_confidences_are_rescaled():
    # Scaling every confidence by s scales alpha0 by s: the observed/unobserved balance, the
    # quantity that matters, is unchanged.
    data = checkerboard()
    one = IALS(factors=4, epochs=1, alpha=1.0).fit(data).fitted_params["unobserved_weight"]
    five = IALS(factors=4, epochs=1, alpha=5.0).fit(data).fitted_params["unobserved_weight"]
    assert five == pytest.approx(5 * one)


def test_a_given_value_is_used_as_given():
    model = IALS(factors=4, epochs=1, unobserved_weight=0.25).fit(checkerboard())
    assert model.fitted_params["unobserved_weight"] == 0.25
    assert model.data_shape is None
    assert model.describe_auto() is None


def test_chosen_values_are_saved_loaded_and_described(tmp_path):
    data = checkerboard()
    model = IALS(factors=4, epochs=2).fit(data)
    line = model.describe_auto()
    assert line.startswith("ials: unobserved_weight ")
    assert f"{data.nnz:,} pairs of {data.n_users:,} users x {data.n_items:,} items" in line
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert loaded.fitted_params == model.fitted_params
    assert loaded.describe_auto() == line
    # Fold-in solves with the chosen alpha0, not the string "auto".
    folded = loaded.fold_in(data)
    np.testing.assert_allclose(folded.vectors, model.fold_in(data).vectors, rtol=1e-5, atol=1e-6)
