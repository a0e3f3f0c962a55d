"""MLflow tracking against real stores: a temporary SQLite file and a real ``mlflow server``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_invoke import run as cli

from recsys.data import read_interactions
from recsys.errors import ConfigError, TrackingError
from recsys.jobs import FeatureTables, TrainConfig, recommend, train, tune
from recsys.tracking import (
    Tracker,
    check_store,
    load_recommender,
    metric_key,
    resolve_model_dir,
    resolve_uri,
    tracking_enabled,
)

pytest.importorskip("mlflow")


def tracked_train(data, config, *, tracker, **options):
    """A job reported to an MLflow run: what a library user writes."""
    with tracker.run(f"train-{config.model}", kind="train") as run:
        return train(data, config, run=run, **options)


def tracked_tune(data, config, *, tracker, **options):
    with tracker.run(f"tune-{config.model}", kind="tune") as run:
        return tune(data, config, run=run, **options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _restore_tracking_uri():
    """``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``; undo both after the module."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(before)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _no_uri_from_earlier_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module", autouse=True)
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1, a free port and a temporary backend.

    Started when the module starts, so that its start-up (many seconds on a busy machine)
    overlaps the other tests; the test that uses it runs last. Stopped at the end.
    """
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, start_new_session=True,
    )
    yield f"http://127.0.0.1:{port}", server
    # The server runs uvicorn as a child: stop the whole process group.
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One SQLite store for the module (creating one costs seconds); tests use their own experiments."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def uri(store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(store)  # MLflow's default artifact root ./mlruns lands here too
    return f"sqlite:///{store / 'mlflow.db'}"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def mf_run(store, sample_ratings):
    """An MF model trained once with per-epoch validation, recorded in the module's store."""
    cwd = os.getcwd()
    os.chdir(store)
    try:
        uri = f"sqlite:///{store / 'mlflow.db'}"
        config = TrainConfig(model="mf", params={"factors": 8, "epochs": 3, "device": "cpu"}, ks=(10, 20),
                             validation_fraction=0.2)
        result = tracked_train(sample_ratings, config, tracker=Tracker(uri, "mf"), output=store / "model")
    finally:
        os.chdir(cwd)
    return uri, result


def test_training_run_records_params_epochs_metrics_tags_and_artifacts(mf_run, sample_ratings):
    uri, result = mf_run
    run = client(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model"] == "mf" and params["factors"] == "8" and params["epochs"] == "3"
    assert params["learning_rate"] == str(result.model.learning_rate)  # defaults are recorded too
    assert params["split"] == "user" and params["seed"] == "0" and params["test_fraction"] == "0.2"
    assert params["data_sha256"] == hashlib.sha256(Path(sample_ratings).read_bytes()).hexdigest()
    assert params["data_bytes"] == str(Path(sample_ratings).stat().st_size)
    for name in ("loss", "val_recall_at_20"):
        history = client(uri).get_metric_history(result.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
    assert run.data.metrics["recall_at_10"] == pytest.approx(result.evaluation.metrics["recall@10"])
    assert run.data.metrics["fit_seconds"] > 0
    assert run.data.tags["recsys.version"] and run.data.tags["recsys.device"] == "cpu"
    artifacts = {a.path for a in client(uri).list_artifacts(result.run_id)}
    assert {"config.toml", "metrics.csv"} <= artifacts and "recsys_model" not in artifacts
    # The model directory is stored once, inside the servable model.
    assert (resolve_model_dir(f"runs:/{result.run_id}/model", uri) / "model.json").is_file()
    # The embedding diagnostics (issue 8): the item map and the cluster summary.
    diagnostics = {Path(a.path).name for a in client(uri).list_artifacts(result.run_id, "diagnostics")}
    assert diagnostics == {"embedding_map.png", "clusters.json"}
    assert run.data.metrics["gini_at_20"] > 0 and run.data.metrics["novelty_at_20"] > 0
    # The evaluation is the logged model's too (as MLflow's own log_metrics links it); the
    # per-epoch figures (steps 1-3) are the run's alone.
    (output,) = run.outputs.model_outputs
    model_metrics = {m.key: m.value for m in client(uri).get_logged_model(output.model_id).metrics}
    assert model_metrics["recall_at_10"] == pytest.approx(result.evaluation.metrics["recall@10"])
    assert "val_recall_at_20" not in model_metrics


def test_pyfunc_model_predicts_the_library_top_n(mf_run):
    import mlflow

    uri, result = mf_run
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    model = result.model
    users = list(model.users.ids[:4])
    out = pyfunc.predict(pd.DataFrame({"user": users, "k": 5}))
    expected, _ = model.recommend(users, k=5)
    got = out.groupby("user", sort=False)["item"].apply(list)
    for user, items in zip(users, expected):
        assert got[user] == list(items)
        seen = model.items.ids[model.seen[model.users.index(user)].indices]
        assert not set(got[user]) & set(seen)
    assert list(out["rank"][:5]) == [1, 2, 3, 4, 5]
    # Its requirements are declared (installable from PyPI), so it loads in a fresh environment.
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"runs:/{result.run_id}/model")).read_text()
    assert "numpy==" in requirements and "torch==" in requirements and "+" not in requirements
    # load_recommender resolves the same URI to the model itself
    loaded = load_recommender(f"runs:/{result.run_id}/model", uri)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)


def test_evaluate_takes_a_runs_uri_and_is_recorded(mf_run, monkeypatch, sample_ratings, tmp_path):
    uri, result = mf_run
    monkeypatch.chdir(tmp_path)
    r = cli("evaluate", "--model", f"runs:/{result.run_id}/model", "--data", str(sample_ratings),
            "--k", "10", "--format", "json", "--track", "--tracking-uri", uri, "--experiment", "eval")
    assert "recall@10" in json.loads(r.stdout)
    runs = client(uri).search_runs([client(uri).get_experiment_by_name("eval").experiment_id])
    assert runs[0].data.params["model_source"] == f"runs:/{result.run_id}/model"
    assert "recall_at_10" in runs[0].data.metrics


def test_a_runs_uri_is_fetched_from_the_given_store_in_a_fresh_process(mf_run, tmp_path):
    """Regression (review): MLflow looked the logged model up in the global store (./mlflow.db
    of the working directory), not in --tracking-uri, unless something had set it before."""
    uri, result = mf_run
    code = ("import sys; from recsys.tracking.serving import resolve_model_dir; "
            "print(resolve_model_dir(sys.argv[1], sys.argv[2]))")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", code, f"runs:/{result.run_id}/model", uri], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert (Path(done.stdout.strip()) / "model.json").is_file()
    assert not (tmp_path / "mlflow.db").exists()


def test_similar_takes_a_runs_uri_with_its_store(mf_run, tmp_path, monkeypatch):
    uri, result = mf_run
    monkeypatch.chdir(tmp_path)
    item = str(result.model.items.ids[0])
    r = cli("similar", "--model", f"runs:/{result.run_id}/model", "--tracking-uri", uri, "--item", item,
            "--k", "3", "--format", "json")
    assert [row["rank"] for row in json.loads(r.stdout)["similar"]] == [1, 2, 3]


def test_recommend_from_a_runs_uri_uses_the_logged_annoy_index(uri, tmp_path, sample_ratings):
    r = cli("train", "--data", str(sample_ratings), "--model", "als", "--factors", "8", "--epochs", "2",
            "--trees", "2", "-o", str(tmp_path / "model"), "--k", "10", "--format", "json",
            "--track", "--tracking-uri", uri, "--experiment", "serve")
    run_id = json.loads(r.stdout)["run_id"]
    c = client(uri)
    resolved = resolve_model_dir(f"runs:/{run_id}/model", uri)
    assert (resolved / "index").is_dir()
    # A run's model never changes: the second call reads the download cache, not the store.
    import mlflow.artifacts

    def offline(*args, **kwargs):
        raise AssertionError("downloaded again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlflow.artifacts, "download_artifacts", offline)
        assert resolve_model_dir(f"runs:/{run_id}/model", uri) == resolved
    out = tmp_path / "recs.csv"
    cli("recommend", "--model", f"runs:/{run_id}/model", "--out", str(out), "--k", "3", "--retrieval", "annoy",
        "--users", "413,667", "--quiet", "--track", "--tracking-uri", uri, "--experiment", "serve")
    recs = pd.read_csv(out)
    assert sorted(recs["user"].unique()) == [413, 667] and len(recs) == 6
    runs = c.search_runs([c.get_experiment_by_name("serve").experiment_id], "tags.`recsys.kind` = 'recommend'")
    assert runs[0].data.params["model_source"] == f"runs:/{run_id}/model"
    assert runs[0].data.metrics["rows"] == 6


def test_a_failed_run_is_marked_failed(uri, sample_ratings):
    config = TrainConfig(model="mf", params={"learning_rate": -1.0, "epochs": 1})
    with pytest.raises(ConfigError):
        tracked_train(sample_ratings, config, tracker=Tracker(uri, "failing"), save=False)
    c = client(uri)
    run = c.search_runs([c.get_experiment_by_name("failing").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert "learning_rate" in run.data.tags["recsys.error"]


def test_a_run_stopped_by_a_signal_is_killed_not_failed(uri):
    """Regression (merge review): TrainingInterrupted (SIGINT/SIGTERM after a checkpoint) left the run FAILED."""
    from recsys.checkpoint import TrainingInterrupted

    with pytest.raises(TrainingInterrupted), Tracker(uri, "interrupted").run("train-mf", kind="train"):
        raise TrainingInterrupted(Path("m.checkpoint"), 3, 10, signal.SIGTERM)
    c = client(uri)
    run = c.search_runs([c.get_experiment_by_name("interrupted").experiment_id])[0]
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["recsys.error"]


@pytest.mark.parametrize("background", [True, False], ids=["worker-process", "in-process"])
def test_worker_and_in_process_record_the_same_complete_run(uri, tmp_path, background):
    """MLflow runs in a worker process by default; what it records is complete when the block
    is left, the same as in this process, and a directory removed right after it is logged is
    logged whole."""
    experiment = f"recorded-{background}"
    tracker = Tracker(uri, experiment, background=background)
    with tracker.run("job", kind="train", tags={"extra": 3}) as run:
        run.log_params({"factors": np.int64(8), "name": "x" * 7000})
        for epoch in range(3):
            run.log_metrics({"loss": 1.0 / (epoch + 1), "recall@20": np.float32(0.25)}, step=epoch)
        run.set_tags({"note": "kept"})
        run.log_text("hello\n", "notes/hello.txt")
        folder = tmp_path / f"diagnostics-{background}"
        folder.mkdir()
        (folder / "a.txt").write_text("a")
        run.log_directory(folder, "diagnostics")
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        with run.child("trial-0", kind="trial") as child:
            child.log_metrics({"ndcg@10": 0.5})
            child_id = child.run_id
        parent_id = run.run_id
    c = client(uri)
    parent, child = c.get_run(parent_id), c.get_run(child_id)
    assert parent.info.status == child.info.status == "FINISHED"
    assert parent.data.params["factors"] == "8" and len(parent.data.params["name"]) == 6000
    assert [m.value for m in c.get_metric_history(parent_id, "loss")] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert parent.data.metrics["recall_at_20"] == 0.25
    assert parent.data.tags["extra"] == "3" and parent.data.tags["note"] == "kept"
    assert parent.data.tags["recsys.kind"] == "train"
    assert {a.path for a in c.list_artifacts(parent_id)} == {"notes", "diagnostics"}
    assert [a.path for a in c.list_artifacts(parent_id, "diagnostics")] == ["diagnostics/a.txt"]
    assert child.data.tags["mlflow.parentRunId"] == parent_id and child.data.metrics["ndcg_at_10"] == 0.5


def test_a_batch_takes_calls_as_one_call_after_another_would():
    """Calls that reach the worker together are one write; MLflow refuses a parameter twice
    in one write, so a repeated one starts the next batch."""
    import queue

    from recsys.tracking.recorder import Batch
    from recsys.tracking.worker import gather

    batch = Batch()
    assert batch.add("log_params", {"a": "1"}) and batch.add("log_metrics", {"loss": 0.5}, 3, 1000)
    assert batch.add("set_tags", {"t": "x"}) and batch.add("set_tags", {"t": "y"})
    assert not batch.add("log_params", {"a": "1"})
    assert batch.params == {"a": "1"} and batch.tags == {"t": "y"} and batch.metrics == [("loss", 0.5, 3, 1000)]

    def call(method, *args, token=0):
        return {"op": "call", "token": token, "method": method, "args": list(args), "seq": None}

    pending = queue.Queue()
    for request in (call("log_metrics", {"loss": 0.4}, 1, 2000), call("log_params", {"a": "1"}),
                    call("log_params", {"a": "1"}), call("set_tags", {"t": "z"})):
        pending.put(request)
    batch, methods, held = gather(call("log_metrics", {"loss": 0.5}, 0, 1000), pending)
    assert batch.metrics == [("loss", 0.5, 0, 1000), ("loss", 0.4, 1, 2000)] and batch.params == {"a": "1"}
    assert methods == {"log_metrics", "log_params"} and held["method"] == "log_params"
    assert pending.qsize() == 1  # the tags wait behind the held call: order is kept

    pending = queue.Queue()
    for request in (call("log_metrics", {"x": 1.0}, token=1), call("log_text", "t", "a.txt")):
        pending.put(request)
    batch, methods, held = gather(call("log_metrics", {"x": 2.0}, None, 5), pending)
    assert len(batch.metrics) == 1 and held["token"] == 1  # another run's call is not taken


@pytest.mark.parametrize("background", [True, False], ids=["worker-process", "in-process"])
def test_metrics_carry_the_time_the_job_logged_them(uri, background):
    tracker = Tracker(uri, f"stamped-{background}", background=background)
    with tracker.run("job", kind="train") as run:
        before = int(time.time() * 1000)
        run.log_metrics({"loss": 1.0}, step=0)
        after = int(time.time() * 1000)
        run_id = run.run_id
    (metric,) = client(uri).get_metric_history(run_id, "loss")
    assert before <= metric.timestamp <= after


def test_a_logged_directory_is_a_snapshot_of_hard_links_removed_once_logged(uri, tmp_path, monkeypatch):
    """The job does not wait while a directory is logged: the worker logs hard links to its
    files (no bytes copied) and removes them. Where links cannot be made the call waits,
    so the directory is logged whole either way."""
    import tempfile

    from recsys.tracking import worker

    folder = tmp_path / "diagnostics"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    snapshot = worker._snapshot(folder)
    assert (snapshot / "diagnostics" / "a.txt").stat().st_ino == (folder / "a.txt").stat().st_ino
    import shutil

    shutil.rmtree(snapshot)

    def refused(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    with monkeypatch.context() as patch:
        patch.setattr(worker.os, "link", refused)
        assert worker._snapshot(folder) is None
    leftovers = set(Path(tempfile.gettempdir()).glob(".diagnostics.tracking-*")) | set(tmp_path.glob(".diagnostics.tracking-*"))
    assert not leftovers

    for linked in (True, False):
        if not linked:
            monkeypatch.setattr(worker, "_snapshot", lambda directory: None)
        with Tracker(uri, f"snapshot-{linked}").run("job", kind="train") as run:
            run.log_directory(folder, "diagnostics")
            run_id = run.run_id
        assert [a.path for a in client(uri).list_artifacts(run_id, "diagnostics")] == ["diagnostics/a.txt"]
    assert not set(Path(tempfile.gettempdir()).glob(".diagnostics.tracking-*"))


def test_a_job_asks_its_runs_id_only_after_everything_is_sent(sample_ratings):
    """Asking a tracked run's id waits until the worker has opened the store (seconds of
    MLflow's imports): a job asks it last, not before saving and logging the model."""
    from recsys.runs import NullRun

    class Recording(NullRun):
        recording, keeps_models = True, True

        def __init__(self):
            self.events = []

        @property
        def run_id(self):
            self.events.append("run_id")
            return "r1"

        def log_model(self, model_dir):
            self.events.append("log_model")

        def log_directory(self, path, name):
            self.events.append("log_directory")

    run = Recording()
    result = train(sample_ratings, TrainConfig(model="popular"), save=False, run=run)
    assert result.run_id == "r1" and "log_model" in run.events and run.events[-1] == "run_id"
    assert run.events.count("run_id") == 1


def test_starting_a_tracked_command_loads_no_pandas():
    """A tracked command starts its MLflow process before pandas, pyarrow or torch load:
    the packages it needs first stay light."""
    code = ("import sys; import recsys.tracking, recsys.data.options; from recsys.tracking import Tracker; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_call_the_store_refuses_fails_the_job_and_its_run(uri):
    """A failure in the worker process reaches the job as a TrackingError by its next call
    (MLflow refuses to change a parameter), and the run ends FAILED."""
    tracker = Tracker(uri, "refused")
    with pytest.raises(TrackingError, match="log_params failed"), tracker.run("job", kind="train") as run:
        run.log_params({"factors": 8})
        run.log_params({"factors": 16})
        run_id = run.run_id  # waits for the worker: the refusal has come back by now
        run.log_metrics({"loss": 1.0})
    c = client(uri)
    assert c.get_run(run_id).info.status == "FAILED"


def test_a_job_process_that_dies_leaves_its_run_killed_not_running(uri, tmp_path):
    """The worker ends a run KILLED when the job's process dies without ending it (os._exit)."""
    script = (
        "import os, sys\n"
        "from recsys.tracking import Tracker\n"
        f"with Tracker({uri!r}, 'died').run('job', kind='train') as run:\n"
        "    run.log_params({'factors': 8})\n"
        "    print(run.run_id, flush=True)\n"
        "    os._exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    run_id = done.stdout.strip()
    c = client(uri)
    for _ in range(100):  # the worker notices the closed pipe and ends the run on its own
        run = c.get_run(run_id)
        if run.info.status != "RUNNING":
            break
        time.sleep(0.2)
    assert run.info.status == "KILLED" and run.data.params["factors"] == "8"


def test_a_half_made_store_is_a_tracking_error_not_a_bug(tmp_path, monkeypatch):
    """Regression (merge review): a store whose creation was interrupted raised SQLAlchemy's
    error from MLflow, which the CLI reported as "a bug in recsys" with an SQL dump."""
    import mlflow

    def broken(_name):
        raise RuntimeError("(sqlite3.OperationalError) table mcp_servers already exists\n[SQL: CREATE ...]")

    monkeypatch.setattr(mlflow, "set_experiment", broken)
    with pytest.raises(TrackingError, match=r"cannot be opened .*already exists.*remove it, or pass --no-track"):
        Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x").open()


def test_feature_tables_are_recorded_with_their_hashes(tmp_path):
    """Regression (merge review): a two-tower run recorded the log's hash but not its feature files'."""
    from recsys.jobs.record import feature_params

    users, items, more = (tmp_path / n for n in ("u.csv", "i.csv", "tags.csv"))
    for path in (users, items, more):
        path.write_text(f"id,x\n1,{path.name}\n")
    params = feature_params(FeatureTables(users=[users], items=[items, more], item_spec="x=skip"))
    assert params["user_features_path"] == str(users.resolve())
    assert params["item_features_sha256"] == hashlib.sha256(items.read_bytes()).hexdigest()
    assert params["item_features_1_bytes"] == more.stat().st_size
    assert params["item_features_spec"] == "x=skip" and "user_features_spec" not in params
    assert feature_params(FeatureTables()) == {}


def test_recommend_records_the_new_users_feature_tables(uri, tmp_path, sample_ratings):
    """Regression (merge review): `recommend --user-features` recorded `history_path: None` and not the tables."""
    from recsys.models import TwoTower

    users = sample_ratings.parent / "users.csv"
    data = FeatureTables(users=[users])
    model = TwoTower(factors=4, hidden=8, epochs=1, device="cpu")
    from recsys.jobs.settings import attach_feature_tables

    model.fit(attach_feature_tables(read_interactions(sample_ratings), "two-tower", data, "utf-8")[0])
    with Tracker(uri, "rec-features").run("recommend", kind="recommend") as run:
        result = recommend(model, tmp_path / "recs.csv", [1], 3, features=data, run=run)
    params = client(uri).get_run(result.run_id).data.params
    assert params["user_features_sha256"] == hashlib.sha256(users.read_bytes()).hexdigest()
    assert "history_path" not in params


def test_a_cold_item_run_without_metrics_says_why(uri, sample_ratings):
    """Regression (merge review): a cold-item split of a model that cannot score cold items
    was recorded (and shown by grids) as a plain "finished" run without metrics."""
    config = TrainConfig(model="popular", split="cold-items", ks=(10,))
    result = tracked_train(sample_ratings, config, tracker=Tracker(uri, "cold-note"), save=False)
    assert "cannot score" in client(uri).get_run(result.run_id).data.tags["recsys.note"]


def test_an_unreachable_server_fails_before_training_naming_the_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    # The data file is empty (unreadable) too: the tracking check comes before any reading.
    (tmp_path / "empty.csv").write_text("")
    r = cli("train", "--data", "empty.csv", "--track", "--tracking-uri", dead, code=2)
    assert dead in r.output and "unreachable" in r.output
    assert time.monotonic() - start < 30
    with pytest.raises(TrackingError, match="does not exist"):
        check_store(f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")


def test_no_track_leaves_no_store_behind(tmp_path, monkeypatch, sample_ratings):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECSYS_NO_TRACK")
    cli("train", "--data", str(sample_ratings), "--model", "popular", "--no-track", "-o", "m1", "--quiet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m1"]
    # Without the flag (and without RECSYS_NO_TRACK) tracking is on, in MLflow's default store.
    tracker = Tracker.from_options(None, None, None)
    assert tracker.enabled and tracker.uri == "sqlite:///mlflow.db"


def test_options_and_environment():
    assert tracking_enabled(None) is False  # tests/conftest.py sets RECSYS_NO_TRACK=1
    assert tracking_enabled(True) is True
    assert resolve_uri(None) == "sqlite:///mlflow.db"
    assert resolve_uri("http://x:5000") == "http://x:5000"
    assert metric_key("recall@20") == "recall_at_20"


def test_grid_runs_children_records_failures_and_ranks(uri, tmp_path, sample_ratings):
    grid = tmp_path / "tiny.toml"
    grid.write_text(f"""
experiment = "grid-test"
metric = "recall@10"
k = [10]
log_models = false
[[datasets]]
name = "sample"
path = "{sample_ratings}"
[[models]]
model = "als"
params = {{ epochs = 2 }}
grid = {{ factors = [2, 16] }}
[[models]]
model = "mf"
params = {{ epochs = 1 }}
grid = {{ learning_rate = [-1.0] }}
""")
    r = cli("experiment", "run", str(grid), "--tracking-uri", uri, "--format", "json")
    board = json.loads(r.stdout)
    assert [row["status"] for row in board] == ["FINISHED", "FINISHED", "FAILED"]
    assert board[0]["recall@10"] >= board[1]["recall@10"]
    assert board[0]["params"] == "factors=16"
    c = client(uri)
    exp = c.get_experiment_by_name("grid-test")
    parent = c.search_runs([exp.experiment_id], "tags.`recsys.kind` = 'grid'")[0]
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3
    assert {a.path for a in c.list_artifacts(parent.info.run_id)} >= {"leaderboard.csv", "leaderboard.md"}
    shown = cli("experiment", "show", "grid-test", "--tracking-uri", uri)
    assert "factors=16" in shown.stdout and "FAILED" in shown.stdout
    by_coverage = json.loads(cli("experiment", "show", "grid-test", "--tracking-uri", uri, "--run-id",
                                 parent.info.run_id, "--metric", "coverage@10", "--format", "json").stdout)
    finished = [row["coverage@10"] for row in by_coverage if row["status"] == "FINISHED"]
    assert len(finished) == 2 and finished == sorted(finished, reverse=True)
    cli("experiment", "show", "no-such-experiment", "--tracking-uri", uri, code=2)
    # A grid whose every combination failed is an error, with the reason, even under -q.
    grid.write_text(grid.read_text().split("[[models]]")[0] + """[[models]]
model = "mf"
grid = { learning_rate = [-1.0] }
""")
    failed = cli("experiment", "run", str(grid), "--tracking-uri", uri, "--quiet", code=2)
    assert "all 1 combinations failed; the first" in failed.output and "learning" in failed.output


def test_tune_logs_every_trial_as_a_child_run(uri, sample_ratings):
    from recsys.jobs.space import Dimension

    config = TrainConfig(model="als", params={"epochs": 2})
    result = tracked_tune(sample_ratings, config, tracker=Tracker(uri, "tune-test"), trials=2,
                          space={"factors": Dimension("categorical", choices=(2, 4))}, metric="recall@10")
    c = client(uri)
    children = c.search_runs([c.get_experiment_by_name("tune-test").experiment_id],
                             f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(children) == 2
    assert all("val_recall_at_10" in ch.data.metrics for ch in children)
    assert c.get_run(result.run_id).data.params["best.factors"] in ("2", "4")


def test_recommend_frame_per_row_k_unknown_users_and_seen_items(checkerboard):
    from recsys.models import ALS
    from recsys.tracking import recommend_frame

    model = ALS(factors=4, epochs=3).fit(checkerboard)
    users = list(model.users.ids[:2])
    frame = recommend_frame(model, pd.DataFrame({"user": [users[0], "nobody", users[1]], "k": [3, 2, 1]}))
    assert list(frame["user"]) == [users[0]] * 3 + ["nobody"] * 2 + [users[1]]
    assert list(frame["rank"]) == [1, 2, 3, 1, 2, 1]
    assert list(frame["fallback"]) == [False] * 3 + [True] * 2 + [False]
    assert frame["score"][frame["fallback"]].isna().all()
    expected, _ = model.recommend(users[0], k=3)
    assert list(frame["item"][:3]) == list(expected)
    with pytest.raises(ValueError, match="user"):
        recommend_frame(model, pd.DataFrame({"id": [1]}))


@pytest.mark.slow
def test_against_a_real_mlflow_server(mlflow_server, tmp_path, sample_ratings, monkeypatch):
    url, server = mlflow_server
    deadline = time.monotonic() + 20  # on top of the time the tests above took
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.skip("mlflow server did not start in time (a busy machine)")
            time.sleep(0.5)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(model="als", params={"factors": 4, "epochs": 2}, ks=(10,))
    result = tracked_train(sample_ratings, config, tracker=Tracker(url, "served"), output=tmp_path / "m")
    run = client(url).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["factors"] == "4"
    assert [m.step for m in client(url).get_metric_history(result.run_id, "epoch_seconds")] == [1, 2]
    assert "config.toml" in {a.path for a in client(url).list_artifacts(result.run_id)}
    loaded = load_recommender(f"runs:/{result.run_id}/model", url)
    np.testing.assert_array_equal(loaded.item_factors, result.model.item_factors)


@pytest.mark.parametrize("bad, message", [
    ('split = "bogus"', "unknown split 'bogus'"),
    ("path = 'missing.csv'", "no such file"),
    ("read = { nope = 1 }", "bad read options"),
    ('k = "10"', "k must be a list of positive integers"),
    ('metric = "ndcg@x"', "metric must look like 'ndcg@10'"),
    ("splits = [1]", "every [[splits]] entry is a table"),
])
def test_grid_mistakes_are_caught_when_the_file_is_read(tmp_path, sample_ratings, bad, message):
    """Regression (review): these failed every combination before its run started, and the
    command printed an empty leaderboard and exited 0 (or crashed on int())."""
    from recsys.jobs import read_grid

    lines = {"top": "", "data": f'path = "{sample_ratings}"', "split": ""}
    if bad.startswith(("k =", "metric", "splits")):
        lines["top"] = bad
    elif bad.startswith(("path", "read")):
        lines["data"] = bad if bad.startswith("path") else lines["data"] + "\n" + bad
    else:
        lines["split"] = "[[splits]]\nstrategy = " + bad.split("= ")[1]
    grid = tmp_path / "g.toml"
    grid.write_text(f"""{lines['top']}
[[datasets]]
{lines['data']}
{lines['split']}
[[models]]
model = "als"
""")
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_grid(grid)


def test_a_missing_data_file_opens_no_store(tmp_path, monkeypatch):
    """A mistake in the command leaves nothing behind, not even a new mlflow.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECSYS_NO_TRACK", raising=False)
    r = cli("train", "--data", "nosuch.csv", code=2)
    assert "nosuch.csv: no such file" in r.output and list(tmp_path.iterdir()) == []
