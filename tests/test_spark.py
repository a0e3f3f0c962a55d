"""Spark as an engine (``--engine spark``): one ``local[2]`` session for the whole test
session, tiny logs with a known answer.

Skipped only where Java is absent (pyspark itself comes with the project's ``spark`` extra,
which ``make test`` installs)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsys.data.interactions import Interactions
from recsys.data.splits import keep_trained, split
from recsys.data.synthetic import latent_factor_log
from recsys.errors import ConfigError
from recsys.jobs import ReadOptions, TrainConfig, train
from recsys.jobs.settings import load
from recsys.models import ALS, load_model
from recsys.retrieval.batch import recommend_to_file
from recsys.spark import SparkSettings, SparkUnavailable
from recsys.spark.session import require_pyspark
from tests.cli_invoke import run

HAS_JAVA = shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))
HAS_PYSPARK = importlib.util.find_spec("pyspark") is not None
needs_java = pytest.mark.skipif(
    not (HAS_JAVA and HAS_PYSPARK),
    reason="Spark needs Java 17+ and pyspark (pip install 'recsys[spark]'; make installs it)")
LOCAL2 = SparkSettings("local[2]")


@pytest.fixture(scope="session")
def spark():
    """The session every Spark test shares: the jobs find it active and use it as it is."""
    if not HAS_JAVA:
        pytest.skip("Spark needs Java 17+, and this machine has none")
    from recsys.spark.session import spark_session

    with spark_session(LOCAL2) as session:
        yield session


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> str:
    """A planted-factor log with text ids (``u17``: ordered as text, not as numbers), a few
    repeated pairs (their counts add up) and timestamps with ties."""
    data = latent_factor_log(n_users=120, n_items=80, dim=4, items_per_user=12, signal=12.0, seed=3)
    frame = data.to_frame()
    frame["user"] = "u" + frame["user"].astype(str)
    frame["item"] = "i" + frame["item"].astype(str)
    frame["timestamp"] = np.random.default_rng(0).integers(0, 50, len(frame))
    frame = pd.concat([frame, frame.iloc[:15]])  # repeated rows
    path = tmp_path_factory.mktemp("spark-log") / "plays.csv"
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def spark_model(spark, log_file, tmp_path_factory):
    """``als`` trained on Spark from the log, saved as a recsys model directory."""
    out = tmp_path_factory.mktemp("spark-model") / "model"
    # alpha given: "auto" on a log this dense weighs single plays below 1, which Spark cannot express.
    config = TrainConfig(model="als", params={"factors": 8, "epochs": 6, "alpha": 5.0}, seed=0, ks=(5, 10))
    return train(log_file, config, output=out, spark=LOCAL2)


@needs_java
def test_split_matches_local(spark, log_file):
    """The log read, indexed and split on Spark holds out exactly the local split's entries
    (same id maps, same seeded tie-breaks): last-n here, the per-user split in the next test."""
    from recsys.data.filters import Filters
    from recsys.spark.data import read_log, split_log, to_interactions

    log = read_log(spark, log_file, ReadOptions(), Filters())
    local = load(log_file)
    assert log.users == local.users and log.items == local.items and log.merged == 15
    parts = split_log(log, "last-n", test_fraction=0.25, n=2, seed=7)
    expected = split(local, "last-n", n=2, seed=7)
    assert to_interactions(log, parts.where("NOT test")).fingerprint() == expected[0].fingerprint()
    assert to_interactions(log, parts.where("test")).fingerprint() == expected[1].fingerprint()


@needs_java
def test_spark_als_learns_and_saves_a_normal_model(spark_model, log_file, tmp_path):
    """Spark's factors beat popularity on a log with planted structure, and the directory is
    an ``als`` model that loads and evaluates like a local one, on the local split."""
    result = spark_model
    popular = train(log_file, TrainConfig(model="popular", seed=0, ks=(5, 10)), save=False)
    assert result.test.fingerprint() == popular.test.fingerprint()  # the same held-out entries
    assert result.evaluation.metrics["recall@10"] > 1.5 * popular.evaluation.metrics["recall@10"]
    loaded = load_model(result.model_dir)
    assert type(loaded) is ALS
    assert loaded.fitted_params == result.model.fitted_params
    np.testing.assert_array_equal(loaded.item_factors, result.model.item_factors)
    run("evaluate", "--model", result.model_dir, "--data", log_file, "--format", "json")


@needs_java
def test_spark_top_n_equals_local(spark, spark_model, tmp_path):
    """Top-k scored on the executors equals the local exact top-k of the same saved model,
    list by list; unknown users get the popular items, marked as fallbacks."""
    from recsys.spark.batch import recommend_on_spark

    model = load_model(spark_model.model_dir)
    users = np.concatenate([model.users.ids[:40], ["nobody"]]).astype(object)
    local = recommend_to_file(model, tmp_path / "local.parquet", users, k=7)
    distributed = recommend_on_spark(model, tmp_path / "spark", users, 7, LOCAL2)
    assert (distributed.rows, distributed.users, distributed.fallback_users) == (local.rows, 41, 1)
    ours = pd.read_parquet(tmp_path / "local.parquet").sort_values(["user", "rank"], ignore_index=True)
    theirs = pd.read_parquet(tmp_path / "spark").sort_values(["user", "rank"], ignore_index=True)
    assert list(theirs.columns) == list(ours.columns)
    pd.testing.assert_frame_equal(theirs[["user", "item", "rank", "fallback"]], ours[["user", "item", "rank", "fallback"]])
    np.testing.assert_allclose(theirs["score"], ours["score"], rtol=1e-5)
    # A second run replaces its own output; the whole job through the command line.
    run("recommend", "--engine", "spark", "--model", spark_model.model_dir, "--users", "all", "--k", 3,
        "--out", tmp_path / "spark", "--quiet")
    assert len(pd.read_parquet(tmp_path / "spark")) == 3 * len(model.users)


@needs_java
def test_bad_rows_named_in_one_line(spark, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,10,5\n2,11,five\n3,12,4\n")
    result = run("train", "--engine", "spark", "--data", bad, "--no-index", "-o", tmp_path / "m", code=2)
    assert "1 malformed row" in result.output and "five" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "mf"], "--engine spark trains als"),
    (["--split", "random"], "not available with --engine spark"),
    (["--spark-conf", "novalue"], "--spark-conf takes KEY=VALUE"),
    (["--validation-fraction", "0.1"], "no per-epoch validation"),
    (["--nproc", "2"], "use one or the other"),
])
@needs_java  # the settings are checked once pyspark is known to be there
def test_spark_settings_refused_before_any_work(tmp_path, args, message):
    data = tmp_path / "log.csv"
    data.write_text("user,item\n1,2\n2,3\n")
    result = run("train", "--engine", "spark", "--data", data, "-o", tmp_path / "m", *args, code=2)
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_missing_pyspark_or_java_is_one_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # an import of it fails, as when not installed
    with pytest.raises(SparkUnavailable, match=r"pip install 'recsys\[spark\]'"):
        require_pyspark()
    monkeypatch.undo()
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(SparkUnavailable, match="needs Java 17"):
        require_pyspark()
    assert issubclass(SparkUnavailable, ConfigError)  # exit status 2 on the command line


def test_import_recsys_never_loads_pyspark():
    code = ("import sys, recsys, recsys.jobs, recsys.spark, recsys_cli.main; "
            "sys.exit('pyspark' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_keep_trained_is_the_rule_of_the_local_split():
    data = Interactions.from_arrays(["a", "a", "b", "c"], ["x", "y", "x", "z"])
    train_part, test_part = data.select(np.array([True, False, True, False])), data.select(
        np.array([False, True, False, True]))
    kept_train, kept_test, dropped = keep_trained(train_part, test_part)
    assert list(kept_train.users.ids) == ["a", "b"] and list(kept_train.items.ids) == ["x"]
    assert dropped == 2 and kept_test.nnz == 0


class _FakeContext:
    """What ensure_checkpoint_dir reads of a SparkContext."""

    def __init__(self, master: str, conf: dict[str, str], folder: str | None = None) -> None:
        self.master, self._conf, self.folder = master, conf, folder

    def getCheckpointDir(self):
        return self.folder

    def getConf(self):
        return self._conf

    def setCheckpointDir(self, folder):
        self.folder = folder


def test_long_spark_als_runs_get_a_checkpoint_folder_or_a_clear_refusal():
    """Regression: 25 sweeps (als's default) overflowed the JVM's stack without checkpoints."""
    from recsys.spark.als import CHECKPOINT_CONF, ensure_checkpoint_dir

    short = _FakeContext("spark://h:7077", {})
    ensure_checkpoint_dir(short, 10)
    assert short.folder is None  # ten sweeps or fewer need none
    local = _FakeContext("local[2]", {})
    ensure_checkpoint_dir(local, 25)
    assert local.folder is not None and "recsys-spark-checkpoints" in local.folder
    chosen = _FakeContext("yarn", {CHECKPOINT_CONF: "hdfs://nn/tmp/ckpt"})
    ensure_checkpoint_dir(chosen, 25)
    assert chosen.folder == "hdfs://nn/tmp/ckpt"
    kept = _FakeContext("yarn", {}, folder="hdfs://nn/mine")
    ensure_checkpoint_dir(kept, 25)
    assert kept.folder == "hdfs://nn/mine"
    with pytest.raises(ConfigError, match=CHECKPOINT_CONF):
        ensure_checkpoint_dir(_FakeContext("spark://h:7077", {}), 25)


@needs_java
@pytest.mark.parametrize(("args", "flag"), [
    (["--device", "cpu"], "--device"), (["--jobs", "2"], "--jobs"), (["--search-k", "50"], "--search-k"),
])
def test_spark_recommend_refuses_local_scoring_options(spark_model, tmp_path, args, flag):
    """Regression: --device cuda, --jobs and --search-k were accepted and ignored by --engine spark."""
    result = run("recommend", "--engine", "spark", "--model", spark_model.model_dir, "--users", "all",
                 "--out", tmp_path / "recs.parquet", *args, code=2)
    assert flag in result.output and "--engine local" in result.output and not (tmp_path / "recs.parquet").exists()


@needs_java
def test_a_split_spark_cannot_make_is_refused_before_spark_reads_anything(tmp_path, monkeypatch):
    """Regression: --split random was refused only after Spark had read, merged and indexed the log."""
    import recsys.spark.data as spark_data

    monkeypatch.setattr(spark_data, "read_log", lambda *a, **k: pytest.fail("the log was read"))
    data = tmp_path / "log.csv"
    data.write_text("user,item\n1,2\n2,3\n")
    result = run("train", "--engine", "spark", "--data", data, "--split", "cold-items", "-o", tmp_path / "m", code=2)
    assert "not available with --engine spark" in result.output


@pytest.fixture
def cached_frames(monkeypatch):
    """Every DataFrame a job persists (to check that it unpersists them all)."""
    from pyspark.sql import DataFrame

    frames = []

    def tracking(persist):
        def tracked(self, *args, **kwargs):
            frames.append(self)
            return persist(self, *args, **kwargs)
        return tracked

    for cls in DataFrame.__subclasses__():  # the classic (and Connect) DataFrame
        if "persist" in vars(cls):
            monkeypatch.setattr(cls, "persist", tracking(cls.persist))
    return frames


@needs_java
def test_spark_train_with_a_test_file_checks_once_and_uncaches(spark, log_file, tmp_path, cached_frames, monkeypatch):
    """``recsys train --engine spark --test FILE``: the given test entries mapped onto the
    training ids by the local rule (the same entries scored, the same ones dropped), the
    settings checked once per job, and no DataFrame left cached in the shared session."""
    import recsys.spark.training as spark_training
    from recsys.data.splits import on_training_ids

    frame = load(log_file).to_frame()
    held = np.random.default_rng(1).random(len(frame)) < 0.2
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    frame[~held].to_csv(train_csv, index=False)
    extra = frame.iloc[:2].copy()
    extra["user"] = ["nobody", extra["user"].iloc[1]]
    extra["item"] = [extra["item"].iloc[0], "no-such-item"]  # an unknown user, an unknown item
    pd.concat([frame[held], extra]).to_csv(test_csv, index=False)
    expected, dropped = on_training_ids(load(test_csv), load(train_csv))
    assert dropped >= 2

    calls = []
    check = spark_training.check_spark_config
    monkeypatch.setattr(spark_training, "check_spark_config", lambda config: (calls.append(config), check(config)))
    result = run("train", "--engine", "spark", "--data", train_csv, "--test", test_csv, "--factors", 4, "--epochs", 2,
                 "--param", "alpha=5", "--k", 5, "--no-index", "-o", tmp_path / "m")
    assert len(calls) == 1
    assert f"{dropped} test entries of users or items without training entries dropped" in result.output
    local = train(train_csv, TrainConfig(model="popular", ks=(5,)), test=test_csv, save=False)
    assert local.test.fingerprint() == expected.fingerprint() and local.evaluation.dropped_entries == dropped
    assert cached_frames and all(not f.is_cached for f in cached_frames)
    assert all(f.storageLevel.useMemory is False and f.storageLevel.useDisk is False for f in cached_frames)

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user,item\nnobody,nothing\n")
    refused = run("train", "--engine", "spark", "--data", train_csv, "--test", wrong, "--no-index",
                  "-o", tmp_path / "m2", code=2)
    assert "no test entry has a user and an item in the training data (1 entries dropped)" in refused.output


@needs_java
def test_spark_filters_keep_the_local_filters_entries(spark, tmp_path, cached_frames):
    """--min-rating and the k-core options on Spark keep exactly the entries, and report the
    drops, that recsys.data.filters.apply_filters does locally."""
    from recsys.data.filters import Filters, apply_filters
    from recsys.spark.data import read_log, to_interactions

    rng = np.random.default_rng(5)
    users, items = rng.zipf(1.6, 900) % 60, rng.zipf(1.4, 900) % 50
    path = tmp_path / "ratings.csv"
    pd.DataFrame({"user": users, "item": items, "rating": rng.integers(1, 6, 900)}).to_csv(path, index=False)
    chosen = Filters(min_rating=2.0, min_user_count=4, min_item_count=4)  # a k-core of four rounds here
    local, report = apply_filters(load(path), chosen)
    log = read_log(spark, path, ReadOptions(), chosen)
    try:
        assert to_interactions(log, log.entries).fingerprint() == local.fingerprint()
        assert log.filtered == report and report.entries > 0
    finally:
        log.unpersist()
    assert all(not f.is_cached for f in cached_frames)


def test_spark_include_seen_gathers_no_seen_items():
    """Regression: the Spark top-N gathered every user's seen items even with --include-seen."""
    import scipy.sparse as sp

    from recsys.spark.batch import _seen_rows

    class Untouchable:
        shape = (3, 5)

        def __getitem__(self, _):
            raise AssertionError("the seen matrix was read")

    empty = _seen_rows(Untouchable(), np.array([0, -1, 2]), include_seen=True)
    assert empty.shape == (3, 5) and empty.nnz == 0
    seen = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    picked = _seen_rows(seen, np.array([1, -1, 0]), include_seen=False)
    np.testing.assert_array_equal(picked.toarray(), [[0, 1, 0], [0, 0, 0], [1, 0, 1]])


@needs_java
def test_spark_recommend_include_seen_equals_local(spark_model, tmp_path):
    """``recsys recommend --engine spark --include-seen``: the local exact lists with seen
    items kept (some of them do come back)."""
    model = load_model(spark_model.model_dir)
    local = tmp_path / "local.parquet"
    recommend_to_file(model, local, "all", k=5, include_seen=True)
    run("recommend", "--engine", "spark", "--model", spark_model.model_dir, "--users", "all", "--k", 5,
        "--include-seen", "--out", tmp_path / "spark", "--quiet")
    ours = pd.read_parquet(local).sort_values(["user", "rank"], ignore_index=True)
    theirs = pd.read_parquet(tmp_path / "spark").sort_values(["user", "rank"], ignore_index=True)
    pd.testing.assert_frame_equal(theirs[["user", "item", "rank"]], ours[["user", "item", "rank"]])
    np.testing.assert_allclose(theirs["score"], ours["score"], rtol=1e-5)
    rows = model.users.index(theirs["user"].to_numpy())
    cols = model.items.index(theirs["item"].to_numpy())
    assert np.asarray(model.seen[rows, cols]).ravel().any()  # seen items among the lists
