"""Conformance tests every model passes, and checks that each model really learns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.data import Interactions
from recsys.data.splits import split
from recsys.data.synthetic import checkerboard as make_checkerboard
from recsys.evaluation import evaluate
from recsys.models import (
    ALS,
    IALS,
    MODELS,
    MatrixFactorization,
    Popular,
    Recommender,
    create_model,
    load_model,
)
from recsys.models.base import NotFittedError

FAST = {
    "popular": {},
    "als": {"factors": 8, "epochs": 8, "regularization": 0.01},
    "ials": {"factors": 8, "epochs": 8, "regularization": 0.01, "unobserved_weight": 0.3, "device": "cpu"},
    "mf": {"factors": 8, "epochs": 40, "learning_rate": 0.05, "batch_size": 64, "negatives": 16, "device": "cpu"},
    "mf-softmax": {"factors": 8, "epochs": 40, "learning_rate": 0.05, "batch_size": 64, "negatives": 16, "loss": "softmax", "device": "cpu"},
    "two-tower": {"factors": 8, "hidden": 16, "feature_dim": 4, "recent": 10, "epochs": 15, "learning_rate": 0.02, "batch_size": 128, "device": "cpu"},
    "bpmf": {"factors": 4, "epochs": 12, "burn_in": 4, "device": "cpu"},
}
LEARNERS = ["als", "ials", "mf", "mf-softmax", "two-tower"]
RATING_MODELS = {"bpmf"}  # fitted on ratings: the checkerboard's entries, rated


def make(name: str, **overrides) -> Recommender:
    params = {**FAST[name], **overrides}
    return create_model(name if name in MODELS else name.split("-")[0], **params)


def rated(data: Interactions) -> Interactions:
    """The same entries with 1-5 star ratings (a user's parity and the item's third decide)."""
    users, items = data.row_indices, data.matrix.indices
    stars = 1.0 + (users % 2) * 2 + (items % 3)
    return Interactions.from_arrays(data.users.ids[users], data.items.ids[items], stars, feedback="rating")


def data_for(name: str, data: Interactions) -> Interactions:
    return rated(data) if name in RATING_MODELS else data


@pytest.fixture(params=list(FAST))
def name(request) -> str:
    return request.param


@pytest.fixture
def fitted(name, checkerboard):
    return make(name).fit(data_for(name, checkerboard))


def test_fit_returns_self_with_plain_factor_arrays(name, checkerboard):
    model = make(name)
    assert model.fit(data_for(name, checkerboard)) is model
    assert model.user_factors.shape[0] == checkerboard.n_users
    assert model.item_factors.shape[0] == checkerboard.n_items
    assert model.user_factors.dtype == np.float32 and model.item_factors.dtype == np.float32
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()


def test_unfitted_model_says_so(name):
    with pytest.raises(NotFittedError):
        make(name).recommend(0)


def test_recommend_shapes_follow_the_input_and_exclude_seen(fitted, checkerboard):
    ids, scores = fitted.recommend(0, k=5)
    assert ids.shape == (5,) and scores.shape == (5,)
    ids2, scores2 = fitted.recommend([0, 1, 2], k=5)
    assert ids2.shape == (3, 5) and scores2.shape == (3, 5)
    assert np.all(np.diff(scores2, axis=1) <= 1e-6)  # best first
    seen = set(checkerboard.matrix[0].indices.tolist())
    assert not seen & set(ids.tolist())
    with_seen, _ = fitted.recommend(0, k=checkerboard.n_items, exclude_seen=False)
    assert seen <= set(with_seen.tolist())


def test_pads_when_fewer_unseen_items_than_k(fitted, checkerboard):
    k = checkerboard.n_items
    ids, scores = fitted.recommend(0, k=k)
    n_unseen = k - checkerboard.matrix[0].nnz
    assert (ids[:n_unseen] >= 0).all() and (ids[n_unseen:] == -1).all()
    assert np.isneginf(scores[n_unseen:]).all()


def test_unknown_user_gets_popular_fallback_with_nan_scores(fitted):
    ids, scores = fitted.recommend([0, 10_000], k=3)
    assert np.isnan(scores[1]).all() and np.isfinite(scores[0]).all()
    assert ids[1].tolist() == fitted.item_ids(fitted.popular_items(3)).tolist()
    assert not fitted.users.contains(10_000)


def test_similar_items_excludes_the_item_itself(fitted):
    ids, _sims = fitted.similar_items([0, 1], k=4)
    assert ids.shape == (2, 4)
    assert 0 not in ids[0].tolist() and 1 not in ids[1].tolist()
    _unknown, s = fitted.similar_items("nope", k=2)
    assert np.isnan(s).all()


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(fitted)
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.user_factors, fitted.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, fitted.item_factors)
    users = np.arange(10)
    a, sa = fitted.recommend(users, k=5)
    b, sb = loaded.recommend(users, k=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb)
    assert type(fitted).load(tmp_path / "m").name == fitted.name


def test_same_seed_same_factors(name, checkerboard):
    a = make(name).fit(data_for(name, checkerboard))
    b = make(name).fit(data_for(name, checkerboard))
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


@pytest.mark.parametrize("learner", LEARNERS)
def test_learns_the_checkerboard(learner):
    data = make_checkerboard(n_users=80, n_items=40, density=0.4)
    model = make(learner).fit(data)
    top, _ = model.recommend(np.arange(data.n_users), k=3)
    parity_ok = (np.asarray(top, dtype=np.int64) % 2) == (np.arange(data.n_users)[:, None] % 2)
    assert parity_ok.mean() > 0.95


@pytest.mark.parametrize("learner", LEARNERS)
def test_beats_popularity_on_held_out_data(learner):
    data = make_checkerboard(n_users=120, n_items=60, density=0.4)
    train, test = split(data, "user", seed=0)
    learned = evaluate(make(learner).fit(train), test, ks=[5]).metrics["recall@5"]
    baseline = evaluate(Popular().fit(train), test, ks=[5]).metrics["recall@5"]
    assert learned > 1.5 * baseline


def test_mf_explicit_predicts_ratings_with_biases():
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    u_true = rng.normal(size=(n_users, 2))
    i_true = rng.normal(size=(n_items, 2))
    users, items = np.divmod(rng.choice(n_users * n_items, 1200, replace=False), n_items)
    ratings = np.clip(3 + (u_true[users] * i_true[items]).sum(1), 1, 5)
    data = Interactions.from_arrays(users, items, ratings, feedback="rating")
    train, test = split(data, "random", seed=0)
    model = MatrixFactorization(loss="mse", factors=4, epochs=60, learning_rate=0.03, batch_size=64, device="cpu").fit(train)
    assert model.predicts_ratings and model.has_bias
    rmse = evaluate(model, test, ks=[5]).metrics["rmse"]
    baseline = float(np.sqrt(np.mean((test.matrix.data - train.matrix.data.mean()) ** 2)))
    assert rmse < 0.8 * baseline
    # The folded bias dimensions reproduce the model's own score.
    u, i = test.row_indices[:5], test.matrix.indices[:5]
    direct = (model.user_factors[u] * model.item_factors[i]).sum(1) + model.user_bias[u] + model.item_bias[i] + model.global_bias
    np.testing.assert_allclose(model.score_pairs(u, i), direct, rtol=1e-5)


def test_a_rating_models_predictions_stay_within_its_training_ratings(tmp_path):
    """Predicted ratings are clipped to the range the model was trained on (as Surprise does
    with the rating scale), and RMSE counts the predictions ``predict`` gives; rankings keep
    the scores as they are. A model saved before the range was recorded is not clipped."""
    import json

    from recsys.evaluation.full_ranking import rating_errors

    rng = np.random.default_rng(1)
    users, items = np.divmod(rng.choice(30 * 20, 300, replace=False), 20)
    data = Interactions.from_arrays(users, items, rng.integers(1, 6, 300).astype(float), feedback="rating")
    model = MatrixFactorization(loss="mse", factors=2, epochs=2, device="cpu").fit(data)
    assert model.rating_range == (1.0, 5.0)
    model.global_bias = 40.0  # every raw score far above the scale
    assert model.score_pairs(np.arange(3), np.arange(3)).min() > 5
    np.testing.assert_array_equal(model.predict(data.users.ids[:3], data.items.ids[:3]), 5.0)
    errors = rating_errors(model.embeddings(), data)
    np.testing.assert_allclose(errors, 5.0 - data.matrix.data)
    model.save(tmp_path / "m")
    assert MatrixFactorization.load(tmp_path / "m").rating_range == (1.0, 5.0)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    del meta["rating_range"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    old = MatrixFactorization.load(tmp_path / "m")
    assert old.rating_range is None and old.predict(data.users.ids[0], data.items.ids[0]) > 5
    assert make("ials").fit(data).rating_range is None  # ranks, predicts no ratings


@pytest.mark.parametrize("name", ["mf", "ials", "bpmf"])
def test_torch_models_run_on_every_device(name, device, checkerboard):
    model = create_model(name, factors=4, epochs=2, device=device).fit(data_for(name, checkerboard))
    assert np.isfinite(model.item_factors).all()


def test_ials_cuda_matches_cpu(checkerboard):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = IALS(factors=8, epochs=4, device="cpu").fit(checkerboard)
    gpu = IALS(factors=8, epochs=4, device="cuda").fit(checkerboard)
    np.testing.assert_allclose(cpu.item_factors, gpu.item_factors, rtol=1e-3, atol=1e-4)


def test_ials_solves_its_least_squares_problem(checkerboard):
    """After an epoch with enough CG steps, each user vector solves its normal equations."""
    model = IALS(factors=6, epochs=1, cg_steps=50, regularization=0.05, unobserved_weight=0.2,
                 regularization_exponent=1.0, weighting="binary", device="cpu").fit(checkerboard)
    # The last half-epoch solved items against fixed users: check the item systems exactly.
    P, Q = model.user_factors.astype(np.float64), model.item_factors.astype(np.float64)
    X = checkerboard.matrix.T.tocsr()
    n_users = X.shape[1]
    for i in range(0, X.shape[0], 7):
        users = X.indices[X.indptr[i]:X.indptr[i + 1]]
        reg = 0.05 * (len(users) + 0.2 * n_users) ** 1.0
        A = 0.2 * P.T @ P + P[users].T @ P[users] + reg * np.eye(6)
        b = P[users].sum(0)
        np.testing.assert_allclose(Q[i], np.linalg.solve(A, b), rtol=1e-3, atol=1e-5)


def test_bad_hyper_parameters_are_reported_at_fit(checkerboard):
    from recsys.errors import ConfigError

    with pytest.raises(ConfigError, match="no hyper-parameter"):
        create_model("als", learning_rate=0.1)
    with pytest.raises(ConfigError, match="loss must be one of"):
        MatrixFactorization(loss="hinge").fit(checkerboard)
    with pytest.raises(ConfigError, match="needs rating data"):
        MatrixFactorization(loss="mse").fit(checkerboard)
    with pytest.raises(ConfigError):
        ALS(factors=0).fit(checkerboard)


# What fit may leave on an estimator besides its hyper-parameters: what it learned.
LEARNED = {"users", "items", "seen", "item_popularity", "training_fingerprint", "fitted_params", "data_shape",
           "history", "fit_seconds", "user_factors", "item_factors", "user_bias", "item_bias", "global_bias", "rating_range",
           "best_epoch", "user_encoder", "item_encoder", "_user_tower", "_item_tower"}


@pytest.mark.parametrize("learner", [*LEARNERS, "bpmf"])
def test_training_state_stays_with_the_trainer(learner, checkerboard):
    """Regression: the models kept optimizers, tensors, generators and samplers on the
    estimator during fit and popped them by name afterwards. Now a trainer holds them,
    during fit as after it."""
    seen = []

    class Look:
        def on_epoch_end(self, model, epoch, figures):
            seen.append(set(vars(model)))

    model = make(learner, epochs=2, **({"burn_in": 1} if learner == "bpmf" else {})).fit(
        data_for(learner, checkerboard), callbacks=[Look()])
    for names in [*seen, set(vars(model))]:
        assert names - set(model.param_names()) <= LEARNED


@pytest.mark.parametrize(("use_gpu", "device"), [(False, "cpu"), (True, "cuda"), ("auto", "auto")])
def test_als_saved_with_use_gpu_loads_with_that_device(checkerboard, tmp_path, use_gpu, device):
    """ALS's ``use_gpu`` flag became ``device``, every model's training option; a model.json
    written with the flag loads, the flag read as the device."""
    model = ALS(**FAST["als"], device="cpu").fit(checkerboard)
    model.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    for key in ("params", "fitted_params"):
        del meta[key]["device"]
        meta[key]["use_gpu"] = use_gpu
    meta_file.write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "m")
    assert loaded.device == device and loaded.fitted_params["device"] == device
    assert "use_gpu" not in loaded.get_params()
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)


def test_every_trained_model_takes_the_run_device(checkerboard):
    from recsys.jobs.config import apply_device

    for name in ("als", "ials", "mf", "two-tower"):
        assert apply_device(name, {}, "cpu") == {"device": "cpu"}
        assert create_model(name, device="cpu").training_device() == "cpu"
    assert apply_device("popular", {}, "cuda") == {} and Popular().training_device() == "cpu"
    assert apply_device("als", {"device": "cpu"}, "cuda") == {"device": "cpu"}  # the model's own setting wins


def test_cpu_budget_follows_affinity_and_the_cgroup_quota(tmp_path, monkeypatch):
    """torch would start a thread per host core; a container's quota (or the process's
    affinity) says how many CPUs it may use."""
    import os

    from recsys import device

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert device.cpu_budget(tmp_path) == 4  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert device.cpu_budget(tmp_path) == 2  # 1.5 CPUs of quota: two threads
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert device.cpu_budget(tmp_path) == 4
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert device.cpu_budget(tmp_path) == 1  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert device.cpu_budget(tmp_path) == 4


def test_torch_threads_are_lowered_to_the_budget_never_raised(monkeypatch):
    import torch

    from recsys import device

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "cpu_budget", lambda: 1)
        torch.set_num_threads(2)
        assert device.limit_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(device, "cpu_budget", lambda: 8)
        assert device.limit_torch_threads() == 8 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
