"""Two-tower model: towers, planted feature structure, cold items, new users, save/load, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from recsys_cli.main import app
from typer.testing import CliRunner

from recsys.data.features import attach_features, feature_kinds
from recsys.data.interactions import Interactions
from recsys.data.splits import split
from recsys.data.synthetic import GENRES, generate
from recsys.errors import ConfigError
from recsys.evaluation.cold import evaluate_cold_items
from recsys.jobs import evaluate_model
from recsys.models import MatrixFactorization, TwoTower, load_model
from recsys.models.two_tower import Tower, TwoTowerTrainer, cosine_decay, first_items
from recsys.models.two_tower.towers import HistorySums

SMALL = {"factors": 16, "hidden": 32, "feature_dim": 8, "recent": 10, "epochs": 12, "learning_rate": 0.01,
         "batch_size": 256, "device": "cpu"}


def typed(frame: pd.DataFrame, id_col: str, multi: tuple[str, ...] = ()) -> pd.DataFrame:
    out = frame.set_index(frame[id_col].astype(str)).drop(columns=[id_col])
    for col in multi:
        out[col] = [tuple(v.split("|")) for v in out[col]]
    out.attrs["kinds"] = feature_kinds(out)
    return out


@pytest.fixture(scope="module")
def planted():
    """Four clusters; users' favourite genre and items' first genre are their cluster's (no noise)."""
    syn = generate(n_users=160, n_items=120, n_clusters=4, mean_items_per_user=12, feature_noise=0.0,
                   cold_item_fraction=0.15, seed=1)
    data = syn.to_interactions()
    items = typed(syn.items.drop(columns=["title"]), "item_id", multi=("genres",))
    users = typed(syn.users, "user_id")
    full, report = attach_features(data, users, items)
    return syn, full, report


@pytest.fixture(scope="module")
def fitted(planted):
    _syn, full, _ = planted
    return TwoTower(**SMALL).fit(full)


def test_tower_shapes():
    tower = Tower(n_ids=5, categorical=[3, 4], multi=[6], n_numeric=2, factors=7, feature_dim=3, hidden=0, history_items=9)
    out = tower(
        torch.tensor([0, 4]), torch.ones(2), torch.tensor([[1, 0], [2, 3]]), [torch.tensor([[1, 2, 0], [0, 0, 0]])],
        torch.zeros(2, 2), torch.tensor([[1, 9], [0, 0]]), torch.tensor([9, 0]),
    )
    assert out.shape == (2, 7)


def test_cold_items_are_recommended_to_their_clusters_users(planted, fitted):
    syn, full, report = planted
    assert report.cold["item"] == len(syn.cold_items) > 0
    cold = full.items.index(syn.cold_items)
    assert (fitted.item_popularity[cold] == 0).all() and fitted.scores_cold_items
    cluster_of_item = syn.item_cluster[np.asarray([int(i[1:]) - 1 for i in full.items.ids[cold]])]
    users = full.users.index(syn.users["user_id"].to_numpy())
    scores = fitted.user_vectors()[users] @ fitted.item_vectors()[cold].T
    best = cluster_of_item[np.argmax(scores, axis=1)]
    assert (best == syn.user_cluster).mean() > 0.8
    # And through the public path: a cold item of cluster c is in cluster-c users' top 20 far
    # more often than in other users' (the catalogue has 120 items, the cold ones included).
    top, _ = fitted.recommend(syn.users["user_id"].to_numpy(), k=20)
    for c in range(4):
        items_c = set(full.items.ids[cold][cluster_of_item == c])
        has = np.array([bool(items_c & set(row)) for row in top])
        assert has[syn.user_cluster == c].mean() > 2 * has[syn.user_cluster != c].mean() + 0.05


def test_cold_item_split_scores_two_tower_and_refuses_mf(planted):
    _syn, full, _ = planted
    train, test = split(full, "cold-items", test_fraction=0.2, seed=0)
    assert not (train.item_counts()[test.matrix.indices] > 0).any()
    model = TwoTower(**SMALL).fit(train)
    tt = evaluate_cold_items(model, test, ks=[5])
    random_recall = 5 / tt.extra["cold_items"]
    assert tt.metrics["recall@5"] > 2 * random_recall
    # Regression (merge review): `recsys evaluate` had no cold-item protocol (it ranked the
    # full catalogue, and models that cannot score cold items got zeros, not a note).
    assert evaluate_model(model, test, ks=[5], cold_items=True).metrics == tt.metrics
    mf = evaluate_cold_items(MatrixFactorization(factors=4, epochs=2, device="cpu").fit(train), test, ks=[5])
    assert mf.metrics == {} and "cannot score" in mf.extra["note"]


def test_new_users_from_features_and_history(planted, fitted):
    syn, full, _ = planted
    c = 2
    genre = GENRES[c]
    features = pd.DataFrame({"age": [30.0], "country": ["de"], "favorite_genre": [genre]})
    vec = fitted.embed_new_users(features)
    assert vec.shape == (1, fitted.item_vectors().shape[1])  # the factors and the tower bias
    ids, _ = fitted.recommend_new_users(features, k=10)
    picked = full.items.index(ids[0])
    clusters = syn.item_cluster[[int(i[1:]) - 1 for i in full.items.ids[picked]]]
    assert (clusters == c).mean() >= 0.6
    history = [list(full.items.ids[picked[:3]])]
    ids2, scores2 = fitted.recommend_new_users(features, history, k=5)
    assert ids2.shape == (1, 5) and not set(history[0]) & set(ids2[0]) and np.isfinite(scores2).all()
    ids3, _ = fitted.recommend_new_users(histories=[["unknown-item", *history[0]]], k=5)
    assert ids3.shape == (1, 5)


@pytest.mark.parametrize("options", [{"lr_schedule": "constant"}, {"lr_schedule": "cosine"}, {"tower_bias": True}],
                         ids=["constant-lr", "cosine-lr", "tower-bias"])
def test_training_options_learn_the_planted_clusters(planted, options):
    """Every user's top 10 warm items come mostly from the user's own cluster."""
    syn, full, _ = planted
    model = TwoTower(**{**SMALL, **options}).fit(full)
    warm = np.flatnonzero(model.item_popularity > 0)
    users = full.users.index(syn.users["user_id"].to_numpy())
    scores = model.user_vectors()[users] @ model.item_vectors()[warm].T
    top = warm[np.argsort(-scores, axis=1)[:, :10]]
    item_cluster = syn.item_cluster[[int(i[1:]) - 1 for i in full.items.ids]]
    assert (item_cluster[top] == syn.user_cluster[:, None]).mean() > 0.8


def test_tower_bias_is_one_more_dimension_of_the_factors(planted, tmp_path):
    """Score = cosine / temperature + the item tower's bias, as a plain dot product."""
    _syn, full, _ = planted
    model = TwoTower(**{**SMALL, "epochs": 2, "tower_bias": True}).fit(full)
    d = SMALL["factors"]
    assert model.user_factors.shape[1] == model.item_factors.shape[1] == d + 1
    np.testing.assert_array_equal(model.user_factors[:, -1], 1.0)
    np.testing.assert_allclose(np.linalg.norm(model.item_factors[:, :d], axis=1), 1.0, rtol=1e-5)
    assert np.ptp(model.item_factors[:, -1]) > 0  # the biases differ between items
    # Item-to-item geometry (similar items, maps, diversity) leaves the bias out.
    np.testing.assert_array_equal(model.item_embeddings(), model.item_factors[:, :d])
    ids, sims = model.similar_items(full.items.ids[:1], k=3)
    unit = model.item_embeddings() / np.linalg.norm(model.item_embeddings(), axis=1, keepdims=True)
    np.testing.assert_allclose(sims[0], unit[full.items.index(ids[0])] @ unit[0], rtol=1e-5)
    new_items = model.embed_new_items(pd.DataFrame({"genres": [("drama",)]}))
    assert new_items.shape == (1, d + 1)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(load_model(tmp_path / "m").embed_new_items(pd.DataFrame({"genres": [("drama",)]})),
                                  new_items)


def test_logq_strength_above_one_favours_popular_items(planted):
    """Over-correcting the in-batch popularity bias makes the model score popular items higher."""
    _syn, full, _ = planted

    def popularity_of_top10(strength: float) -> float:
        model = TwoTower(**{**SMALL, "logq": strength}).fit(full)
        top, _ = model.recommend(full.users.ids, k=10)
        return float(model.item_popularity[full.items.index(top.reshape(-1))].mean())

    assert popularity_of_top10(2.0) > popularity_of_top10(0.5)


def test_model_saved_before_the_tower_bias_still_loads(planted, tmp_path):
    """A model.json without the hyper-parameters added later loads as it was trained."""
    _syn, full, _ = planted
    old = TwoTower(**{**SMALL, "epochs": 1, "tower_bias": False, "lr_schedule": "constant"}).fit(full)
    old.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    for name in ("tower_bias", "lr_schedule"):
        del meta["params"][name]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "m")
    assert loaded.tower_bias is False
    np.testing.assert_array_equal(loaded.item_factors, old.item_factors)


@pytest.mark.parametrize("bad", [{"logq": "high"}, {"logq": None}, {"logq": -1.0}, {"logq": float("nan")},
                                 {"tower_bias": 2}, {"tower_bias": "no"}])
def test_bad_settings_are_refused_clearly(planted, bad):
    _syn, full, _ = planted
    with pytest.raises(ConfigError):
        TwoTower(**{**SMALL, **bad}).fit(full)


def test_first_items_keeps_each_rows_order_and_length():
    rows = np.array([0, 0, 0, 2, 2])
    items = np.array([5, 3, 9, 1, 0])
    np.testing.assert_array_equal(first_items(rows, items, 3, 2), [[6, 4], [0, 0], [2, 1]])


def test_many_new_users_at_once_match_one_at_a_time(fitted):
    """One id lookup for all histories: the same vectors as embedding each user alone."""
    ids = list(fitted.items.ids[:6])
    histories = [ids[:3], [], ["unknown", ids[4]], ids[2:6]]
    together = fitted.embed_new_users(histories=histories)
    alone = np.vstack([fitted.embed_new_users(histories=[h]) for h in histories])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    # A repeated item counts once, as in training.
    np.testing.assert_allclose(fitted.embed_new_users(histories=[[ids[0], ids[1], ids[0]]]),
                               fitted.embed_new_users(histories=[[ids[0], ids[1]]]), rtol=1e-6)
    top, _ = fitted.recommend_new_users(histories=histories, k=5)
    for row, history in zip(top, histories):
        assert not set(row) & set(history)


def test_cosine_decay_goes_from_the_base_rate_to_zero():
    assert cosine_decay(0.01, 0, 100) == 0.01
    assert cosine_decay(0.01, 50, 100) == pytest.approx(0.005)
    assert cosine_decay(0.01, 100, 100) == pytest.approx(0.0) and cosine_decay(0.01, 120, 100) == pytest.approx(0.0)


def test_same_seed_same_factors_with_features(planted):
    _syn, full, _ = planted
    params = {**SMALL, "epochs": 2, "uniform_negatives": 16}
    a = TwoTower(**params).fit(full)
    b = TwoTower(**params).fit(full)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)


def one_column_per_row_loss(t: TwoTowerTrainer, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The batch loss written plainly (the form before one column per distinct item): a
    (B, B) softmax, every other copy of a row's item masked."""
    b = len(users)
    u = t._embed_users(users, t._keep(b), items + 1)
    v = t._embed_items(items, t._keep(b))
    u, v = t.output.finish(u, users=True), t.output.finish(v, users=False)
    logits = u @ v.T - t.logq * (t.inbatch.log_q(items) + math.log(b))[None, :]
    hit = (items[None, :] == items[:, None]) & ~torch.eye(b, dtype=torch.bool)
    logits = logits.masked_fill(hit, -math.inf)
    if t.uniform_negatives:
        neg = t.warm[torch.randint(len(t.warm), (t.uniform_negatives,), generator=t.gen)]
        vn = t.output.finish(t._embed_items(neg, t._keep(len(neg))), users=False)
        extra = u @ vn.T - t.logq * math.log(t.uniform_negatives / len(t.warm))
        logits = torch.cat([logits, extra.masked_fill(neg[None, :] == items[:, None], -math.inf)], dim=1)
    return F.cross_entropy(logits, torch.arange(b))


@pytest.mark.parametrize("options", [{}, {"uniform_negatives": 16}, {"logq": False, "id_dropout": 0.0}])
def test_batch_loss_is_the_one_column_per_row_softmax(planted, options):
    """One item-tower row and softmax column per distinct (item, id draw), weighted by its
    count, is the same loss and the same gradients as one per batch row."""
    _syn, full, _ = planted
    model = TwoTower(**{**SMALL, "batch_size": 512, **options})
    model.fitted_params = model.get_params()
    t = model.create_trainer(full, model.fitted_params)
    batch = torch.randperm(len(t.rows), generator=t.gen)[:512]
    users, items = t.rows[batch], t.cols[batch]
    assert len(torch.unique(items)) < len(items)  # the batch repeats items
    weights = [*t.user_tower.parameters(), *t.item_tower.parameters()]
    state = t.gen.get_state()
    expected = one_column_per_row_loss(t, users, items)
    expected_grads = torch.autograd.grad(expected, weights, allow_unused=True)
    t.gen.set_state(state)
    loss = t.batch_loss(users, items)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(grads, expected_grads):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_history_sums_of_all_users_match_the_batch_rows_summed(planted):
    """The user tower with every user's history summed in one sparse product gives the
    outputs and gradients of summing the batch's own history rows."""
    _syn, full, _ = planted
    model = TwoTower(**SMALL)
    model.fitted_params = model.get_params()
    t = model.create_trainer(full, model.fitted_params)
    assert t.history_sums is not None  # few users: the trainer takes the product
    tower, weight = t.user_tower, t.user_tower.recent.weight
    users, items = t.rows[:300], t.cols[:300]
    keep = torch.ones(len(users))
    args = (users, keep, *t.users.rows(users), t.recent[users], items + 1)
    by_rows = tower(*args)
    (grad_rows,) = torch.autograd.grad(by_rows.square().sum(), weight)
    by_product = tower(*args, HistorySums(t.recent, t.n_items)(weight)[users])
    (grad_product,) = torch.autograd.grad(by_product.square().sum(), weight)
    torch.testing.assert_close(by_product, by_rows)
    torch.testing.assert_close(grad_product, grad_rows)
    assert not grad_product[0].any()  # the padding row learns nothing


@pytest.mark.parametrize("hidden", [0, 6])
def test_tower_applies_the_first_layer_to_categorical_tables_as_to_the_embeddings(hidden):
    """The categorical features' block of the first layer applied to their embedding tables
    gives the outputs and gradients of the plain layer over the concatenated embeddings, and
    the padding row ("missing") still learns nothing."""
    torch.manual_seed(0)
    tower = Tower(n_ids=5, categorical=[3, 4], multi=[6], n_numeric=2, factors=7, feature_dim=3, hidden=hidden,
                  history_items=9)
    ids, keep = torch.tensor([0, 1, 4, 4]), torch.tensor([1.0, 0.0, 1.0, 1.0])
    cat = torch.tensor([[0, 1], [2, 3], [1, 0], [2, 2]])
    multi = [torch.tensor([[1, 2, 0], [0, 0, 0], [5, 0, 0], [3, 4, 5]])]
    num, history = torch.randn(4, 2), torch.tensor([[1, 2, 0], [9, 0, 0], [0, 0, 0], [3, 4, 5]])
    got = tower(ids, keep, cat, multi, num, history, torch.tensor([2, 0, 0, 4]))
    # The plain form: every part concatenated, then the whole MLP.
    bag = F.embedding_bag(multi[0], tower.multi[0].weight, mode="sum", padding_idx=0)
    total = F.embedding_bag(history, tower.recent.weight, mode="sum", padding_idx=0)
    total = total - tower.recent(torch.tensor([2, 0, 0, 4])) * torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    mean = total / torch.tensor([[1.0], [1.0], [1.0], [2.0]])
    parts = [tower.ids(ids) * keep[:, None], tower.categorical[0](cat[:, 0]), tower.categorical[1](cat[:, 1]),
             bag / torch.tensor([[2.0], [1.0], [1.0], [3.0]]), num, mean]
    want = tower.mlp(torch.cat(parts, dim=1))
    weights = list(tower.parameters())
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got.square().sum(), weights)
    for g, w in zip(grads, torch.autograd.grad(want.square().sum(), weights)):
        torch.testing.assert_close(g, w)
    padding = grads[[w is tower.categorical[0].weight for w in weights].index(True)]
    assert not padding[0].any() and padding[1:].any()


def test_save_load_keeps_towers_and_encoders(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, TwoTower) and loaded.item_encoder == fitted.item_encoder
    np.testing.assert_array_equal(loaded.item_factors, fitted.item_factors)
    features = pd.DataFrame({"age": [50.0], "favorite_genre": ["drama"]})
    np.testing.assert_allclose(loaded.embed_new_users(features, [["m00001"]]), fitted.embed_new_users(features, [["m00001"]]),
                               rtol=1e-6)


def test_runs_on_every_device(planted, device):
    _syn, full, _ = planted
    model = TwoTower(**{**SMALL, "epochs": 1, "device": device}).fit(full)
    assert np.isfinite(model.item_factors).all() and np.isfinite(model.user_factors).all()


runner = CliRunner()


def test_cli_trains_with_feature_files_and_cold_split(tmp_path, sample_ratings):
    sample = sample_ratings.parent
    common = ["train", "--data", str(sample_ratings), "--k", "20", "--quiet", "--epochs", "2", "--factors", "8",
              "--device", "cpu"]
    r = runner.invoke(app, [*common, "--format", "json", "-p", "hidden=16", "--model", "two-tower", "--user-features", str(sample / "users.csv"),
                            "--item-features", str(sample / "items.csv"), "--item-features-spec", "title=skip",
                            "--split", "cold-items", "--output", str(tmp_path / "tt")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["recall@20"] > 0
    r = runner.invoke(app, [*common, "--model", "mf", "--split", "cold-items",
                            "--output", str(tmp_path / "mf")])
    assert r.exit_code == 0, r.output
    assert "cannot score" in r.stdout


def test_cli_evaluate_cold_items(tmp_path, sample_ratings):
    """Regression (merge review): evaluate ranks a cold-item test set as train --split cold-items does."""
    r = runner.invoke(app, ["split", "--data", str(sample_ratings), "--strategy", "cold-items",
                            "--out-dir", str(tmp_path / "split"), "--quiet"])
    assert r.exit_code == 0, r.output
    # The same seed and share: the model's catalogue holds the held-out items, untrained.
    r = runner.invoke(app, ["train", "--data", str(sample_ratings), "--model", "popular",
                            "--split", "cold-items", "--no-index", "--quiet", "--output", str(tmp_path / "pop")])
    assert r.exit_code == 0, r.output
    evaluate = ["evaluate", "--model", str(tmp_path / "pop"), "--data", str(tmp_path / "split" / "test.csv"), "--cold-items"]
    r = runner.invoke(app, evaluate)
    assert r.exit_code == 0, r.output
    assert "cold-item metrics: none; popular: cannot score" in r.stdout
    r = runner.invoke(app, [*evaluate, "--retrieval", "annoy"])
    assert r.exit_code == 2 and "drop --retrieval" in r.output


def test_cli_reports_bad_feature_rows(tmp_path, sample_ratings):
    bad = tmp_path / "items.csv"
    bad.write_text("item_id,year\nm00001,1999\nm00002,nineteen\n")
    r = runner.invoke(app, ["train", "--data", str(sample_ratings), "--model", "two-tower", "--item-features", str(bad),
                            "--item-features-spec", "year=numeric", "--quiet"])
    assert r.exit_code == 2
    assert f"{bad}:3: column 'year': expected a number, got 'nineteen'" in r.output
    r = runner.invoke(app, ["train", "--data", str(sample_ratings), "--model", "als", "--item-features", str(bad), "--quiet"])
    assert r.exit_code == 2 and "does not use" in r.output


def test_early_stopping_restores_the_towers_with_the_factors(planted):
    from recsys.evaluation import Validation

    syn, full, _ = planted
    train, val = split(full, "user", seed=3)
    model = TwoTower(**{**SMALL, "epochs": 4}).fit(train, validation=Validation(val, "recall@10"))
    assert model.best_epoch >= 1
    # Cold items have no id embedding: the item tower on their features alone must give
    # exactly the exported factors, whichever epoch was restored.
    cold = full.items.index(syn.cold_items)
    np.testing.assert_allclose(model.embed_new_items(full.item_features.iloc[cold]), model.item_factors[cold],
                               rtol=1e-5, atol=1e-6)


def test_fold_in_hook_matches_embed_new_users(fitted):
    matrix = fitted.seen[:3]
    histories = [list(fitted.items.ids[matrix.indices[matrix.indptr[r]:matrix.indptr[r + 1]]]) for r in range(3)]
    features = pd.DataFrame({"favorite_genre": ["drama", None, "comedy"]})
    vectors, bias = fitted._fold_in(matrix, "count", user_features=features)
    assert bias is None
    np.testing.assert_allclose(vectors, fitted.embed_new_users(features, histories), rtol=1e-6)


def test_diagnostics_keep_the_cold_items_the_item_tower_embeds(planted, fitted):
    """Regression (merge review): maps and clusters left two-tower's cold items out as
    "never learned", though the item tower embeds them from their features."""
    from recsys.diagnostics import cluster_items, embedding_map

    syn, full, _ = planted
    cold = full.items.index(syn.cold_items)
    assert (fitted.item_popularity[cold] == 0).all() and fitted.scores_cold_items
    shown = embedding_map(fitted, max_points=10**6)
    assert shown.n_learned == len(full.items) and set(syn.cold_items) <= set(shown.points["id"])
    assert cluster_items(fitted, k=2).untrained == 0


def test_fold_in_reads_the_latest_items_of_a_long_history(fitted):
    """Regression (merge review): `recommend --history` gave the user tower a long history's
    first item columns, not its latest items as in training."""
    recent = fitted.recent
    items = list(fitted.items.ids[: 3 * recent])
    times = np.arange(len(items))  # the last items are the newest
    history = Interactions.from_arrays(["new"] * len(items), items, timestamps=times)
    folded = fitted.fold_in(history)
    newest_first = items[::-1]
    expected = fitted.embed_new_users(None, [newest_first])
    np.testing.assert_allclose(folded.vectors, fitted.user_vectors(expected, None), rtol=1e-5, atol=1e-6)


def test_recommend_cli_embeds_new_users_from_features(tmp_path, sample_ratings):
    sample = sample_ratings.parent
    model_dir = tmp_path / "tt"
    r = runner.invoke(app, ["train", "--data", str(sample_ratings), "--model", "two-tower", "--epochs", "2",
                            "--factors", "8", "--device", "cpu", "--split", "none", "--no-index", "--quiet",
                            "--user-features", str(sample / "users.csv"), "--item-features", str(sample / "items.csv"),
                            "--output", str(model_dir)])
    assert r.exit_code == 0, r.output
    new = tmp_path / "new_users.csv"
    new.write_text("user_id,age,country,favorite_genre\nnewbie,25,de,drama\nhistoric,40,fr,comedy\n")
    history = tmp_path / "history.csv"
    history.write_text("user,item\nhistoric,m00001\nhistoric,m00002\n")
    out = tmp_path / "recs.csv"
    r = runner.invoke(app, ["recommend", "--model", str(model_dir), "--user-features", str(new), "--history", str(history),
                            "--users", "newbie,historic,stranger", "--k", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = pd.read_csv(out)
    fallback = recs.groupby("user")["fallback"].all()
    assert not fallback["newbie"] and not fallback["historic"] and fallback["stranger"]
    assert not {"m00001", "m00002"} & set(recs.loc[recs.user == "historic", "item"])
    # Regression (merge review): without --history the note read "folded in from None".
    r = runner.invoke(app, ["recommend", "--model", str(model_dir), "--user-features", str(new), "--k", "5",
                            "--out", str(tmp_path / "features_only.csv")])
    assert r.exit_code == 0, r.output
    assert f"2 users folded in from {new}" in r.output and "None" not in r.output
    # Regression (merge review): a table with none of the model's user columns gave every
    # user the same featureless embedding, silently.
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("user_id,shoe_size\nnewbie,42\n")
    r = runner.invoke(app, ["recommend", "--model", str(model_dir), "--user-features", str(foreign),
                            "--out", str(tmp_path / "foreign_recs.csv")])
    assert r.exit_code == 2 and "no column the model was trained with" in r.output
    assert not (tmp_path / "foreign_recs.csv").exists()


def test_new_user_features_refused_by_a_model_trained_without_them():
    from recsys.data.features import FeatureEncoder

    model = TwoTower(**SMALL)
    model.user_encoder = FeatureEncoder()
    with pytest.raises(ConfigError, match="trained without user features"):
        model.check_user_features(["age"])
