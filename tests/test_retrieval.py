"""Retrieval: Annoy against exact, bias folding, seen-item widening, index files, batch output, fold-in."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cli_invoke import run

from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError, ModelFormatError
from recsys.evaluation.approximate import overlap_at
from recsys.models import ALS, IALS, MatrixFactorization, Popular, load_model
from recsys.retrieval import AnnoyIndex, build_index, recommend_to_file
from recsys.retrieval import batch as batch_module

N_USERS, N_ITEMS, D = 80, 150, 6


def biased_model(seed: int = 0) -> MatrixFactorization:
    """An explicit MF model (biases folded into two extra dimensions) with random state."""
    rng = np.random.default_rng(seed)
    model = MatrixFactorization(loss="mse", factors=D)
    model.users = Vocabulary(np.arange(100, 100 + N_USERS))
    model.items = Vocabulary([f"i{j:03d}" for j in range(N_ITEMS)])
    model.user_factors = rng.normal(size=(N_USERS, D)).astype(np.float32)
    model.item_factors = rng.normal(size=(N_ITEMS, D)).astype(np.float32)
    model.user_bias = rng.normal(size=N_USERS).astype(np.float32)
    model.item_bias = (3 * rng.normal(size=N_ITEMS)).astype(np.float32)  # large: folding matters
    model.global_bias = 3.5
    seen = sp.random(N_USERS, N_ITEMS, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    seen.data[:] = 1.0
    model.seen = seen
    model.item_popularity = np.asarray(seen.sum(0)).ravel().astype(np.int64)
    model.training_fingerprint = "synthetic"
    model.history = []
    return model


@pytest.fixture(scope="module")
def model() -> MatrixFactorization:
    return biased_model()


@pytest.fixture(scope="module")
def exhaustive(model) -> AnnoyIndex:
    # search_k above trees x items visits every leaf: Annoy then sees every item.
    return AnnoyIndex.build(model, trees=4, search_k=10**6, n_jobs=2)


def test_annoy_equals_exact_when_search_is_exhaustive(model, exhaustive):
    users = np.arange(N_USERS)
    found, scores = model.recommend_indices(users, 10, index=exhaustive)
    truth, truth_scores = model.recommend_indices(users, 10)
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(scores, truth_scores, rtol=1e-5, atol=1e-5)


def test_folded_biases_rank_by_the_models_own_score(model, exhaustive):
    scores = (
        model.user_factors @ model.item_factors.T
        + model.user_bias[:, None] + model.item_bias[None, :] + model.global_bias
    )
    scores[model.seen.toarray() > 0] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    found, got = model.recommend_indices(np.arange(N_USERS), 5, index=exhaustive)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(got, np.take_along_axis(scores, expected, 1), rtol=1e-5)
    user_ids = np.repeat(model.users.ids, 5)
    np.testing.assert_allclose(model.predict(user_ids, model.item_ids(found).ravel()), got.ravel(), rtol=1e-5)


def test_exactly_k_survive_when_the_best_items_are_seen(model):
    # Worst case for the widening: each user has seen their 120 best items, and the
    # index is as weak as it gets (1 tree, search_k 1).
    index = AnnoyIndex.build(model, trees=1, search_k=1, n_jobs=1)
    vectors = model.user_vectors()[:10]
    best = np.argsort(-(vectors @ model.item_vectors().T), axis=1)[:, :120]
    exclude = sp.csr_matrix((np.ones(best.size), np.sort(best, 1).ravel(), np.arange(0, best.size + 1, 120)),
                            shape=(10, N_ITEMS))
    found, scores = index.search(vectors, 20, exclude)
    for row in range(10):
        assert len(set(found[row])) == 20 and (found[row] >= 0).all()
        assert not set(found[row]) & set(best[row])
        assert np.all(np.diff(scores[row]) <= 1e-6)  # best first
    # Fewer unseen items than k: all of them, then padding.
    found, scores = index.search(vectors[:1], 40, exclude[:1])
    assert (found[0, :30] >= 0).all() and (found[0, 30:] == -1).all() and np.isinf(scores[0, 30:]).all()


def test_index_round_trip_and_mismatch_is_refused(model, tmp_path):
    model.save(tmp_path / "m")
    with pytest.raises(ModelFormatError, match="no Annoy index"):
        AnnoyIndex.load(model, tmp_path / "m")
    built = build_index(model, tmp_path / "m", trees=5, search_k=500)
    loaded_model = load_model(tmp_path / "m")
    loaded = AnnoyIndex.load(loaded_model, tmp_path / "m", n_jobs=1)
    assert loaded.search_k == 500 and loaded.meta["fingerprint"] == built.meta["fingerprint"]
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(
        loaded_model.recommend_indices(users, 5, index=loaded)[0], model.recommend_indices(users, 5, index=built)[0]
    )
    # Another model's factors next to this index.
    other = biased_model(seed=1)
    other.save(tmp_path / "other")
    shutil.copytree(tmp_path / "m" / "index", tmp_path / "other" / "index")
    with pytest.raises(ModelFormatError, match="other item factors"):
        AnnoyIndex.load(load_model(tmp_path / "other"), tmp_path / "other")
    # A truncated forest.
    ann = tmp_path / "m" / "index" / "items.ann"
    ann.write_bytes(ann.read_bytes()[:-100])
    with pytest.raises(ModelFormatError, match="size differs"):
        AnnoyIndex.load(loaded_model, tmp_path / "m")


def test_similar_items_through_the_index_match_exact(model, exhaustive):
    queries = ["i000", "i017", "nope"]
    ids, sims = model.similar_items(queries, 5, index=exhaustive)
    exact_ids, exact_sims = model.similar_items(queries, 5)
    np.testing.assert_array_equal(ids[:2], exact_ids[:2])
    np.testing.assert_allclose(sims[:2], exact_sims[:2], rtol=1e-5)
    assert "i000" not in ids[0] and np.isnan(sims[2]).all()


def test_overlap_counts_the_exact_items_found():
    approx = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[3, 2, 9], [4, -1, -1]])
    np.testing.assert_allclose(overlap_at(approx, exact, 3), [2 / 3, 1.0])
    np.testing.assert_allclose(overlap_at(approx, exact, 1), [0.0, 1.0])


# -- batch output -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_recommend_file_holds_each_users_top_k_in_their_ids(model, tmp_path, suffix):
    out = tmp_path / f"recs{suffix}"
    asked = [105, 101, "ghost", 105]
    result = recommend_to_file(model, out, asked, k=4, batch_users=2)
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(frame.columns) == ["user", "item", "rank", "score", "fallback"]
    assert (result.users, result.rows, result.fallback_users, result.known_users) == (3, 12, 1, 2)
    assert [str(u) for u in frame["user"].unique()] == ["105", "101", "ghost"]
    for user in (105, 101):
        rows = frame[frame["user"].astype(str) == str(user)]
        ids, scores = model.recommend(user, k=4)
        assert list(rows["item"]) == list(ids) and list(rows["rank"]) == [1, 2, 3, 4]
        np.testing.assert_allclose(rows["score"], scores, rtol=1e-5)
        assert not rows["fallback"].any()
    ghost = frame[frame["user"].astype(str) == "ghost"]
    assert ghost["fallback"].all() and ghost["score"].isna().all()
    assert list(ghost["item"]) == list(model.item_ids(model.popular_items(4)))


def test_recommend_all_users_is_the_same_in_any_chunking(model, tmp_path):
    recommend_to_file(model, tmp_path / "a.parquet", "all", k=3, batch_users=7)
    recommend_to_file(model, tmp_path / "b.parquet", "all", k=3, batch_users=1000)
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3 * N_USERS and a["user"].dtype == np.int64
    seen = {(u, i) for u, i in zip(*model.seen.nonzero())}
    pairs = zip(model.users.index(a["user"]), model.items.index(a["item"]))
    assert not seen & set(pairs)


def test_a_failed_run_leaves_the_previous_output_and_no_temporary_file(model, tmp_path, monkeypatch):
    out = tmp_path / "recs.csv"
    previous = "user,item,rank,score,fallback\n1,2,1,0.5,false\n"  # an earlier run's table
    out.write_text(previous)
    real = batch_module.answer  # the batch job's name for recsys.models.queries.answer
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed mid-run")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_module, "answer", failing)
    with pytest.raises(RuntimeError):
        recommend_to_file(model, out, "all", k=3, batch_users=10)
    assert out.read_text() == previous
    calls.clear()
    with pytest.raises(RuntimeError):
        recommend_to_file(model, tmp_path / "new.parquet", "all", k=3, batch_users=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.csv"]


# -- fold-in -----------------------------------------------------------------------------------
def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("make", [lambda: ALS(factors=8, epochs=15), lambda: IALS(factors=8, epochs=16)],
                         ids=["als", "ials"])
def test_least_squares_fold_in_recovers_the_trained_user_vectors(make, checkerboard):
    model = make().fit(checkerboard)
    folded = model.fold_in(checkerboard)
    cos = _cosine(folded.vectors, model.user_vectors())
    assert np.median(cos) > 0.995 and cos.min() > 0.95
    found, _ = model.recommend_indices(np.arange(checkerboard.n_users), 5, user_vectors=folded.vectors)
    truth, _ = model.recommend_indices(np.arange(checkerboard.n_users), 5)
    assert np.mean(overlap_at(found, truth, 5)) > 0.9


def test_explicit_mf_fold_in_solves_its_ridge_regression(model):
    ratings = Interactions.from_arrays(["n", "n", "n"], ["i001", "i002", "i003"], [5.0, 1.0, 4.0])
    folded = model.fold_in(ratings)
    q = model.item_factors[[1, 2, 3]]
    p, b = folded.vectors[0, :D], folded.vectors[0, D + 1] - model.global_bias
    err = q @ p + b + model.global_bias + model.item_bias[[1, 2, 3]] - np.array([5.0, 1.0, 4.0])
    # Gradient of mean(err^2) + reg (|p|^2 + b^2) vanishes at the solution.
    grad_p = 2 * q.T @ err / 3 + 2 * model.reg * p
    grad_b = 2 * err.mean() + 2 * model.reg * b
    np.testing.assert_allclose(np.r_[grad_p, grad_b], 0.0, atol=1e-4)


@pytest.mark.parametrize(
    "make",
    [lambda: ALS(factors=8, epochs=10), lambda: IALS(factors=8, epochs=10),
     lambda: MatrixFactorization(factors=8, epochs=20, loss="bpr", negatives=16, batch_size=256),
     lambda: MatrixFactorization(factors=8, epochs=20, loss="softmax", negatives=16, batch_size=256)],
    ids=["als", "ials", "mf-bpr", "mf-softmax"],
)
def test_a_new_user_with_a_short_history_gets_sensible_items(make, checkerboard):
    model = make().fit(checkerboard)
    even = [int(i) for i in checkerboard.items.ids[[0, 2, 4, 6]]]
    history = Interactions.from_arrays(["newbie"] * 5, [*even, "unknown-item"])
    ids, scores = model.recommend("newbie", k=5, history=history)
    index = model.items.index(ids)
    assert np.isfinite(scores).all() and (index % 2 == 0).all()
    assert not set(index) & {0, 2, 4, 6}
    assert model.fold_in(history).dropped_entries == 1


def test_history_with_no_known_item_falls_back_and_popular_folds_trivially(checkerboard):
    model = Popular().fit(checkerboard)
    history = Interactions.from_arrays(["a", "b"], [0, "zzz"])
    ids, scores = model.recommend(["a", "b"], k=3, history=history)
    assert np.isfinite(scores[0]).all() and np.isnan(scores[1]).all()
    assert 0 not in model.items.index(ids[0])


# -- command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, sample_ratings):
    out = tmp_path_factory.mktemp("retrieval")
    run("split", "--data", str(sample_ratings), "--out-dir", str(out / "split"), "--quiet")
    run("train", "--data", str(out / "split" / "train.csv"), "--split", "none", "--factors", "16",
        "--epochs", "5", "--trees", "10", "--output", str(out / "model"), "--quiet")
    return out


def test_cli_train_index_recommend_similar_evaluate(trained_dir, tmp_path):
    model_dir = trained_dir / "model"
    meta = json.loads((model_dir / "index" / "index.json").read_text())
    assert meta["trees"] == 10 and meta["metric"] in ("angular", "dot") and set(meta["metric_choice"]) == {"angular", "dot"}
    r = run("index", "--model", str(model_dir), "--trees", "20", "--format", "json", "--quiet")
    assert json.loads(r.stdout)["trees"] == 20

    r = run("recommend", "--model", str(model_dir), "--k", "5", "--out", str(tmp_path / "all.parquet"),
            "--retrieval", "annoy", "--format", "json", "--quiet")
    summary = json.loads(r.stdout)
    frame = pd.read_parquet(tmp_path / "all.parquet")
    assert summary["rows"] == len(frame) == 5 * summary["users"] and summary["fallback_users"] == 0

    train = pd.read_csv(trained_dir / "split" / "train.csv")
    history = train[train["user"] == train["user"].iloc[0]].assign(user="newcomer")
    history.to_csv(tmp_path / "history.csv", index=False)
    r = run("recommend", "--model", str(model_dir), "--users", "newcomer,nobody", "--history",
            str(tmp_path / "history.csv"), "--out", str(tmp_path / "new.csv"), "--format", "json", "--quiet")
    summary = json.loads(r.stdout)
    assert (summary["folded_users"], summary["fallback_users"]) == (1, 1)
    new = pd.read_csv(tmp_path / "new.csv")
    newcomer = new[new["user"] == "newcomer"]
    assert len(newcomer) == 10 and not newcomer["fallback"].any()
    assert not set(newcomer["item"]) & set(history["item"])

    item = str(frame["item"].iloc[0])
    r = run("similar", "--model", str(model_dir), "--item", item, "--k", "3", "--format", "json", "--quiet")
    payload = json.loads(r.stdout)
    assert payload["retrieval"] == "annoy" and len(payload["similar"]) == 3
    # Every id as the model's own, queried and found alike.
    assert len({type(row[c]) for row in payload["similar"] for c in ("item", "similar")}) == 1
    r = run("similar", "--model", str(model_dir), "--item", "no-such-item,nor-this", code=2)
    assert "none of the items is in the model: no-such-item, nor-this" in r.output

    r = run("evaluate", "--model", str(model_dir), "--data", str(trained_dir / "split" / "test.csv"),
            "--k", "10", "--retrieval", "annoy", "--format", "json", "--quiet")
    assert 0.8 <= json.loads(r.stdout)["overlap@10"] <= 1.0


def test_cli_annoy_without_an_index_is_a_clear_error(tmp_path, sample_ratings):
    run("train", "--data", str(sample_ratings), "--model", "popular", "--no-index", "--split", "none",
        "--output", str(tmp_path / "pop"), "--quiet")
    assert not (tmp_path / "pop" / "index").exists()
    r = run("recommend", "--model", str(tmp_path / "pop"), "--out", str(tmp_path / "r.csv"),
            "--retrieval", "annoy", code=2)
    assert "no Annoy index" in r.output and not (tmp_path / "r.csv").exists()
    run("recommend", "--model", str(tmp_path / "pop"), "--out", str(tmp_path / "r.txt"), code=2)


def test_users_option_reads_ids_from_a_list_a_file_or_a_csv_column(tmp_path):
    from recsys.retrieval.batch import parse_users

    (tmp_path / "ids.txt").write_text("user\n7\n\n12\n")
    (tmp_path / "log.csv").write_text("item,user\na,3\nb,4\n")
    assert list(parse_users(str(tmp_path / "ids.txt"))) == ["7", "12"]
    assert list(parse_users(str(tmp_path / "log.csv"))) == ["3", "4"]
    assert list(parse_users("1, 2,x")) == ["1", "2", "x"]
    assert parse_users("all") == "all" and parse_users(None) is None


def test_include_seen_and_known_users_with_a_history(model, tmp_path):
    result = recommend_to_file(model, tmp_path / "r.parquet", [100, 101], k=5, include_seen=True)
    frame = pd.read_parquet(tmp_path / "r.parquet")
    ids, _ = model.recommend([100, 101], k=5, exclude_seen=False)
    assert result.rows == 10 and list(frame["item"]) == list(ids.ravel())
    # A known user with a new history: folded in from it, and neither their training
    # items nor the history's are recommended.
    history = Interactions.from_arrays([100, 100], ["i000", "i001"], [4.0, 5.0])
    ids, scores = model.recommend(100, k=N_ITEMS, history=history)
    recommended = set(model.items.index(ids[np.isfinite(scores)]))
    trained = set(model.seen[0].indices)
    assert not recommended & (trained | {0, 1})
    assert len(recommended) == N_ITEMS - len(trained | {0, 1})


def test_augment_makes_cosine_order_the_dot_order():
    # Regression (issue 6): Annoy's own "dot" metric lost 20% of the exact top-20 of a
    # 256-factor iALS model; the item forest is now "angular" over these augmented rows.
    from recsys.retrieval.annoy_index import augment

    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 8)) * rng.lognormal(size=(50, 1))  # very unequal norms
    user = rng.normal(size=8)
    aug = augment(items)
    norms = np.linalg.norm(aug, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)
    query = np.append(user, 0.0)
    cosine = aug @ query / (norms * np.linalg.norm(query))
    np.testing.assert_array_equal(np.argsort(-cosine)[:10], np.argsort(-(items @ user))[:10])


def test_dot_metric_index_still_builds_saves_and_loads(model, tmp_path):
    # Indexes written before issue 6 round two used Annoy's "dot" metric without the extra
    # column; index.json says so, and they load and answer as before.
    index = AnnoyIndex.build(model, trees=4, search_k=10**6, n_jobs=1, metric="dot")
    assert index.meta["metric"] == "dot" and not index.meta["augmented"]
    index.save(tmp_path / "index")
    loaded = AnnoyIndex.load(model, tmp_path)
    users = np.arange(N_USERS)
    found, _ = model.recommend_indices(users, 10, index=loaded)
    np.testing.assert_array_equal(found, model.recommend_indices(users, 10)[0])
    with pytest.raises(ConfigError):
        AnnoyIndex.build(model, metric="euclidean")


def test_choose_metric_keeps_the_forest_that_finds_the_exact_top_k():
    from recsys.retrieval.annoy_index import choose_metric

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 4)).astype(np.float32)
    queries = rng.normal(size=(10, 4)).astype(np.float32)

    class Forest:  # stands in for an Annoy forest: exact, or always the first items
        def __init__(self, exact: bool) -> None:
            self.exact = exact

        def get_nns_by_vector(self, q, k, search_k):
            return list(np.argsort(-(vectors @ q[:4]))[:k]) if self.exact else list(range(k))

    best, shares = choose_metric({"angular": Forest(False), "dot": Forest(True)}, vectors, queries, 2, 0, k=5)
    assert best == "dot" and shares["dot"] == 1.0 > shares["angular"]
    best, _ = choose_metric({"angular": Forest(True), "dot": Forest(True)}, vectors, queries, 2, 0, k=5)
    assert best == "angular"  # ties keep angular


def test_cli_retrieval_flags_do_what_their_help_says(trained_dir, tmp_path):
    """--include-seen, --batch-users, --search-k and --jobs of recommend and index."""
    model_dir = trained_dir / "model"
    train = pd.read_csv(trained_dir / "split" / "train.csv")
    seen = set(zip(train["user"], train["item"], strict=True))

    def recs(name: str, *flags: str) -> pd.DataFrame:
        run("recommend", "--model", str(model_dir), "--k", "10", "--out", str(tmp_path / name), "--quiet", *flags)
        return pd.read_csv(tmp_path / name)

    default = recs("default.csv")
    assert not any(pair in seen for pair in zip(default["user"], default["item"], strict=True))
    # Seen items allowed: a model fitted on these very items ranks many of them first.
    with_seen = recs("seen.csv", "--include-seen")
    assert sum(pair in seen for pair in zip(with_seen["user"], with_seen["item"], strict=True)) > len(with_seen) // 4
    # Chunking changes how the file is written, not what is in it.
    pd.testing.assert_frame_equal(recs("chunked.csv", "--batch-users", "7"), default)

    r = run("index", "--model", str(model_dir), "--trees", "5", "--search-k", "1234", "--jobs", "1",
            "--format", "json", "--quiet")
    assert json.loads(r.stdout)["search_k"] == 1234
    annoy = recs("annoy.csv", "--retrieval", "annoy", "--jobs", "1", "--search-k", "-1")
    assert len(annoy) == len(default)
    assert not any(pair in seen for pair in zip(annoy["user"], annoy["item"], strict=True))


def test_similar_gives_integer_ids_as_integers(tmp_path):
    """The item on the command line is text; in the JSON it is the model's own integer id,
    like the similar items beside it."""
    from recsys.data.io import write_interactions
    from recsys.data.synthetic import checkerboard

    write_interactions(checkerboard(n_users=40, n_items=20, seed=0), tmp_path / "data.csv")
    run("train", "--data", tmp_path / "data.csv", "--model", "popular", "--split", "none", "--no-index",
        "-o", tmp_path / "m", "--quiet", "--no-track")
    payload = json.loads(run("similar", "--model", tmp_path / "m", "--item", "0", "--k", "2", "--format",
                             "json", "--quiet").stdout)
    assert payload["similar"] and {type(row[c]) for row in payload["similar"] for c in ("item", "similar")} == {int}


def test_recommend_to_standard_output_and_titles_for_people(tmp_path, sample_ratings):
    """`--out -` writes the CSV to stdout; `--item-features` adds the item table's titles to
    recommend and similar."""
    items = sample_ratings.parent / "items.csv"
    run("train", "--data", sample_ratings, "--model", "als", "-p", "factors=4", "-p", "epochs=2", "--split", "none",
        "--no-index", "-o", tmp_path / "m", "--quiet", "--no-track")
    users = pd.read_csv(sample_ratings)["user_id"].unique()[:2]
    r = run("recommend", "--model", tmp_path / "m", "--users", ",".join(map(str, users)), "--k", "3", "--out", "-",
            "--item-features", items, "--quiet", "--no-track")
    frame = pd.read_csv(io.StringIO(r.stdout))
    titles = pd.read_csv(items).set_index("item_id")["title"]
    assert list(frame.columns) == ["user", "item", "rank", "score", "fallback", "title"] and len(frame) == 6
    assert frame["title"].tolist() == titles.loc[frame["item"]].tolist()
    assert not any(p.name.startswith("-") for p in tmp_path.iterdir())
    run("recommend", "--model", tmp_path / "m", "--out", "-", "--format", "json", "--no-track", code=2)
    similar = json.loads(run("similar", "--model", tmp_path / "m", "--item", frame["item"][0], "--k", "2",
                             "--item-features", items, "--format", "json", "--quiet").stdout)["similar"]
    assert [row["similar_title"] for row in similar] == titles.loc[[row["similar"] for row in similar]].tolist()
    assert {row["title"] for row in similar} == {titles[frame["item"][0]]}


def test_titles_with_commas_are_quoted(tmp_path, sample_ratings):
    """Regression (review): ids that need no quotes set pyarrow to quote nothing, and a title
    with a comma ("Usual Suspects, The (1995)") crashed the CSV writer."""
    items = pd.read_csv(sample_ratings.parent / "items.csv")
    items["title"] = items["title"] + ", The (1995)"
    items.to_csv(tmp_path / "items.csv", index=False)
    run("train", "--data", sample_ratings, "--model", "popular", "--split", "none", "--no-index",
        "-o", tmp_path / "m", "--quiet", "--no-track")
    r = run("recommend", "--model", tmp_path / "m", "--users", "413", "--k", "2", "--out", "-",
            "--item-features", tmp_path / "items.csv", "--quiet", "--no-track")
    assert pd.read_csv(io.StringIO(r.stdout))["title"].str.endswith(", The (1995)").all()
