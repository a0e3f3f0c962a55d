"""The paths rewritten for 100M-row logs (issue 14, point 3) give what the plain ones gave:
integer Parquet ids hashed as integers, the one-sort CSR of plain events, the two-sort
per-user ranking of splits, evaluation streamed block by block and on a sample of users."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from recsys.data import read_interactions
from recsys.data.interactions import Interactions, build_csr
from recsys.data.splits import _rank_within_users
from recsys.errors import InputError


def same(a: Interactions, b: Interactions) -> None:
    assert a.users == b.users and a.items == b.items
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a.matrix, name), getattr(b.matrix, name))


@pytest.mark.parametrize("kind", [pa.int32(), pa.int64(), pa.uint32(), pa.int16()])
def test_integer_parquet_ids_read_as_the_same_text_ids_would_be(tmp_path, rng, kind):
    n = 5000
    users = rng.choice(30000, 300, replace=False)[rng.integers(0, 300, n)]
    items = rng.choice(30000, 500, replace=False)[rng.integers(0, 500, n)]
    path = tmp_path / "log.parquet"
    with pq.ParquetWriter(path, pa.schema([("user", kind), ("item", kind)])) as writer:
        for part in np.array_split(np.arange(n), 4):  # several row groups, several chunks
            writer.write_table(pa.table({"user": pa.array(users[part], kind), "item": pa.array(items[part], kind)}))
    text = tmp_path / "log.csv"
    text.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users, items)))
    from_ints, from_text = read_interactions(path), read_interactions(text)
    assert from_ints.users.is_integer and from_ints.users.ids.dtype == np.int64
    same(from_ints, from_text)


def test_null_integer_id_is_named_by_row_and_skippable(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user": pa.array([1, None, 3], pa.int32()), "item": pa.array([7, 8, 9], pa.int32())}), path)
    with pytest.raises(InputError, match="row 2: empty user id"):
        read_interactions(path)
    data = read_interactions(path, skip_bad_rows=True)
    assert data.users.ids.tolist() == [1, 3] and data.items.ids.tolist() == [7, 9]


def test_uint64_ids_beyond_int64_stay_text(tmp_path):
    path = tmp_path / "log.parquet"
    big = 2**63 + 5
    pq.write_table(pa.table({"user": pa.array([big, 1], pa.uint64()), "item": pa.array([1, 2], pa.uint64())}), path)
    data = read_interactions(path)
    assert not data.users.is_integer and set(data.users.ids) == {str(big), "1"}


@pytest.mark.parametrize("values", ["ones", "counts"])
@pytest.mark.parametrize("timestamps", [False, True])
def test_count_csr_sums_repeated_pairs_like_scipy(rng, values, timestamps):
    n, shape = 20000, (50, 80)
    rows, cols = rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)
    vals = np.ones(n, np.float32) if values == "ones" else rng.integers(1, 5, n).astype(np.float32)
    ts = rng.integers(0, 1000, n) if timestamps else None
    matrix, merged_ts = build_csr(rows, cols, vals, ts, shape, "count")
    expected = sp.coo_matrix((vals.astype(np.float64), (rows, cols)), shape=shape).tocsr()
    expected.sum_duplicates()
    np.testing.assert_array_equal(matrix.indptr, expected.indptr)
    np.testing.assert_array_equal(matrix.indices, expected.indices)
    np.testing.assert_array_equal(matrix.data, expected.data.astype(np.float32))
    assert matrix.has_canonical_format
    if timestamps:
        key = rows * shape[1] + cols
        best = np.full(shape[0] * shape[1], -1)
        np.maximum.at(best, key, ts)
        got = matrix.tocoo()
        np.testing.assert_array_equal(merged_ts, best[got.row * shape[1] + got.col])


def test_rating_csr_keeps_the_last_row_of_a_repeated_pair():
    matrix, _ = build_csr(np.array([0, 0, 1, 0]), np.array([1, 1, 0, 1]), np.array([5.0, 3.0, 2.0, 4.0]), None,
                          (2, 2), "rating")
    assert matrix.toarray().tolist() == [[0, 4], [2, 0]]


@pytest.mark.parametrize("with_primary", [False, True])
def test_rank_within_users_is_the_three_key_lexsort(rng, with_primary):
    data = Interactions.from_arrays(rng.integers(0, 40, 4000), rng.integers(0, 300, 4000))
    primary = rng.integers(0, 5, data.nnz) if with_primary else None
    got = _rank_within_users(data, primary, np.random.default_rng(7))
    tie = np.random.default_rng(7).random(data.nnz)
    order = np.lexsort((tie, np.zeros(data.nnz) if primary is None else primary, data.row_indices))
    expected = np.empty(data.nnz, dtype=np.int64)
    expected[order] = np.arange(data.nnz) - data.matrix.indptr[:-1][data.row_indices[order]]
    np.testing.assert_array_equal(got, expected)


# -- evaluation: block by block, and on a sample of users --------------------------------------
@pytest.fixture(scope="module")
def fitted():
    from recsys.data.splits import split
    from recsys.models import create_model

    rng = np.random.default_rng(5)
    n = 6000
    data = Interactions.from_arrays(rng.integers(0, 300, n), (rng.random(n) ** 2 * 400).astype(int))
    train, test = split(data, "user", seed=0)
    return create_model("als", factors=8, epochs=3, device="cpu").fit(train), test


def test_beyond_accuracy_block_by_block_equals_all_at_once(rng):
    from recsys.evaluation.beyond import BeyondAccuracy, beyond_accuracy

    popularity = rng.integers(0, 50, 120)
    factors = rng.standard_normal((120, 6))
    top = rng.integers(-1, 120, (500, 20))
    whole = beyond_accuracy(top, [5, 20], popularity, factors)
    blocks = BeyondAccuracy([5, 20], popularity, factors)
    for part in np.array_split(top, 7):
        blocks.add(part)
    assert blocks.result() == pytest.approx(whole, rel=1e-12)


def test_small_evaluation_batches_change_nothing(fitted):
    from recsys.evaluation import evaluate

    model, test = fitted
    one = evaluate(model, test)
    many = evaluate(model, test, batch_users=7)
    assert many.metrics == pytest.approx(one.metrics, rel=1e-12) and many.n_users == one.n_users
    assert one.sampled_from is None


def test_a_sample_of_users_is_seeded_and_scores_those_users_as_the_full_run_does(fitted):
    from recsys.evaluation import evaluate

    model, test = fitted
    full = evaluate(model, test, per_user=True)
    sample = evaluate(model, test, sample_users=50, seed=3, per_user=True)
    assert sample.n_users == 50 and sample.sampled_from == full.n_users
    assert evaluate(model, test, sample_users=50, seed=3).metrics == sample.metrics
    assert evaluate(model, test, sample_users=50, seed=4).metrics != sample.metrics
    rows = full.per_user.set_index("user").loc[sample.per_user["user"]]
    assert sample.metrics["recall@20"] == pytest.approx(rows["recall@20"].mean())
    everyone = evaluate(model, test, sample_users=10**6)  # a sample as large as the users: all of them
    assert everyone.sampled_from is None and everyone.metrics == pytest.approx(full.metrics)
    with pytest.raises(Exception, match="at least 1"):
        evaluate(model, test, sample_users=0)


def test_train_eval_users_is_reported_in_json_and_recorded(tmp_path, sample_ratings):
    import json

    from cli_invoke import run

    from recsys.jobs import TrainConfig, train
    from recsys.runs import NullRun

    out = run("train", "--data", sample_ratings, "--model", "popular", "--eval-users", "20", "--no-index",
              "--no-track", "--format", "json", "--quiet", "-o", tmp_path / "m")
    payload = json.loads(out.stdout)
    assert payload["evaluation"]["n_users"] == 20 and payload["evaluation"]["sampled_from"] > 20
    assert "a seeded sample of 20 of" in run("train", "--data", sample_ratings, "--model", "popular",
                                              "--eval-users", "20", "--no-index", "--no-track", "-o",
                                              tmp_path / "t").output

    class Recorder(NullRun):
        def __init__(self):
            self.metrics, self.tags, self.params = {}, {}, {}

        def log_metrics(self, metrics, step=None, prefix=""):
            self.metrics.update(metrics)

        def set_tags(self, tags):
            self.tags.update(tags)

        def log_params(self, params, prefix=""):
            self.params.update(params)

    recorder = Recorder()
    train(sample_ratings, TrainConfig(model="popular", eval_users=20), save=False, run=recorder)
    assert recorder.params["eval_users"] == 20 and recorder.metrics["evaluated_users"] == 20
    assert recorder.metrics["evaluation_sampled_from"] > 20 and "sample of 20" in recorder.tags["recsys.evaluation"]


def test_als_epochs_through_the_loop_are_implicits_own_fit(rng):
    """The sweeps after the first reuse one transpose instead of implicit's fit per epoch
    (which transposes every call): the factors are those of one fit with every iteration."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recsys.device import cpu_budget
    from recsys.models import create_model
    from recsys.models.als import confidence
    from recsys.seeding import derive_seed

    data = Interactions.from_arrays(rng.integers(0, 200, 5000), rng.integers(0, 150, 5000))
    model = create_model("als", factors=8, epochs=4, alpha=2.0, regularization=0.5, device="cpu").fit(data)
    reference = AlternatingLeastSquares(factors=8, regularization=0.5, alpha=1.0, iterations=4,
                                        num_threads=cpu_budget(), random_state=derive_seed(0))
    with threadpool_limits(1, "blas"):
        reference.fit(confidence(data.matrix, data.feedback, "auto", 2.0), show_progress=False)
    np.testing.assert_allclose(model.user_factors, reference.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_factors, reference.item_factors, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("order", ["same", "shuffled"])
def test_reindex_onto_a_subset_in_order_or_not_is_the_rebuilt_matrix(rng, order):
    from recsys.data.vocabulary import Vocabulary

    data = Interactions.from_arrays(rng.integers(0, 60, 3000), rng.integers(0, 90, 3000),
                                    rng.integers(1, 5, 3000), rng.integers(0, 99, 3000), feedback="count")
    users, items = data.users.ids[::2], data.items.ids[rng.random(data.n_items) < 0.7]
    if order == "shuffled":
        users, items = rng.permutation(users), rng.permutation(items)
    got, dropped = data.reindex(Vocabulary(users), Vocabulary(items))
    frame = data.to_frame()
    kept = frame[frame["user"].isin(users) & frame["item"].isin(items)]
    expected = Interactions.from_arrays(kept["user"], kept["item"], kept["weight"], kept["timestamp"],
                                        feedback="count", users=Vocabulary(users), items=Vocabulary(items))
    assert dropped == len(frame) - len(kept)
    same(got, expected)
    np.testing.assert_array_equal(got.timestamps, expected.timestamps)
    assert got.matrix.has_canonical_format
