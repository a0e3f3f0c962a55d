"""iALS with popularity-weighted unobserved pairs (eALS, ``unobserved_exponent``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys.data.interactions import Interactions
from recsys.data.synthetic import checkerboard as make_checkerboard
from recsys.data.vocabulary import Vocabulary
from recsys.models import IALS, load_model
from recsys.models.ials import unobserved_weights

PARAMS = {"factors": 5, "regularization": 0.05, "unobserved_weight": 0.2, "regularization_exponent": 0.5,
          "weighting": "binary", "device": "cpu"}


@pytest.fixture(scope="module")
def skewed() -> Interactions:
    """30 users x 16 items, item popularity falling steeply with the index; item 15 is never used."""
    rng = np.random.default_rng(3)
    p = 0.9 / (1 + np.arange(16)) ** 0.8
    p[15] = 0.0
    keep = rng.random((30, 16)) < p
    keep[np.arange(30), np.arange(30) % 3] = True  # no empty user
    users, items = np.nonzero(keep)
    return Interactions.from_arrays(users, items, items=Vocabulary(np.arange(16)))


def dense_solution(fixed: np.ndarray, observed: np.ndarray, weights: np.ndarray, reg: float) -> np.ndarray:
    """argmin_x sum_j weights_j (x . y_j)^2 + sum_{j observed} (x . y_j - 1)^2 + reg |x|^2, written
    as one weighted least-squares problem over every j (targets c / (c + w) where observed)."""
    total = weights + observed  # binary confidence: c = 1 where observed
    target = np.where(observed > 0, observed / total, 0.0)
    a = fixed.T @ (total[:, None] * fixed) + reg * np.eye(fixed.shape[1])
    return np.linalg.solve(a, fixed.T @ (total * target))


def test_weights_have_mean_alpha0_and_follow_popularity():
    w = unobserved_weights(np.array([0, 1, 4, 16]), 0.3, 0.5)
    np.testing.assert_allclose(w.mean(), 0.3)
    np.testing.assert_allclose(w / w[1], [1, 1, 2, 4])  # an unused item counts as used once
    np.testing.assert_allclose(unobserved_weights(np.array([0, 3, 9]), 0.3, 0.0), 0.3)


def test_exponent_zero_is_the_uniform_model_and_a_tiny_one_its_limit(skewed):
    base = IALS(**PARAMS, epochs=3).fit(skewed)
    zero = IALS(**PARAMS, epochs=3, unobserved_exponent=0.0).fit(skewed)
    np.testing.assert_array_equal(base.item_factors, zero.item_factors)  # the same code path
    near = IALS(**PARAMS, epochs=3, unobserved_exponent=1e-9).fit(skewed)  # the weighted path
    np.testing.assert_allclose(near.item_factors, base.item_factors, rtol=1e-4, atol=1e-5)
    assert not np.allclose(IALS(**PARAMS, epochs=3, unobserved_exponent=1.0).fit(skewed).item_factors,
                           base.item_factors, atol=1e-3)


@pytest.mark.parametrize("beta", [0.5, -0.5])
def test_each_half_epoch_solves_the_weighted_least_squares(skewed, beta):
    """With enough CG steps, users (then items) are the dense minimizers of the weighted objective."""
    model = IALS(**PARAMS, epochs=2, cg_steps=60, unobserved_exponent=beta)
    trainer = model.create_trainer(skewed, model.resolved_params(skewed))  # epoch by epoch, as fit runs it
    snapshots = {}
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
        snapshots[epoch] = {k: v.astype(np.float64) for k, v in trainer.export().items()}
    P, Q = snapshots[2]["user_factors"], snapshots[2]["item_factors"]
    X = (skewed.matrix.toarray() > 0).astype(np.float64)
    n_users, n_items = X.shape
    counts = X.sum(0)
    f = np.maximum(counts, 1) ** beta
    w = 0.2 * n_items * f / f.sum()
    for u in range(n_users):  # users of epoch 2 against the items of epoch 1
        reg = 0.05 * (X[u].sum() + w.sum()) ** 0.5
        np.testing.assert_allclose(P[u], dense_solution(snapshots[1]["item_factors"], X[u], w, reg), rtol=1e-3, atol=1e-5)
    for i in range(n_items):  # item i: every user's pair weighs w_i when unobserved
        reg = 0.05 * (counts[i] + w[i] * n_users) ** 0.5
        np.testing.assert_allclose(Q[i], dense_solution(P, X[:, i], np.full(n_users, w[i]), reg),
                                   rtol=1e-3, atol=1e-5)


def test_fold_in_uses_the_weighted_gram_and_survives_saving(skewed, tmp_path):
    model = IALS(**PARAMS, epochs=4, unobserved_exponent=0.5).fit(skewed)
    assert skewed.item_counts()[15] == 0
    folded = model.fold_in(skewed).vectors
    X = (skewed.matrix.toarray() > 0).astype(np.float64)
    w = unobserved_weights(X.sum(0), 0.2, 0.5)
    Q = model.item_factors.astype(np.float64)
    for u in (0, 7, 29):
        reg = 0.05 * (X[u].sum() + w.sum()) ** 0.5
        np.testing.assert_allclose(folded[u], dense_solution(Q, X[u], w, reg), rtol=1e-4, atol=1e-6)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.get_params()["unobserved_exponent"] == 0.5
    np.testing.assert_array_equal(loaded.fold_in(skewed).vectors, folded)


def test_learns_the_checkerboard_with_popularity_weights():
    data = make_checkerboard(n_users=80, n_items=40, density=0.4)
    model = IALS(factors=8, epochs=8, regularization=0.01, unobserved_weight=0.3, unobserved_exponent=0.5,
                 device="cpu").fit(data)
    top, _ = model.recommend(np.arange(data.n_users), k=3)
    assert ((top % 2) == (np.arange(data.n_users)[:, None] % 2)).mean() > 0.95


def test_cuda_matches_cpu_with_popularity_weights(skewed):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = IALS(**{**PARAMS, "device": "cpu"}, epochs=4, unobserved_exponent=0.5).fit(skewed)
    gpu = IALS(**{**PARAMS, "device": "cuda"}, epochs=4, unobserved_exponent=0.5).fit(skewed)
    np.testing.assert_allclose(cpu.item_factors, gpu.item_factors, rtol=1e-3, atol=1e-4)


def test_weights_stay_finite_for_large_exponents():
    w = unobserved_weights(np.array([5000, 3, 0]), 1.0, 100.0)
    assert np.isfinite(w).all() and w.mean() == pytest.approx(1.0)


@pytest.mark.parametrize("exponent", [0.0, 0.5])
def test_solving_in_row_blocks_on_worker_threads_matches_one_block(skewed, monkeypatch, exponent):
    """The CPU path solves each half-epoch's rows in blocks on worker threads: the same
    factors as one whole-table solve, with torch's thread count restored after."""
    import torch

    from recsys import device

    fitted = {}
    for workers in (1, 3):
        monkeypatch.setattr("recsys.models.ials.cpu_budget", lambda n=workers: n)
        model = IALS(**{**PARAMS, "unobserved_exponent": exponent}, epochs=4)
        trainer = model.create_trainer(skewed, {**model.get_params(), "unobserved_weight": 0.2})
        blocks = trainer.user_blocks
        assert len(blocks) == workers and blocks[0][0] == 0 and blocks[-1][1] == skewed.n_users
        assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))  # every row once, in order
        with device.ThreadGovernor(2, adaptive=False):
            for epoch in range(1, 5):
                trainer.train_epoch(epoch)
            assert torch.get_num_threads() == 2
        assert (trainer._pool is not None) == (workers > 1)  # the workers solved
        trainer.finalize()
        fitted[workers] = trainer.export()
    for name in ("user_factors", "item_factors"):
        np.testing.assert_allclose(fitted[3][name], fitted[1][name], rtol=1e-4, atol=1e-5)
