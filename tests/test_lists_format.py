"""Adjacency lists (``user item item ...``, the KGAT / NGCF / LightGCN format): detection,
the forced format, exact pairs, gzip, blank and user-only lines, bad lines, the CLI flag."""

from __future__ import annotations

import gzip

import pytest
from cli_invoke import run

from recsys.data.io import read_interactions
from recsys.errors import ConfigError, InputError

# A user with no items (line 4, with a trailing space), a repeated item (user 3), a blank line.
TEXT = "0 10 11 12\n1 11\n2 10 13 14 15 16\n3 \n\n5 12 12 17\n"
PAIRS = {
    (0, 10): 1.0, (0, 11): 1.0, (0, 12): 1.0,
    (1, 11): 1.0,
    (2, 10): 1.0, (2, 13): 1.0, (2, 14): 1.0, (2, 15): 1.0, (2, 16): 1.0,
    (5, 12): 2.0, (5, 17): 1.0,  # a repeated pair sums, like any count log
}


def pairs(data) -> dict[tuple[int, int], float]:
    frame = data.to_frame()
    return {(u, i): float(v) for u, i, v in zip(frame["user"], frame["item"], frame.iloc[:, 2])}


def lines_with(bad: str, at: int, n: int = 20) -> str:
    """``n`` lines of varied length, line ``at`` (1-based) replaced by ``bad``."""
    lines = [" ".join(str(x) for x in [u, *range(100 + u, 100 + u + 1 + u % 5)]) for u in range(n)]
    lines[at - 1] = bad
    return "\n".join(lines) + "\n"


def test_detected_without_flags_and_pairs_exact(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text(TEXT)
    data, report = read_interactions(p, return_report=True)
    assert report.data_format == "lists" and not report.has_header
    assert pairs(data) == PAIRS
    assert data.feedback == "count"
    assert data.users.is_integer and data.items.is_integer
    assert data.users.ids.tolist() == [0, 1, 2, 5]  # user 3 has no items: left out
    assert data.items.ids.tolist() == [10, 11, 12, 13, 14, 15, 16, 17]
    assert (report.rows, report.skipped) == (5, 0)


def test_forced_lists_reads_what_detection_would_call_a_table(tmp_path):
    # Three fields on every line is a u.data-style table (user, item, rating) unless forced.
    p = tmp_path / "three.txt"
    p.write_text("0 10 11\n1 12 13\n2 10 12\n")
    table = read_interactions(p)
    assert table.feedback == "rating"
    assert pairs(table) == {(0, 10): 11.0, (1, 12): 13.0, (2, 10): 12.0}
    lists = read_interactions(p, data_format="lists")
    assert pairs(lists) == {(u, i): 1.0 for u, i in [(0, 10), (0, 11), (1, 12), (1, 13), (2, 10), (2, 12)]}


def test_forced_table_turns_detection_off(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text(TEXT)
    with pytest.raises(InputError, match="pass --data-format lists"):
        read_interactions(p, data_format="table")


def test_gzip_crlf_and_trailing_spaces(tmp_path):
    p = tmp_path / "train.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(TEXT.replace("\n", " \r\n").encode())
    assert pairs(read_interactions(p)) == PAIRS


def test_only_user_ids_is_an_error_not_an_empty_matrix(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("0\n1 \n2\n")
    with pytest.raises(InputError, match="every line holds a user id alone"):
        read_interactions(p, data_format="lists")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("7 107 x108 109", "expected an item id (an integer), got 'x108'"),
        ("u7 107 108", "expected a user id (an integer), got 'u7'"),
        ("7 107  108", "empty item id"),
        ("7 107 1.5", "expected an item id (an integer), got '1.5'"),
    ],
)
def test_bad_token_names_its_line(tmp_path, bad, message):
    p = tmp_path / "train.txt"
    p.write_text(lines_with(bad, at=8))
    for data_format in ("auto", "lists"):  # detected despite the bad line, and forced
        with pytest.raises(InputError) as err:
            read_interactions(p, data_format=data_format)
        assert err.value.line == 8 and message in str(err.value)
        assert str(err.value).startswith(f"{p}:8: ")


def test_skip_bad_rows_counts_bad_lines(tmp_path):
    p = tmp_path / "train.txt"
    text = lines_with("7 107 x108", at=8).replace("12 112", "12 1 1.5", 1)
    p.write_text(text)
    data, report = read_interactions(p, skip_bad_rows=True, return_report=True)
    assert report.data_format == "lists" and report.skipped == 2
    assert 7 not in data.users.ids and 12 not in data.users.ids
    assert len(data.users) == 18


def test_three_fields_per_line_stay_a_table_even_with_a_short_row(tmp_path):
    # A u.data-style log with one truncated row fails on that row; it is not read as lists.
    rows = [f"{u} {100 + u} {1 + u % 5}" for u in range(20)]
    rows[11] = "11 111"
    p = tmp_path / "u.data"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match="expected 3 fields") as err:
        read_interactions(p)
    assert err.value.line == 12


def test_forced_lists_refuses_table_options(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text(TEXT)
    with pytest.raises(ConfigError, match="no --sep"):
        read_interactions(p, data_format="lists", sep=",")
    with pytest.raises(ConfigError, match="auto, table or lists"):
        read_interactions(p, data_format="list")  # type: ignore[arg-type]


def test_cli_flag_bad_line_exits_2_with_file_and_line(tmp_path):
    p = tmp_path / "three.txt"
    p.write_text("0 10 11\n1 12 13\n2 10 zz\n3 10 12\n")
    r = run("split", "--data", p, "--data-format", "lists", "--out-dir", tmp_path / "s", "--quiet", code=2)
    assert f"{p}:3: expected an item id (an integer), got 'zz'" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "s").exists()


def test_cli_flag_forces_lists(tmp_path):
    p = tmp_path / "three.txt"
    p.write_text("".join(f"{u} {10 + u % 7} {20 + u % 5}\n" for u in range(30)))
    r = run("split", "--data", p, "--data-format", "lists", "--out-dir", tmp_path / "s", "--format", "json", "--quiet")
    assert '"train_entries"' in r.output
    header = (tmp_path / "s" / "train.csv").read_text().splitlines()[0]
    assert header == "user,item,weight"  # counts, not the ratings a table read would give
