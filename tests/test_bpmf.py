"""BPMF (recsys.models.bpmf): it learns planted ratings down to their noise, its pieces
(the Wishart draw, the low-rank average, the fold-in) do what they say, and rating metrics
cover every test rating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data import Interactions
from recsys.data.splits import split
from recsys.errors import ConfigError
from recsys.evaluation import evaluate
from recsys.models import BayesianMF, MatrixFactorization
from recsys.models.bpmf import low_rank, wishart

NOISE = 0.3


@pytest.fixture(scope="module")
def planted() -> tuple[Interactions, Interactions]:
    """Ratings 3 + b_u + b_i + p_u . q_i (rank 3) plus N(0, NOISE^2) noise: the best any
    model can do on held-out entries is an RMSE of NOISE."""
    rng = np.random.default_rng(0)
    n_users, n_items = 120, 80
    p, q = rng.normal(size=(n_users, 3)) * 0.7, rng.normal(size=(n_items, 3)) * 0.7
    bu, bi = rng.normal(size=n_users) * 0.4, rng.normal(size=n_items) * 0.4
    users, items = np.divmod(rng.choice(n_users * n_items, 4000, replace=False), n_items)
    ratings = 3 + bu[users] + bi[items] + (p[users] * q[items]).sum(1) + rng.normal(size=len(users)) * NOISE
    data = Interactions.from_arrays(users, items, ratings, feedback="rating")
    return split(data, "random", test_fraction=0.2, seed=0)


def test_learns_planted_ratings_down_to_the_noise(planted):
    train, test = planted
    baseline = float(np.sqrt(np.mean((test.matrix.data - train.matrix.data.mean()) ** 2)))
    # Told the noise, it reaches it; with its default ("auto", which takes half the ratings'
    # variance for noise, far more than here) it still removes most of the error.
    model = BayesianMF(factors=3, epochs=60, burn_in=10, noise_precision=NOISE**-2, device="cpu").fit(train)
    rmse = evaluate(model, test, ks=[5]).metrics["rmse"]
    assert rmse < 1.2 * NOISE < 0.4 * baseline  # estimation error adds ~0.035 to the noise here
    default = evaluate(BayesianMF(factors=3, epochs=60, burn_in=10, device="cpu").fit(train), test, ks=[5])
    assert default.metrics["rmse"] < 0.4 * baseline
    # The folded biases reproduce the model's own score.
    u, i = test.row_indices[:5], test.matrix.indices[:5]
    direct = ((model.user_factors[u] * model.item_factors[i]).sum(1) + model.user_bias[u]
              + model.item_bias[i] + model.global_bias)
    np.testing.assert_allclose(model.score_pairs(u, i), direct, rtol=1e-5)


def test_one_kept_sample_is_exported_as_it_was_drawn(planted):
    """The running average of score matrices, truncated to rank ``factors``, is exact for a
    single sample (rank ``factors``): the export's scores are that sample's."""
    train, _ = planted
    before = BayesianMF(factors=3, epochs=5, burn_in=4, device="cpu")
    trainer = before.create_trainer(train, {**before.get_params(), "noise_precision": 2.0})
    for epoch in range(1, 6):
        trainer.train_epoch(epoch)
    sample = (trainer.P @ trainer.Q.T).numpy()
    out = trainer.export()
    np.testing.assert_allclose(out["user_factors"] @ out["item_factors"].T, sample, atol=1e-4)
    np.testing.assert_array_equal(out["user_bias"], trainer.bu.numpy())


def test_low_rank_is_the_truncated_svd_of_the_product():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 12)), rng.normal(size=(20, 12))
    left, right = low_rank(torch.as_tensor(a), torch.as_tensor(b), 4)
    u, s, vt = np.linalg.svd(a @ b.T)
    np.testing.assert_allclose(left.numpy() @ right.numpy().T, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-9)
    # A product of lower rank than asked: padded with zero columns.
    left, right = low_rank(torch.as_tensor(a[:, :2]), torch.as_tensor(b[:, :2]), 5)
    assert left.shape == (30, 5) and right.shape == (20, 5)
    np.testing.assert_allclose(left.numpy() @ right.numpy().T, a[:, :2] @ b[:, :2].T, atol=1e-9)


def test_wishart_draws_have_the_wishart_mean():
    rng = np.random.default_rng(2)
    scale = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
    draws = np.mean([wishart(scale, 7.0, rng) for _ in range(4000)], axis=0)
    np.testing.assert_allclose(draws, 7.0 * scale, atol=0.25)


def test_resumed_chain_equals_the_uninterrupted_one(planted, tmp_path):
    """Each sweep's draws come from the seed and the sweep: a chain resumed from a
    checkpoint (made after the burn-in, with samples kept) ends where the whole one does."""
    from recsys.checkpoint import Checkpointing

    train, _ = planted
    params = {"factors": 3, "epochs": 6, "burn_in": 2, "device": "cpu"}
    reference = BayesianMF(**params).fit(train)
    BayesianMF(**params).fit(train, checkpointing=Checkpointing(tmp_path / "c", every=4))
    resumed = BayesianMF(**params).fit(train, checkpointing=Checkpointing(tmp_path / "c", resume=True))
    np.testing.assert_array_equal(resumed.user_factors, reference.user_factors)
    np.testing.assert_array_equal(resumed.item_bias, reference.item_bias)


def test_fold_in_rates_a_known_user_like_the_model(planted):
    """A trained user's own ratings, folded in, give a user who rates every item about as
    the trained one does."""
    train, _ = planted
    model = BayesianMF(factors=3, epochs=40, burn_in=10, device="cpu").fit(train)
    keep = train.row_indices < 20
    history = Interactions.from_arrays(train.users.ids[train.row_indices[keep]],
                                       train.items.ids[train.matrix.indices[keep]],
                                       train.matrix.data[keep], feedback="rating")
    folded = model.fold_in(history)
    trained = model.user_vectors()[model.users.index(folded.users.ids)]
    items = model.item_vectors()
    gap = folded.vectors @ items.T - trained @ items.T
    assert np.sqrt(np.mean(gap**2)) < NOISE
    with pytest.raises(ConfigError, match="rating"):
        model.fold_in(Interactions.from_arrays(["x"], [train.items.ids[0]]))


def test_refuses_what_it_cannot_fit(planted, checkerboard):
    with pytest.raises(ConfigError, match="needs rating data"):
        BayesianMF(epochs=2, burn_in=0).fit(checkerboard)
    with pytest.raises(ConfigError, match="burn_in"):
        BayesianMF(epochs=2, burn_in=-1).fit(planted[0])
    with pytest.raises(ConfigError, match="noise_precision"):
        BayesianMF(epochs=2, burn_in=0, noise_precision=0.0).fit(planted[0])


def test_noise_precision_auto_follows_the_rating_scale(planted):
    train, _ = planted
    model = BayesianMF(epochs=2, burn_in=0, device="cpu").fit(train)
    assert model.fitted_params["noise_precision"] == pytest.approx(1.0 / (0.575 * np.var(train.matrix.data)))
    assert "noise_precision" in model.describe_auto()


def test_rating_metrics_cover_test_ratings_of_unknown_users_and_items():
    """RMSE is over every test rating (as Surprise and the papers on ML-100K's u1 report
    it): an item without training ratings is rated mu + b_u, a user mu + b_i, both mu."""
    train = Interactions.from_arrays(["a", "a", "b"], ["x", "y", "x"], [4.0, 2.0, 5.0], feedback="rating")
    model = MatrixFactorization(loss="mse", factors=2, epochs=3, batch_size=2, device="cpu").fit(train)
    test = Interactions.from_arrays(["a", "a", "new", "new"], ["x", "unseen", "y", "unseen"],
                                    [3.0, 4.0, 2.0, 1.0], feedback="rating")
    mu, a, y = model.global_bias, model.users.index("a"), model.items.index("y")
    predicted = np.array([model.predict("a", "x"), mu + model.user_bias[a], mu + model.item_bias[y], mu])
    err = predicted - np.array([3.0, 4.0, 2.0, 1.0])
    metrics = evaluate(model, test, ks=[1]).metrics
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-5)
    assert metrics["mae"] == pytest.approx(float(np.mean(np.abs(err))), rel=1e-5)


def test_train_with_a_test_file_scores_every_test_rating():
    """Regression: `recsys train --test FILE` dropped the test ratings of users and items
    without training ratings before evaluating (32 of u1.test's 20,000), so its RMSE was
    over the others while `recsys evaluate` and Surprise score them all."""
    from recsys.jobs import TrainConfig, train

    base = Interactions.from_arrays(["a", "a", "b", "b"], ["x", "y", "x", "z"], [4.0, 2.0, 5.0, 3.0],
                                    feedback="rating")
    given = Interactions.from_arrays(["a", "b", "new", "a"], ["z", "y", "x", "unseen"], [3.0, 4.0, 2.0, 1.0],
                                     feedback="rating")
    config = TrainConfig(model="mf", params={"loss": "mse", "factors": 2, "epochs": 2, "batch_size": 2,
                                             "device": "cpu"}, ks=(1,))
    result = train(base, config, test=given, save=False)
    every = evaluate(result.model, given, ks=[1])
    assert result.evaluation.dropped_entries == 2  # from the ranking: no user or item to rank
    assert result.evaluation.metrics["rmse"] == pytest.approx(every.metrics["rmse"], rel=1e-6)
    known, _ = given.reindex(result.model.users, result.model.items)
    assert evaluate(result.model, known, ks=[1]).metrics["rmse"] != pytest.approx(every.metrics["rmse"], rel=1e-3)


def test_factors_whose_outer_products_cannot_fit_are_refused_before_training(tmp_path, monkeypatch):
    """Regression: the memory check counted the factor tables alone, not the sampler's
    (users or items) x (factors+1)^2 outer products; 200,000 factors on 30 users passed it
    (0.2 GiB of tables) and then asked for terabytes."""
    import recsys.models.bpmf as bpmf
    from tests.cli_invoke import run

    monkeypatch.setattr(bpmf.BayesianMFTrainer, "__init__", lambda *a: pytest.fail("training started"))
    rng = np.random.default_rng(0)
    log = tmp_path / "ratings.csv"
    log.write_text("user,item,rating\n" + "".join(
        f"{u},{i},{rng.integers(1, 6)}\n" for u in range(30) for i in rng.choice(20, 8, replace=False)))
    result = run("train", "--model", "bpmf", "--factors", 200_000, "--data", log, "--no-index",
                 "-o", tmp_path / "m", code=2)
    assert "outer products" in result.output and "Use fewer factors" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m").exists()
    data = Interactions.from_arrays(np.arange(30) % 5, np.arange(30) % 7, np.ones(30), feedback="rating")
    assert BayesianMF(factors=200_000)._work_bytes(data, 200_000) == 7 * 200_001**2 * 4
