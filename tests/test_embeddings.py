"""Embeddings: the value retrieval, evaluation and diagnostics take, from a model or from
factors trained elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.splits import split
from recsys.embeddings import Embeddings
from recsys.evaluation import evaluate
from recsys.models import IALS
from recsys.retrieval import AnnoyIndex, ExactRetrieval


@pytest.fixture
def parts(checkerboard):
    return split(checkerboard, "user", test_fraction=0.3, seed=0)


def test_a_models_embeddings_are_its_vectors_cached_until_it_changes(parts):
    train, _ = parts
    model = IALS(factors=4, epochs=2).fit(train)
    emb = model.embeddings()
    np.testing.assert_array_equal(emb.user_vectors, model.user_vectors())
    np.testing.assert_array_equal(emb.item_vectors, model.item_vectors())
    assert emb.seen is model.seen and emb.users == model.users and emb.name == "ials"
    assert model.embeddings() is emb
    model.fit(train)  # new factors: new embeddings
    assert model.embeddings() is not emb


def test_evaluation_of_a_model_and_of_its_embeddings_agree(parts):
    train, test = parts
    model = IALS(factors=4, epochs=2).fit(train)
    assert evaluate(model, test, ks=[5]).metrics == evaluate(model.embeddings(), test, ks=[5]).metrics


def test_factors_trained_elsewhere_evaluate_index_and_answer_similar_items(parts):
    # The known answer of the checkerboard: even users like even items. Factors that say so,
    # made by hand as another system would export them, rank each user's parity first.
    train, test = parts
    users, items = train.users, train.items
    parity_u = np.where(users.ids % 2 == 0, 1.0, -1.0).astype(np.float32)[:, None]
    parity_i = np.where(items.ids % 2 == 0, 1.0, -1.0).astype(np.float32)[:, None]
    emb = Embeddings(
        users=users, items=items, user_vectors=parity_u, item_vectors=parity_i,
        item_embeddings=np.hstack([parity_i, np.ones_like(parity_i)]), user_embeddings=parity_u,
        seen=train.matrix, item_popularity=train.item_counts(), name="external",
    )
    # Every unseen item of the user's parity ties at the top (at most 20 of them): all the
    # user's held-out items are among them, so the top 20 holds them all.
    assert evaluate(emb, test, ks=[20]).metrics["recall@20"] == pytest.approx(1.0)
    index = AnnoyIndex.build(emb, trees=5)
    found, _ = emb.search(np.arange(emb.n_users), 5, train.matrix, index=index)
    assert (items.ids[found] % 2 == users.ids[:, None] % 2).all()
    similar, _ = ExactRetrieval(emb).similar(np.array([0]), 3)
    assert (items.ids[similar[0]] % 2 == items.ids[0] % 2).all()
