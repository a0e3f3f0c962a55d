"""Embeddings: the value retrieval, evaluation and diagnostics take, from a model or from
factors trained elsewhere."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

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


def brute_force_top(users: np.ndarray, items: np.ndarray, k: int, exclude: sp.csr_matrix | None):
    """Every score, seen ones -inf, then a full sort: what the exact search must return."""
    scores = users.astype(np.float64) @ items.T.astype(np.float64)
    if exclude is not None:
        scores[np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr)), exclude.indices] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@pytest.mark.parametrize("screen", [False, True], ids=["exact-chunks", "screened-chunks"])
@pytest.mark.parametrize("skew", [0.0, 1.2], ids=["lengths-alike", "lengths-by-popularity"])
@pytest.mark.parametrize("k", [1, 10, 200])
def test_exact_search_stopping_early_finds_what_scoring_everything_finds(skew, k, screen, monkeypatch):
    """Items scanned longest first, users leaving once no item left can beat their k-th best:
    the same items and scores as ranking the whole catalogue, with seen items skipped, rows
    with fewer unseen items than k padded, and blocks small enough to hold only part of
    the users; whether most users stop early (lengths that fall with popularity) or none do,
    and whether the chunks after the first are screened in bfloat16 or not."""
    from recsys.embeddings import ExactIndex, chunk_bounds

    rng = np.random.default_rng(3)
    n_items = 20000
    lengths = (np.arange(1, n_items + 1) ** -skew) * 5 + 0.05 if skew else np.ones(n_items)
    items = (rng.normal(size=(n_items, 8)) * lengths[:, None])[rng.permutation(n_items)].astype(np.float32)
    users = rng.normal(size=(300, 8)).astype(np.float32)
    users[7] = 0.0  # a user with no direction: every score 0
    exclude = sp.random(300, n_items, density=0.02, format="lil", random_state=4)
    exclude[3, :] = 1.0  # has seen everything
    exclude[5, : n_items - 50] = 1.0  # fewer unseen items than 200
    exclude = exclude.tocsr()
    assert len(chunk_bounds(n_items)) > 1
    index = ExactIndex(items, "cpu", block_bytes=(6 if screen else 4) * n_items * 128, screen=screen)
    assert index.block_users == 128 and index.screens == screen
    scored = []
    real_matmul = torch.matmul

    def matmul(a, b, **kwargs):
        scored.append(a.shape[0] * b.shape[1] if a.dtype == torch.float32 else 0)  # exact scores only
        return real_matmul(a, b, **kwargs)

    monkeypatch.setattr(torch, "matmul", matmul)
    screened = []
    real_screened = index._screened
    monkeypatch.setattr(index, "_screened", lambda *a: (screened.append(len(a[2])), real_screened(*a))[1])
    found, scores = index.search(users, k, exclude)
    monkeypatch.undo()
    if k == 200:  # most users go on past the first chunk: enough rows for the screen
        assert bool(screened) == screen
    if skew and k < 200:  # most users stop within the first chunks
        assert sum(scored) < 0.3 * 300 * n_items
    expected, expected_scores = brute_force_top(users, items, k, exclude)
    finite = np.isfinite(expected_scores)
    np.testing.assert_allclose(scores[finite], expected_scores[finite], rtol=1e-5, atol=1e-4)
    assert (found[~finite] == -1).all() and np.isneginf(scores[~finite]).all()
    with np.errstate(invalid="ignore"):  # -inf minus -inf in padded rows, which are left out
        distinct = np.abs(np.diff(expected_scores, axis=1)).min(axis=1, initial=np.inf) > 1e-4
    distinct &= finite.all(axis=1) & (np.arange(300) != 7)
    np.testing.assert_array_equal(found[distinct], expected[distinct])  # rows without near-ties: same order
    assert (found[3] == -1).all() and (found[5, :50] >= 0).all() and (found[5, 50:] == -1).all() if k == 200 else True
    unseen = ~exclude[7].toarray().ravel().astype(bool)
    assert set(found[7][found[7] >= 0]) <= set(np.flatnonzero(unseen))


def test_screening_in_bfloat16_misses_no_item_that_beats_by_less_than_its_rounding():
    """Each user's best item in the first chunk scores 1; a shorter item in a later chunk
    scores 1 + 1e-5, far less apart than bfloat16 tells (8 bits: about 0.4%). The screen's
    error bound lets every such row through to the exact scores, so the search finds the
    later item; without the bound it would miss some of them."""
    from recsys.embeddings import ExactIndex

    rng = np.random.default_rng(5)
    n_users, dim, n_items = 16, 64, 12_000
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0].T  # orthonormal rows
    users, aside, elsewhere = basis[:n_users], basis[n_users:2 * n_users], basis[2 * n_users:]
    long_fill = rng.normal(size=(4096 - n_users, dim - 2 * n_users)) @ elsewhere  # scores 0 for every user
    long_fill *= 3 / np.linalg.norm(long_fill, axis=1, keepdims=True)
    short_fill = rng.normal(size=(n_items - 4096 - n_users, dim - 2 * n_users)) @ elsewhere
    short_fill *= 0.5 / np.linalg.norm(short_fill, axis=1, keepdims=True)
    items = np.vstack([users + 3 * aside, long_fill, users * (1 + 1e-5), short_fill]).astype(np.float32)
    users = np.tile(users, (4, 1)).astype(np.float32)  # 64 rows: enough to be screened
    later = np.tile(np.arange(4096, 4096 + n_users), 4)  # each user's best: after the first chunk

    index = ExactIndex(items, "cpu", screen=True)
    assert index._chunks[0] == (0, 4096)
    found, scores = index.search(users, 1)
    assert (found[:, 0] == later).all()
    np.testing.assert_allclose(scores[:, 0], 1 + 1e-5, rtol=1e-6)

    index._screen_error = 0.0  # the same screen, trusting the bfloat16 scores as they are
    missed = index.search(users, 1)[0][:, 0] != later
    assert missed.any()


def test_an_index_pickles_and_searches_the_same_after():
    """An index travels to another process (a Spark executor, a worker pool) and answers the same."""
    import pickle

    from recsys.embeddings import ExactIndex

    rng = np.random.default_rng(8)
    items = (rng.normal(size=(9000, 8)) * rng.pareto(1.5, size=(9000, 1))).astype(np.float32)
    users = rng.normal(size=(100, 8)).astype(np.float32)
    index = ExactIndex(items, "cpu")
    copy = pickle.loads(pickle.dumps(index))
    for a, b in zip(index.search(users, 10), copy.search(users, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_nan_item_gets_the_same_answer_screened_or_not():
    """A NaN item vector (a model that diverged) makes every score it takes part in NaN; the
    screen lets such rows through to the exact scores, so screened and unscreened agree."""
    from recsys.embeddings import ExactIndex

    rng = np.random.default_rng(9)
    items = (rng.normal(size=(12_000, 8)) * np.linspace(3, 0.5, 12_000)[:, None]).astype(np.float32)
    items[-5] = np.nan
    users = rng.normal(size=(100, 8)).astype(np.float32)
    screened = ExactIndex(items, "cpu", screen=True)
    assert screened.screens
    for a, b in zip(screened.search(users, 10), ExactIndex(items, "cpu", screen=False).search(users, 10), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_screening_is_refused_on_cuda():
    from recsys.embeddings import ExactIndex

    with pytest.raises(ValueError, match="for the CPU"):
        ExactIndex(np.eye(8, dtype=np.float32), "cuda", screen=True)


@pytest.mark.parametrize("length", [1e-23, 1e-33])
@pytest.mark.parametrize("screen", [False, True], ids=["exact-chunks", "screened-chunks"])
def test_users_so_short_their_squares_underflow_still_find_their_best_items(screen, length):
    """Each user's best item lies after the first chunk. Users scaled to 1e-23, whose float32
    squares underflow to zero: a length taken plainly would be 0, no item left could seem to
    beat their k-th best, and they would stop after the first chunk without it. At 1e-33 the
    screen's unit vectors, and the scale that turns their scores back, must be the same."""
    from recsys.embeddings import ExactIndex

    rng = np.random.default_rng(10)
    dim = 64
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0].T  # orthonormal rows
    directions, aside, elsewhere = basis[:16], basis[16:32], basis[32:]
    long_fill = rng.normal(size=(4096 - 16, 32)) @ elsewhere
    long_fill *= 3 / np.linalg.norm(long_fill, axis=1, keepdims=True)
    short_fill = rng.normal(size=(6000, 32)) @ elsewhere
    short_fill *= 0.5 / np.linalg.norm(short_fill, axis=1, keepdims=True)
    # First chunk: each direction scores 1 on a long item; later: 1.5 on a shorter one.
    items = np.vstack([directions + 3 * aside, long_fill, directions * 1.5, short_fill]).astype(np.float32)
    users = (np.tile(directions, (4, 1)) * length).astype(np.float32)
    index = ExactIndex(items, "cpu", screen=screen)
    assert index._chunks[0] == (0, 4096)
    found, scores = index.search(users, 1)
    assert (found[:, 0] == np.tile(np.arange(4096, 4096 + 16), 4)).all()
    np.testing.assert_allclose(scores[:, 0], 1.5 * length, rtol=1e-5)


def test_chunks_cover_the_catalogue_doubling():
    from recsys.embeddings import chunk_bounds

    assert chunk_bounds(4000) == [(0, 4000)]
    bounds = chunk_bounds(1_000_000)
    assert bounds[0] == (0, 125_000) and bounds[-1][1] == 1_000_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert [end - start for start, end in bounds] == [125_000, 125_000, 250_000, 500_000]

    # Unit vectors (cosine neighbours): nobody could stop early, so one pass, no chunks.
    from recsys.embeddings import ExactIndex, unit_rows

    unit = unit_rows(np.random.default_rng(0).normal(size=(20_000, 8)))
    assert ExactIndex(unit, "cpu")._chunks == [(0, 20_000)]
