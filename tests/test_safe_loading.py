"""Safe loading: nothing loaded can run code; damaged or hostile model directories are refused cleanly."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recsys.artifacts import sha256_file
from recsys.data.interactions import Interactions
from recsys.errors import ModelFormatError
from recsys.models import create_model
from recsys.models.base import Recommender

ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = ("factors.npz", "vocabulary.npz", "seen.npz")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A small saved model with biases and text ids (every kind of array the format has)."""
    rng = np.random.default_rng(0)
    users = np.asarray([f"user-{i}" for i in rng.integers(0, 30, 300)])
    items = np.asarray([f"itém-{i}" for i in rng.integers(0, 20, 300)])
    data = Interactions.from_arrays(users, items, rng.integers(1, 6, 300).astype(float), feedback="rating")
    model = create_model("mf", factors=4, epochs=1, loss="mse", device="cpu").fit(data)
    return model.save(tmp_path_factory.mktemp("saved") / "model")


def copy_of(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    out.mkdir(parents=True)
    for f in saved.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def reseal(model_dir: Path) -> None:
    """Recompute the checksums in model.json, so that the parsers themselves meet the damage."""
    meta = json.loads((model_dir / "model.json").read_text())
    meta["files"] = {name: sha256_file(model_dir / name) for name in DATA_FILES}
    (model_dir / "model.json").write_text(json.dumps(meta))


def loads_or_refuses(model_dir: Path) -> None:
    """Loading either succeeds or raises ModelFormatError: never another exception."""
    with contextlib.suppress(ModelFormatError):
        Recommender.load(model_dir)


def test_round_trip_is_exact(saved):
    model = Recommender.load(saved)
    assert model.user_bias is not None and "itém-3" in model.items.ids.tolist()


@pytest.mark.parametrize("name", ["model.json", *DATA_FILES])
def test_flipped_bytes_and_truncation_are_refused(saved, tmp_path, name):
    model_dir = copy_of(saved, tmp_path)
    original = (model_dir / name).read_bytes()
    rng = np.random.default_rng(len(name))
    positions = sorted({0, len(original) // 2, len(original) - 1, *rng.integers(0, len(original), 12).tolist()})
    for pos in positions:
        damaged = bytearray(original)
        damaged[pos] ^= 0xFF
        (model_dir / name).write_bytes(bytes(damaged))
        if name == "model.json":
            loads_or_refuses(model_dir)  # a flipped byte in a JSON string may still parse
        else:
            with pytest.raises(ModelFormatError, match="does not match its checksum"):
                Recommender.load(model_dir)
    for length in (0, 1, len(original) // 3, len(original) - 2):
        (model_dir / name).write_bytes(original[:length])
        with pytest.raises(ModelFormatError):
            Recommender.load(model_dir)
    (model_dir / name).unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        Recommender.load(model_dir)


@pytest.mark.parametrize("name", DATA_FILES)
def test_damage_behind_a_valid_checksum_is_still_refused_cleanly(saved, tmp_path, name):
    """The checksum is recomputed after each change: the array readers meet the damage."""
    model_dir = copy_of(saved, tmp_path)
    original = (model_dir / name).read_bytes()
    rng = np.random.default_rng(7)
    for pos in rng.integers(0, len(original), 40).tolist():
        damaged = bytearray(original)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        (model_dir / name).write_bytes(bytes(damaged))
        reseal(model_dir)
        loads_or_refuses(model_dir)
    for length in rng.integers(0, len(original), 10).tolist():
        (model_dir / name).write_bytes(original[:length])
        reseal(model_dir)
        with pytest.raises(ModelFormatError):
            Recommender.load(model_dir)


def _resave_npz(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("factors.npz", lambda a: a.update(user_factors=a["user_factors"][:-1]), "has shape"),
        ("factors.npz", lambda a: a.update(item_factors=a["item_factors"][:, :2]), "has shape"),
        ("factors.npz", lambda a: a.pop("item_bias"), "lacks item_bias"),
        ("factors.npz", lambda a: a["user_factors"].__setitem__((0, 0), np.nan), "non-finite"),
        ("factors.npz", lambda a: a.update(user_factors=a["user_factors"].astype(np.complex64)), "expected real"),
        ("factors.npz", lambda a: a.update(item_popularity=np.zeros((2, 2))), "has shape"),
        ("seen.npz", lambda a: a.update(indices=a["indices"] + 10_000), "inconsistent"),
        ("seen.npz", lambda a: a.update(indptr=a["indptr"][::-1].copy()), "inconsistent"),
        ("seen.npz", lambda a: a.pop("indptr"), "inconsistent"),
        ("vocabulary.npz", lambda a: a.clear(), "vocabulary.npz: no users id table"),
        ("vocabulary.npz", lambda a: a.update({k: v[:-1] for k, v in a.items()}), "id table is inconsistent"),
        ("vocabulary.npz", lambda a: a.update({k: v.astype(np.float64) for k, v in a.items()}), "inconsistent"),
    ],
)
def test_shapes_and_contents_that_contradict_the_metadata(saved, tmp_path, name, change, message):
    model_dir = copy_of(saved, tmp_path)
    _resave_npz(model_dir / name, change)
    reseal(model_dir)
    with pytest.raises(ModelFormatError, match=re.escape(message)):
        Recommender.load(model_dir)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("format_version", 2), ("format_version", "1"), ("format", "pickle"), ("model", "evil"),
        ("model", ["mf"]), ("params", "x"), ("params", {"factors": "many"}), ("params", {"os": "system"}),
        ("n_users", "12"), ("n_users", -1), ("n_users", None), ("factors", "4"), ("factors", None),
        ("has_bias", False), ("files", []), ("files", {"factors.npz": 1}), ("history", "x"),
        ("history", [1, 2]), ("fit_seconds", "abc"), ("training_fingerprint", {"a": 1}),
        ("rating_range", [5, 1]), ("rating_range", "1-5"), ("rating_range", [1, float("inf")]),
    ],
)
def test_hostile_or_wrong_metadata_is_refused_or_harmless(saved, tmp_path, key, value):
    model_dir = copy_of(saved, tmp_path)
    meta = json.loads((model_dir / "model.json").read_text())
    meta[key] = value
    (model_dir / "model.json").write_text(json.dumps(meta))
    loads_or_refuses(model_dir)
    if key in ("format_version", "format", "model", "files", "n_users", "factors", "rating_range"):
        with pytest.raises(ModelFormatError):
            Recommender.load(model_dir)
    if key == "format_version" and value == 2:
        with pytest.raises(ModelFormatError, match="format version 2 is not supported"):
            Recommender.load(model_dir)


def test_metadata_cannot_point_outside_the_directory(saved, tmp_path):
    secret = tmp_path / "secret.npz"
    secret.write_bytes((saved / "factors.npz").read_bytes())
    model_dir = copy_of(saved, tmp_path)
    meta = json.loads((model_dir / "model.json").read_text())
    files = meta["files"]
    meta["files"] = {"../secret.npz" if k == "factors.npz" else k: v for k, v in files.items()}
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError):
        Recommender.load(model_dir)
    # A data file that is a link out of the directory is refused too.
    model_dir = copy_of(saved, tmp_path / "b")
    (model_dir / "factors.npz").unlink()
    os.symlink(secret, model_dir / "factors.npz")
    with pytest.raises(ModelFormatError, match="outside the directory"):
        Recommender.load(model_dir)


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    marker: Path

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_hidden_in_an_array_file_never_runs(saved, tmp_path):
    model_dir = copy_of(saved, tmp_path)
    marker = tmp_path / "pwned"
    _Payload.marker = marker
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload()
    with np.load(model_dir / "factors.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in {**arrays, "user_factors": payload}.items():
            item = io.BytesIO()
            np.save(item, v, allow_pickle=True)
            zf.writestr(f"{k}.npy", item.getvalue())
    (model_dir / "factors.npz").write_bytes(buf.getvalue())
    reseal(model_dir)
    with pytest.raises(ModelFormatError, match="not a readable array file"):
        Recommender.load(model_dir)
    assert not marker.exists()


def test_no_code_path_can_unpickle():
    """Static guard: no pickle, np.load only without pickles, torch.load only weights_only."""
    offenders = []
    for path in [*ROOT.joinpath("recsys").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")]:
        text = path.read_text()
        for pattern in (r"^\s*import (c?pickle|dill|joblib|cloudpickle)", r"^\s*from (c?pickle|dill|joblib) import",
                        r"allow_pickle\s*=\s*True", r"pd\.read_pickle", r"\.to_pickle\("):
            if re.search(pattern, text, re.M):
                offenders.append(f"{path}: {pattern}")
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path}: torch.load without weights_only=True")
    assert not offenders, offenders


def test_checksums_are_sha256_of_the_files(saved):
    meta = json.loads((saved / "model.json").read_text())
    for name, digest in meta["files"].items():
        assert hashlib.sha256((saved / name).read_bytes()).hexdigest() == digest


def test_a_damaged_annoy_index_of_the_right_size_is_refused_before_annoy_reads_it(tmp_path, checkerboard):
    """Regression: a flipped byte in items.ann passed the size check and crashed queries (SIGSEGV)."""
    from recsys_cli.main import app
    from typer.testing import CliRunner

    from recsys.data.io import write_interactions

    runner = CliRunner()
    write_interactions(checkerboard, tmp_path / "d.csv")
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "d.csv"), "--model", "ials", "--split", "none",
                            "--output", str(tmp_path / "m"), "--quiet"])
    assert r.exit_code == 0, r.output
    forest = tmp_path / "m" / "index" / "items.ann"
    blob = bytearray(forest.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    forest.write_bytes(bytes(blob))
    r = runner.invoke(app, ["recommend", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "r.csv"),
                            "--retrieval", "annoy"])
    assert r.exit_code == 2, r.output
    assert "items.ann: does not match its checksum" in r.output
    assert not (tmp_path / "r.csv").exists()
