"""The bad-input corpus (tests/bad_inputs/), each file through the real CLI.

A broken file gets one message naming the file, the line (and column where one applies)
and what was expected; exit status 2; no traceback unless --debug; nothing written. The
valid-but-awkward files (Unicode, 64-bit ids, BOM, CRLF, duplicates) load exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from recsys_cli.main import app
from typer.testing import CliRunner

from recsys.data.io import read_interactions

CORPUS = Path(__file__).parent / "bad_inputs"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# (file, extra flags, line, column, fragment of what was expected)
BROKEN = [
    ("empty.csv", (), None, None, "the file is empty; expected a header or rows"),
    ("header_only.csv", (), None, None, "no data rows (only a header?)"),
    ("missing_item_column.csv", (), 1, None, "no item column: expected one of"),
    ("misspelled_columns.csv", (), 1, None, "no user column"),
    ("rating_not_a_number.csv", (), 3, "rating", "expected a number, got 'five'"),
    ("rating_nan.csv", (), 4, "rating", "NaN"),
    ("rating_inf.csv", (), 3, "rating", "finite"),
    ("rating_negative.csv", (), 3, "rating", ">= 0"),
    ("rating_overflows_float32.csv", (), 4, "rating", "<= 3.4e+38"),
    ("nul_in_id.csv", (), 3, "item", "item id holds a NUL byte"),
    ("timestamp_not_a_time.csv", (), 4, "timestamp", "expected a timestamp (seconds since 1970 or an ISO date), got 'soon'"),
    ("weight_negative.csv", (), 4, "weight", ">= 0"),
    ("weight_not_a_number.csv", (), 3, "playcount", "expected a number, got 'many'"),
    ("rating_mixed_types.csv", (), 6, "rating", "expected a number, got '4 stars'"),
    ("empty_user_id.csv", (), 3, "user", "empty user id"),
    ("empty_item_id.csv", (), 3, "item", "empty item id"),
    ("ragged_row.csv", (), 4, None, "expected 3 fields (user, item, rating), found 2"),
    ("wrong_delimiter.csv", ("--sep", ","), 1, None, "is the separator right?"),
    ("unknown_delimiter.csv", (), 1, None, "cannot tell the column separator"),
    ("latin1.csv", (), 3, None, "not valid utf-8 (byte b'\\xe9' near b'Ren\\xe9e,11,5\\n'); pass --encoding latin-1"),
    ("truncated.csv.gz", (), None, None, "gzip"),
]


def location(path: Path, line: int | None, column: str | None) -> str:
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    return where + (f"column '{column}': " if column else "")


@pytest.mark.parametrize(("name", "flags", "line", "column", "expected"), BROKEN, ids=[c[0] for c in BROKEN])
@pytest.mark.parametrize("command", ["train", "split"])
def test_broken_file_one_message_exit_2_nothing_written(tmp_path, name, flags, line, column, expected, command):
    data = tmp_path / name
    shutil.copy(CORPUS / name, data)
    out = tmp_path / "out" / "target"
    before = tree(tmp_path)
    if command == "train":
        r = invoke("train", "--data", data, "--model", "popular", "--output", out, "--quiet", *flags)
    else:
        r = invoke("split", "--data", data, "--out-dir", out, *flags)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: " + location(data, line, column)), lines[0]
    assert expected in lines[0]
    assert "Traceback" not in r.output
    assert tree(tmp_path) == before  # no output, no lock file, no temporary, no parent folder


def test_debug_shows_the_traceback(tmp_path):
    data = tmp_path / "bad.csv"
    shutil.copy(CORPUS / "rating_not_a_number.csv", data)
    r = invoke("--debug", "train", "--data", data, "--model", "popular", "--output", tmp_path / "m")
    assert r.exit_code == 2
    assert "Traceback" in r.output and "InputError" in r.output
    assert f"error: {data}:3: column 'rating'" in r.output


@pytest.mark.parametrize("command", ["train", "split"])
def test_missing_file_and_directory_as_file(tmp_path, command):
    for given, expected in ((tmp_path / "nope.csv", "no such file"), (tmp_path, "is a directory")):
        out = tmp_path / "out"
        args = ("--output", out, "--model", "popular") if command == "train" else ("--out-dir", out)
        r = invoke(command, "--data", given, *args)
        assert r.exit_code == 2
        assert r.output.strip() == f"error: {given}: {expected}" + (
            "" if expected == "no such file" else "; expected an interaction file (CSV, TSV or Parquet)"
        )
        assert not out.exists()


def test_test_file_with_users_and_items_unknown_to_the_model(tmp_path, sample_ratings):
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("user_id,item_id,rating\nnobody,nothing,4\nnobody2,m00001,5\n")
    r = invoke("train", "--data", sample_ratings, "--model", "popular", "--test", unknown,
               "--output", tmp_path / "m", "--quiet")
    assert r.exit_code == 2
    assert r.output.startswith(f"error: {unknown}: no test entry has a user and an item in the training data")
    assert "2 entries dropped" in r.output
    assert not (tmp_path / "m").exists()
    r = invoke("train", "--data", sample_ratings, "--model", "popular", "--split", "none",
               "--output", tmp_path / "m", "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", "--model", tmp_path / "m", "--data", unknown, "--per-user", tmp_path / "u.csv")
    assert r.exit_code == 2
    assert r.output.startswith(f"error: {unknown}: no test entry has a user and an item known to the model")
    assert not (tmp_path / "u.csv").exists()


def test_latin1_loads_with_the_encoding_flag(tmp_path):
    r = invoke("split", "--data", CORPUS / "latin1.csv", "--out-dir", tmp_path / "s", "--encoding", "latin-1",
               "--test-fraction", "0.5")
    assert r.exit_code == 0, r.output
    data = read_interactions(CORPUS / "latin1.csv", encoding="latin-1")
    assert data.users.ids.tolist() == ["1", "Renée"]


def test_skip_bad_rows_reports_how_many(tmp_path):
    r = invoke("split", "--data", CORPUS / "ragged_row.csv", "--out-dir", tmp_path / "s", "--skip-bad-rows")
    assert r.exit_code == 0, r.output
    assert f"{CORPUS / 'ragged_row.csv'}: skipped 1 malformed row (--skip-bad-rows)" in r.output
    r = invoke("split", "--data", CORPUS / "rating_mixed_types.csv", "--out-dir", tmp_path / "t", "--skip-bad-rows")
    assert r.exit_code == 0, r.output
    assert "skipped 1 malformed row" in r.output


# -- valid files that must load exactly ----------------------------------------------------------
def triples(data) -> set[tuple]:
    frame = data.to_frame()
    value = "rating" if "rating" in frame else "weight"
    return set(zip(frame["user"].tolist(), frame["item"].tolist(), frame[value].tolist()))


VALID = {
    "duplicated_rows.csv": {(1, 10, 2.0), (2, 11, 5.0)},  # the latest rating wins
    "duplicated_counts.csv": {(1, 10, 4.0), (2, 11, 1.0)},  # counts add up
    "int64_ids.csv": {(2**63 - 1, -1, 1.0), (-(2**63), 0, 1.0), (-42, 2**63 - 1, 1.0)},
    "uint64_ids.csv": {("18446744073709551615", 1, 1.0), ("1", 2, 1.0)},  # beyond int64: text
    "unicode_ids.csv": {("Åsa", "東京", 5.0), ("Αλίκη", "🎵 song", 3.0), ("Åsa", "café", 4.0)},
    "crlf.csv": {(1, 10, 4.0), (2, 11, 5.0)},
    "bom.csv": {(1, 10, 4.0), (2, 11, 5.0)},
    "bom_crlf.csv": {(1, 10, 4.0), (2, 11, 5.0)},
    "wrong_delimiter.csv": {(1, 10, 4.0), (2, 11, 5.0)},  # ';' is detected when not forced
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_awkward_but_valid_files_load_exactly(tmp_path, name):
    data = read_interactions(CORPUS / name)
    assert triples(data) == VALID[name]
    # ... and through the CLI, written back out and read again unchanged.
    r = invoke("split", "--data", CORPUS / name, "--out-dir", tmp_path / "s", "--strategy", "random",
               "--test-fraction", "0.5")
    assert r.exit_code == 0, r.output
    parts = [read_interactions(tmp_path / "s" / f) for f in ("train.csv", "test.csv")]
    # As text: a part whose ids all look like integers reads back as integers.
    as_text = {tuple(map(str, t)) for t in VALID[name]}
    assert {tuple(map(str, t)) for p in parts for t in triples(p)} == as_text


def test_64_bit_ids_keep_every_bit():
    data = read_interactions(CORPUS / "int64_ids.csv")
    assert data.users.is_integer and data.users.ids.dtype == np.int64
    assert data.users.ids.tolist() == [-(2**63), -42, 2**63 - 1]


@pytest.mark.parametrize("flags", [("--model", "mf", "--loss", "mse", "--learning-rate", "1e30"),
                                   ("--model", "mf", "--loss", "bpr", "--learning-rate", "1e30")])
def test_training_that_diverges_saves_nothing_and_says_what_to_change(tmp_path, flags):
    """Garbage was saved as a model (exit 0): a learning rate that makes the loss non-finite
    stops training with the epoch and the advice, exit 2, and no model directory."""
    data = tmp_path / "ratings.csv"
    data.write_text("user,item,rating\n" + "".join(f"{u},{i},{1 + (u * i) % 5}\n" for u in range(30) for i in range(20)
                                                  if (u + i) % 3))
    result = invoke("train", "--data", str(data), *flags, "--epochs", "3", "-o", str(tmp_path / "m"), "--no-track")
    assert result.exit_code == 2, result.output
    assert "training diverged at epoch" in result.output or "non-finite factors" in result.output
    assert "Lower the learning rate" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_a_pipe_is_refused_with_what_to_do(tmp_path):
    """`--data <(cat f.csv)` failed with a wrong message (the reader reads its input twice)."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = invoke("train", "--data", str(fifo), "-o", str(tmp_path / "m"), "--no-track")
    assert result.exit_code == 2 and "is not a regular file (a pipe or a device)" in result.output
    assert not (tmp_path / "m").exists()


def test_parquet_problems_are_reported_by_row(tmp_path):
    """A Parquet file has no lines: a null id or a rating that is text is named by its row
    (the text diagnosis read the binary file as text and blamed its encoding)."""
    import pandas as pd

    cases = {"null_id.parquet": ({"user": [1, 2, None], "item": [1, 2, 3], "rating": [5, 4, 3]},
                                 "column 'user': row 3: empty user id"),
             "text_rating.parquet": ({"user": [1, 2, 3], "item": [1, 2, 3], "rating": ["5", "4", "x"]},
                                     "column 'rating': row 3: expected a number, got 'x'")}
    cases["binary_id.parquet"] = ({"user": [b"a", b"\xff\xfe"], "item": [1, 2], "rating": [5.0, 4.0]},
                                  "column 'user': row 2: user id is not valid UTF-8 text")
    for name, (columns, message) in cases.items():
        pd.DataFrame(columns).to_parquet(tmp_path / name)
        result = invoke("train", "--data", str(tmp_path / name), "--split", "none", "-o", str(tmp_path / "m"),
                        "--no-track")
        assert result.exit_code == 2 and message in result.output, result.output


def test_values_pyarrow_cannot_cast_but_are_fine_are_read(tmp_path):
    """Regression (review): a timestamp column of numbers and ISO dates, and Parquet ratings
    with blanks around the digits, crashed the bad-row search that found nothing bad."""
    import pandas as pd

    (tmp_path / "mixed.csv").write_text("user,item,rating,timestamp\n1,10,4,1600000000\n2,11,5,2020-01-01\n")
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [" 5", "4 "]}).to_parquet(tmp_path / "padded.parquet")
    for name in ("mixed.csv", "padded.parquet"):
        result = invoke("train", "--data", str(tmp_path / name), "--split", "none", "--model", "popular",
                        "-o", str(tmp_path / f"m-{name}"), "--no-track", "--quiet")
        assert result.exit_code == 0, result.output
