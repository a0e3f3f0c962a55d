"""Checkpoints and resume: an interrupted and resumed run ends with the same factors."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from cli_process import start, wait_for
from recsys_cli.main import app
from typer.testing import CliRunner

from recsys.checkpoint import Checkpointing, TrainingInterrupted, load_checkpoint
from recsys.data.interactions import Interactions
from recsys.data.io import write_interactions
from recsys.errors import ConfigError, InputError, ModelFormatError
from recsys.evaluation import Validation
from recsys.models import create_model
from recsys.models.base import Recommender

runner = CliRunner()

MODELS = {
    "mf-bpr": ("mf", {"factors": 8, "epochs": 5, "negatives": 8, "batch_size": 64, "device": "cpu"}),
    "mf-softmax-popularity": ("mf", {"factors": 8, "epochs": 5, "loss": "softmax", "sampling": "popularity",
                                      "negatives": 8, "batch_size": 64, "device": "cpu"}),
    "mf-mse": ("mf", {"factors": 8, "epochs": 5, "loss": "mse", "batch_size": 64, "device": "cpu"}),
    "ials": ("ials", {"factors": 8, "epochs": 5, "device": "cpu"}),
    "bpmf": ("bpmf", {"factors": 4, "epochs": 5, "burn_in": 2, "device": "cpu"}),
    "als": ("als", {"factors": 8, "epochs": 5, "device": "cpu"}),
    # cosine decay and id dropout: the step count and the generator must both come back
    "two-tower": ("two-tower", {"factors": 8, "hidden": 16, "recent": 4, "epochs": 5, "batch_size": 64,
                                "lr_schedule": "cosine", "uniform_negatives": 8, "device": "cpu"}),
}


@pytest.fixture(scope="module")
def ratings() -> Interactions:
    rng = np.random.default_rng(0)
    return Interactions.from_arrays(
        rng.integers(0, 60, 600), rng.integers(0, 40, 600), rng.integers(1, 6, 600).astype(float), feedback="rating"
    )


def same_factors(a: Recommender, b: Recommender) -> None:
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    if a.has_bias:
        np.testing.assert_array_equal(a.user_bias, b.user_bias)
        np.testing.assert_array_equal(a.item_bias, b.item_bias)


def train_interrupted(at_epoch: int, *args, **kwargs) -> None:
    """``recsys.jobs.train`` with a Ctrl-C (SIGINT) arriving at the end of ``at_epoch``."""
    from recsys.jobs import train

    class Interrupt:
        def on_epoch_end(self, model, epoch, figures):
            if epoch == at_epoch:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrainingInterrupted):
            train(*args, callbacks=[Interrupt()], **kwargs)
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_resumed_run_equals_uninterrupted(tmp_path, case, checkerboard, ratings):
    name, params = MODELS[case]
    data = ratings if params.get("loss") == "mse" or name == "bpmf" else checkerboard
    reference = create_model(name, **params).fit(data)
    ckpt = tmp_path / "ckpt"
    # every=2 of 5 epochs: checkpoints after epochs 2 and 4; the one of epoch 4 remains.
    first = create_model(name, **params).fit(data, checkpointing=Checkpointing(ckpt, every=2))
    same_factors(first, reference)  # checkpointing changes nothing
    assert load_checkpoint(ckpt).epoch == 4
    resumed = create_model(name, **params).fit(data, checkpointing=Checkpointing(ckpt, every=2, resume=True))
    same_factors(resumed, reference)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]


def test_signal_saves_a_checkpoint_and_resume_continues(tmp_path, checkerboard):
    """A SIGINT mid-run (sent by a callback at epoch 2) checkpoints that epoch and stops."""
    params = MODELS["mf-bpr"][1]
    reference = create_model("mf", **params).fit(checkerboard)

    class Interrupt:
        def on_epoch_end(self, model, epoch, figures):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    ckpt = tmp_path / "ckpt"
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    with pytest.raises(TrainingInterrupted) as err:
        create_model("mf", **params).fit(checkerboard, callbacks=[Interrupt()], checkpointing=Checkpointing(ckpt))
    assert err.value.epoch == 2 and err.value.signum == signal.SIGINT
    assert f"--resume {ckpt}" in str(err.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    signal.signal(signal.SIGINT, before)
    resumed = create_model("mf", **params).fit(checkerboard, checkpointing=Checkpointing(ckpt, resume=True))
    same_factors(resumed, reference)


@pytest.mark.parametrize("case", ["ials", "two-tower"])
def test_resume_keeps_validation_and_early_stopping_state(tmp_path, checkerboard, case):
    """Regression: a two-tower checkpoint with a validation split failed to save its best
    epoch (the snapshot held the towers as a list of tensors)."""
    from recsys.jobs import validation_split

    train, valid = validation_split(checkerboard, 0.3, 0)
    name, params = MODELS[case]
    params = {**params, "epochs": 6}

    def fit(**kw):
        return create_model(name, **params).fit(train, validation=Validation(valid, "recall@5", patience=10), **kw)

    reference = fit()
    fit(checkpointing=Checkpointing(tmp_path / "c", every=3))
    resumed = fit(checkpointing=Checkpointing(tmp_path / "c", resume=True))
    same_factors(resumed, reference)
    assert resumed.best_epoch == reference.best_epoch
    assert [h["val_recall@5"] for h in resumed.history] == [h["val_recall@5"] for h in reference.history]


def test_checkpoint_written_with_use_gpu_resumes(tmp_path, checkerboard):
    """ALS's ``use_gpu`` became ``device``: a checkpoint whose hyper-parameters (and stored
    run settings) name the flag resumes as one made with the device."""
    from recsys.jobs.settings import TrainConfig

    name, params = MODELS["als"]
    reference = create_model(name, **params).fit(checkerboard)
    ckpt = tmp_path / "c"
    create_model(name, **params).fit(checkerboard, checkpointing=Checkpointing(ckpt, every=2))
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    del meta["params"]["device"]
    meta["params"]["use_gpu"] = False
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    resumed = create_model(name, **params).fit(checkerboard, checkpointing=Checkpointing(ckpt, every=2, resume=True))
    same_factors(resumed, reference)
    stored = TrainConfig.from_dict({"model": "als", "params": {"use_gpu": False, "factors": 8}})
    assert stored.params == {"device": "cpu", "factors": 8}


def test_resume_refuses_other_data_params_or_model(tmp_path, checkerboard, ratings):
    params = MODELS["ials"][1]
    create_model("ials", **params).fit(checkerboard, checkpointing=Checkpointing(tmp_path / "c", every=2))
    resume = Checkpointing(tmp_path / "c", resume=True)
    with pytest.raises(ConfigError, match="training data differ"):
        create_model("ials", **params).fit(ratings, checkpointing=resume)
    with pytest.raises(ConfigError, match=r"other hyper-parameters \(factors\)"):
        create_model("ials", **{**params, "factors": 4}).fit(checkerboard, checkpointing=resume)
    with pytest.raises(ConfigError, match="is of a 'ials' model, not 'mf'"):
        create_model("mf", factors=8).fit(checkerboard, checkpointing=resume)
    with pytest.raises(ConfigError, match="no checkpoint directory"):
        create_model("ials", **params).fit(checkerboard, checkpointing=Checkpointing(tmp_path / "x", resume=True))
    # More epochs than the original run is allowed: training simply goes on.
    longer = create_model("ials", **{**params, "epochs": 7}).fit(checkerboard, checkpointing=resume)
    assert len(longer.history) == 7


def test_corrupt_checkpoint_is_refused(tmp_path, checkerboard):
    ckpt = tmp_path / "c"
    create_model("ials", **MODELS["ials"][1]).fit(checkerboard, checkpointing=Checkpointing(ckpt, every=2))
    state = ckpt / "state.npz"
    blob = bytearray(state.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    state.write_bytes(bytes(blob))
    with pytest.raises(ModelFormatError, match="does not match its checksum"):
        load_checkpoint(ckpt)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["format_version"] = 99
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="version 99 is not supported"):
        load_checkpoint(ckpt)


def test_popular_has_no_checkpoints(tmp_path, sample_ratings):
    r = runner.invoke(app, ["train", "--data", str(sample_ratings), "--model", "popular",
                            "--checkpoint-every", "1", "--output", str(tmp_path / "m")])
    assert r.exit_code == 2 and "model 'popular' has no checkpoints" in r.output


def test_cli_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path, checkerboard):
    """A real `recsys train` subprocess gets SIGTERM mid-run; `--resume` finishes it."""
    data = tmp_path / "data.csv"
    write_interactions(checkerboard, data)
    args = ["train", "--data", data, "--model", "mf", "--epochs", "30", "--factors", "8", "--seed", "3",
            "-p", "batch_size=128", "-p", "negatives=8", "--device", "cpu", "--split", "none", "--no-index", "--quiet"]
    ckpt = tmp_path / "checkpoints" / "run-1"  # --checkpoint-dir: not beside the model
    proc = start(*args, "--output", tmp_path / "m", "--checkpoint-every", "1", "--checkpoint-dir", ckpt)
    wait_for(ckpt, proc)
    proc.send_signal(signal.SIGSTOP)  # hold it mid-run while the signal is queued
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"checkpoint saved in {ckpt}; continue with: recsys train --resume {ckpt}" in err
    assert not (tmp_path / "m").exists()
    stopped_at = load_checkpoint(ckpt).epoch
    assert 1 <= stopped_at < 30

    r = runner.invoke(app, ["train", "--resume", str(ckpt), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model_dir"] == str((tmp_path / "m").resolve())
    # Regression (merge review): the resumed run did not say what it resumed.
    assert f"resume   {ckpt}: mf after epoch {stopped_at} of 30" in r.stderr
    assert not ckpt.exists()  # removed once the model is saved
    r = runner.invoke(app, [*map(str, args), "--output", str(tmp_path / "ref")])
    assert r.exit_code == 0, r.output
    resumed, reference = Recommender.load(tmp_path / "m"), Recommender.load(tmp_path / "ref")
    same_factors(resumed, reference)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 31))


def test_cli_resume_refuses_settings_flags(tmp_path):
    r = runner.invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "3"])
    assert r.exit_code == 2 and "drop --epochs" in r.output


def test_train_workflow_checkpoints_on_a_signal_by_default_and_resumes(tmp_path, checkerboard):
    """What `recsys train` does without --checkpoint-every: Ctrl-C saves `<output>.checkpoint`."""
    from recsys.jobs import TrainConfig, train

    data = tmp_path / "data.csv"
    write_interactions(checkerboard, data)
    config = TrainConfig(model="ials", params={"factors": 8, "epochs": 5, "device": "cpu"}, split="none", seed=2)
    reference = train(data, config, output=tmp_path / "ref").model

    train_interrupted(3, data, config, output=tmp_path / "m", checkpoint_on_signal=True)
    ckpt = tmp_path / "m.checkpoint"
    assert load_checkpoint(ckpt).epoch == 3 and not (tmp_path / "m").exists()
    result = train(None, resume=ckpt)
    assert result.model_dir == (tmp_path / "m").resolve() and not ckpt.exists()
    same_factors(result.model, reference)


@pytest.mark.parametrize("change", ["drop", "shrink", "retype"])
def test_damaged_state_behind_a_valid_checksum_is_refused_cleanly(tmp_path, checkerboard, change):
    """Each array of a checkpoint damaged in turn (checksum recomputed): resume refuses cleanly.

    Regression: a state without SparseAdam's step count loaded, then crashed at the first
    step (KeyError); a complex or (1, d) factor table would have been cast or broadcast.
    """
    import io

    from recsys.artifacts import sha256_file
    from recsys.errors import RecsysError

    params = MODELS["mf-bpr"][1]
    good = tmp_path / "good"
    create_model("mf", **params).fit(checkerboard, checkpointing=Checkpointing(good, every=2))
    with np.load(good / "state.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for name in arrays:
        damaged = dict(arrays)
        if change == "drop":
            del damaged[name]
        elif change == "shrink":
            damaged[name] = damaged[name].reshape(-1)[:-1] if damaged[name].size else np.zeros(3)
        else:
            damaged[name] = damaged[name].astype(np.complex64)
        ckpt = tmp_path / f"{change}-{name}"
        ckpt.mkdir()
        buf = io.BytesIO()
        np.savez(buf, **damaged)
        (ckpt / "state.npz").write_bytes(buf.getvalue())
        meta = json.loads((good / "checkpoint.json").read_text())
        meta["files"] = {"state.npz": sha256_file(ckpt / "state.npz")}
        (ckpt / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(RecsysError):
            create_model("mf", **params).fit(checkerboard, checkpointing=Checkpointing(ckpt, resume=True))


def test_two_tower_resume_reads_the_feature_files_again(tmp_path, sample_ratings):
    """The checkpoint stores the feature files' paths: `recsys train --resume` needs no flags."""
    from recsys.jobs import FeatureTables, TrainConfig, train

    sample = sample_ratings.parent
    config = TrainConfig(model="two-tower", params={"factors": 8, "hidden": 16, "epochs": 3, "device": "cpu"},
                         split="none")
    features = FeatureTables(users=sample / "users.csv", items=[sample / "items.csv"],  # as the CLI gives them
                             item_spec="title=skip")
    reference = train(sample_ratings, config, output=tmp_path / "ref", features=features).model

    train_interrupted(2, sample_ratings, config, output=tmp_path / "m", checkpoint_on_signal=True, features=features)
    # The item table moved: the stored path is gone; given again, the new path is used.
    moved = tmp_path / "moved-items.csv"
    moved.write_bytes((sample / "items.csv").read_bytes())
    with pytest.raises(InputError, match=r"missing/items\.csv"):
        train(None, resume=tmp_path / "m.checkpoint", features=FeatureTables(items=[tmp_path / "missing" / "items.csv"]))
    resumed = train(None, resume=tmp_path / "m.checkpoint", features=FeatureTables(items=[moved])).model
    assert resumed.item_encoder == reference.item_encoder and resumed.user_encoder.categorical
    same_factors(resumed, reference)


def test_two_tower_cosine_schedule_refuses_a_resume_with_other_epochs(tmp_path, checkerboard):
    """The decay is laid over the run's epochs: more or fewer on resume would reshape it."""
    name, params = MODELS["two-tower"]
    create_model(name, **params).fit(checkerboard, checkpointing=Checkpointing(tmp_path / "c", every=2))
    with pytest.raises(ConfigError, match="decays over the run's 5 epochs"):
        create_model(name, **{**params, "epochs": 8}).fit(checkerboard, checkpointing=Checkpointing(tmp_path / "c", resume=True))


def test_feature_tables_of_a_checkpoint_from_before_feature_tables_are_read(tmp_path):
    """Regression (review): checkpoints written before FeatureTables stored the tables under
    the four argument names; a resume lost them (and a frame given in memory went unnoticed)."""
    from recsys.jobs import FeatureTables
    from recsys.jobs.settings import IN_MEMORY

    stored = {"user_features": IN_MEMORY, "item_features": [str(tmp_path / "items.csv")],
              "user_features_spec": None, "item_features_spec": "title=skip"}
    with pytest.raises(ConfigError, match="given its users in memory"):
        FeatureTables.from_stored(stored, FeatureTables(), tmp_path)
    tables = FeatureTables.from_stored(stored, FeatureTables(users=tmp_path / "users.csv"), tmp_path)
    assert tables.items == [str(tmp_path / "items.csv")] and tables.item_spec == "title=skip"
    assert tables.users == tmp_path / "users.csv"


def test_a_resume_honours_a_given_config(tmp_path, checkerboard):
    """A resumed run may train more epochs than the interrupted one planned (as before the job
    layer: a config given to train() with resume= is used, the model refuses other settings)."""
    from recsys.jobs import TrainConfig, train

    data = tmp_path / "data.csv"
    write_interactions(checkerboard, data)
    config = TrainConfig(model="ials", params={"factors": 4, "epochs": 4, "device": "cpu"}, split="none")
    train_interrupted(2, data, config, output=tmp_path / "m", checkpoint_on_signal=True)
    longer = TrainConfig(model="ials", params={"factors": 4, "epochs": 6, "device": "cpu"}, split="none")
    result = train(None, longer, resume=tmp_path / "m.checkpoint")
    assert [h["epoch"] for h in result.model.history] == [1, 2, 3, 4, 5, 6]
