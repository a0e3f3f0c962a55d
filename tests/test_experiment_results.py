"""The benchmarks' result files: the newest of a day is the one written last, in a fresh
checkout too (where every file has the checkout's time)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import ROOT


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from experiments import common

    return common


def test_a_result_records_when_it_was_written(common, tmp_path):
    path = common.write_result(tmp_path, "toy.test", {"rows": []})
    record = json.loads(path.read_text())
    assert record["name"] == "toy.test" and record["stamp"] == common.stamp()
    assert record["written"].startswith(common.stamp().split(".")[0])


def test_same_day_results_are_ordered_by_when_they_were_written_not_file_time(common, tmp_path):
    for commit, written in [("bbbbbbb", "2026-12-02T09:00:00+00:00"), ("aaaaaaa", "2026-12-02T08:00:00+00:00")]:
        (tmp_path / f"toy.test.2026-12-02.{commit}.json").write_text(
            json.dumps({"stamp": f"2026-12-02.{commit}", "written": written}))
    # A fresh checkout's file times say the opposite of the order they were written in.
    os.utime(tmp_path / "toy.test.2026-12-02.bbbbbbb.json", (1, 1))
    (tmp_path / "toy.test.2026-12-01.ccccccc.json").write_text(json.dumps({"stamp": "2026-12-01.ccccccc"}))
    names = [p.name for p in common.result_files(tmp_path, "toy.test")]
    assert names == ["toy.test.2026-12-01.ccccccc.json", "toy.test.2026-12-02.aaaaaaa.json",
                     "toy.test.2026-12-02.bbbbbbb.json"]
    assert common.latest_result(tmp_path, "toy.test")["stamp"] == "2026-12-02.bbbbbbb"
