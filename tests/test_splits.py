import numpy as np
import pytest

from recsys.data.interactions import Interactions
from recsys.data.splits import split
from recsys.errors import ConfigError


@pytest.fixture
def log(rng) -> Interactions:
    n = 3000
    users = rng.integers(0, 100, n)
    items = rng.integers(0, 200, n)
    ts = rng.integers(0, 10_000, n)
    return Interactions.from_arrays(users, items, rng.integers(1, 6, n), ts, feedback="rating")


def keys(data: Interactions) -> set:
    return set(zip(data.row_indices.tolist(), data.matrix.indices.tolist()))


@pytest.mark.parametrize("strategy", ["user", "random", "temporal", "last-n", "leave-one-out"])
def test_partition_without_leakage_and_same_vocabulary(log, strategy):
    train, test = split(log, strategy, seed=3)
    assert keys(train).isdisjoint(keys(test))
    assert keys(train) | keys(test) == keys(log)
    assert train.nnz + test.nnz == log.nnz
    assert train.users == log.users and test.items == log.items
    again = split(log, strategy, seed=3)
    assert keys(again[1]) == keys(test)


def test_user_holdout_keeps_each_user_in_train_and_holds_out_a_fifth(log):
    train, test = split(log, "user", test_fraction=0.2, seed=0)
    counts = log.user_counts()
    held = test.user_counts()
    assert np.all(train.user_counts()[counts > 0] >= 1)
    np.testing.assert_array_equal(held, np.minimum(np.floor(0.2 * counts + 0.5), np.maximum(counts - 1, 0)))


def test_random_split_size(log):
    _train, test = split(log, "random", test_fraction=0.25, seed=1)
    assert test.nnz == round(0.25 * log.nnz)


def test_temporal_split_puts_only_later_entries_in_test(log):
    train, test = split(log, "temporal", test_fraction=0.2)
    assert train.timestamps.max() <= test.timestamps.min()
    assert abs(test.nnz / log.nnz - 0.2) < 0.02


def test_last_n_holds_out_each_users_latest(log):
    train, test = split(log, "last-n", n=2, seed=0)
    for u in range(log.n_users):
        t_ts = test.timestamps[test.row_indices == u]
        r_ts = train.timestamps[train.row_indices == u]
        if len(t_ts):
            assert t_ts.min() >= r_ts.max()
        assert len(t_ts) == min(2, max(log.user_counts()[u] - 1, 0))


def test_leave_one_out_without_timestamps():
    data = Interactions.from_arrays(np.array([0, 0, 0, 1, 2, 2]), np.array([0, 1, 2, 0, 1, 2]))
    _train, test = split(data, "leave-one-out", seed=0)
    assert test.user_counts().tolist() == [1, 0, 1]


def test_bad_settings():
    data = Interactions.from_arrays(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ConfigError, match="needs timestamps"):
        split(data, "temporal")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        split(data, "user", test_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown split"):
        split(data, "weird")


def test_cold_item_split_holds_out_whole_items(checkerboard):
    from recsys.data.splits import cold_item_split

    train, test = cold_item_split(checkerboard, test_fraction=0.25, seed=0)
    held = np.flatnonzero(test.item_counts() > 0)
    assert len(held) == 10  # a quarter of the 40 items with interactions
    assert (train.item_counts()[held] == 0).all() and (checkerboard.item_counts()[held] == test.item_counts()[held]).all()
    assert train.nnz + test.nnz == checkerboard.nnz and train.shape == test.shape == checkerboard.shape


def test_the_split_command_loads_neither_torch_nor_mlflow(sample_ratings, tmp_path):
    """`recsys split` reads, splits and writes tables: it should cost what that costs, not the
    second or two of loading the models (torch) or MLflow."""
    import subprocess
    import sys

    code = ("import sys; from recsys_cli.main import app; "
            f"app(['split', '--data', {str(sample_ratings)!r}, '--out-dir', {str(tmp_path / 'split')!r}, '--quiet'], "
            "standalone_mode=False); "
            "print(sorted(m for m in ('torch', 'mlflow', 'implicit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "split" / "train.csv").is_file()
