"""Data set downloads against a local HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial

import pytest

from recsys.data import datasets
from recsys.errors import RecsysError


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fixture_zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def install(monkeypatch, root, url, payload: bytes, checksum: str | None = None):
    (root / "ml-100k.zip").write_bytes(payload)
    digest = checksum or "md5:" + hashlib.md5(payload).hexdigest()
    real = datasets.DATASETS["ml-100k"]
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", datasets.Dataset(**{**real.__dict__, "checksum": digest}))
    monkeypatch.setenv(datasets.MIRROR_ENV, url)


def test_download_verifies_unpacks_caches_and_loads(server, tmp_path, monkeypatch):
    root, url = server
    install(monkeypatch, root, url, fixture_zip({"ml-100k/u.data": "1\t10\t5\t100\n2\t10\t3\t200\n"}))
    folder = datasets.download("ml-100k", cache=tmp_path / "cache")
    assert (folder / "u.data").is_file()
    (root / "ml-100k.zip").unlink()  # a second call must not need the server
    data = datasets.load("ml-100k", cache=tmp_path / "cache")
    assert data.nnz == 2 and data.feedback == "rating"


def test_checksum_mismatch_keeps_nothing(server, tmp_path, monkeypatch):
    root, url = server
    install(monkeypatch, root, url, fixture_zip({"ml-100k/u.data": "1\t1\t1\t1\n"}), checksum="md5:" + "0" * 32)
    with pytest.raises(RecsysError, match="checksum"):
        datasets.download("ml-100k", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "ml-100k").exists()


def test_zip_slip_is_refused(server, tmp_path, monkeypatch):
    root, url = server
    install(monkeypatch, root, url, fixture_zip({"../evil.txt": "x", "ml-100k/u.data": "1\t1\t1\t1\n"}))
    with pytest.raises(RecsysError, match="outside"):
        datasets.download("ml-100k", cache=tmp_path / "cache")
    assert not (tmp_path / "evil.txt").exists()


def test_unreachable_server_and_unknown_name(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(RecsysError, match="cannot download"):
        datasets.download("ml-100k", cache=tmp_path)
    with pytest.raises(RecsysError, match="unknown data set"):
        datasets.download("ml-9000", cache=tmp_path)


def test_every_data_set_of_the_benchmarks_is_listed():
    assert {"ml-100k", "ml-latest-small", "lastfm-2k", "amazon-book"} <= set(datasets.DATASETS)


def plain_files(monkeypatch, files: dict[str, bytes], wrong: str | None = None):
    """amazon-book published as plain files whose checksums are those of ``files``."""
    real = datasets.DATASETS["amazon-book"]
    sums = tuple((name, "sha256:" + ("0" * 64 if name == wrong else hashlib.sha256(body).hexdigest()))
                 for name, body in files.items())
    monkeypatch.setitem(datasets.DATASETS, "amazon-book", datasets.Dataset(**{**real.__dict__, "files": sums}))


LISTS = {"train.txt": b"0 1 2\n1 2\n", "test.txt": b"0 3\n1 0\n"}


def test_plain_file_data_sets_download_and_add_from_a_folder(server, tmp_path, monkeypatch):
    root, url = server
    for name, body in LISTS.items():
        (root / name).write_bytes(body)
    plain_files(monkeypatch, LISTS)
    monkeypatch.setenv(datasets.MIRROR_ENV, url)
    folder = datasets.download("amazon-book", cache=tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "train.txt"]
    assert datasets.load("amazon-book", cache=tmp_path / "cache").nnz == 3  # adjacency lists, read as such
    # The same files downloaded by hand: added from their folder, with the same checks.
    added = datasets.add("amazon-book", root, cache=tmp_path / "other")
    assert (added / "train.txt").read_bytes() == LISTS["train.txt"]
    plain_files(monkeypatch, LISTS, wrong="test.txt")
    with pytest.raises(RecsysError, match="checksum"):
        datasets.add("amazon-book", root, cache=tmp_path / "third")
    assert not (tmp_path / "third" / "amazon-book").exists()
    with pytest.raises(RecsysError, match="give the folder"):
        datasets.add("amazon-book", root / "train.txt", cache=tmp_path / "third")


def test_an_archive_updated_in_place_is_checked_against_the_published_md5(server, tmp_path, monkeypatch):
    root, url = server
    payload = fixture_zip({"ml-latest-small/ratings.csv": "userId,movieId,rating,timestamp\n1,10,4.5,100\n"})
    (root / "ml-latest-small.zip").write_bytes(payload)
    (root / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {hashlib.md5(payload).hexdigest()}\n")
    monkeypatch.setenv(datasets.MIRROR_ENV, url)
    assert datasets.load("ml-latest-small", cache=tmp_path / "cache").nnz == 1
    (root / "ml-latest-small.zip.md5").write_text("0" * 32 + "  ml-latest-small.zip\n")
    with pytest.raises(RecsysError, match="checksum"):
        datasets.download("ml-latest-small", cache=tmp_path / "fresh")
    # Added by hand (no network): checked for the files it must hold.
    (tmp_path / "hand.zip").write_bytes(payload)
    assert (datasets.add("ml-latest-small", tmp_path / "hand.zip", cache=tmp_path / "hand") / "ratings.csv").is_file()
    (tmp_path / "other.zip").write_bytes(fixture_zip({"something/else.csv": "a\n"}))
    with pytest.raises(RecsysError, match=r"does not contain ml-latest-small/ratings\.csv"):
        datasets.add("ml-latest-small", tmp_path / "other.zip", cache=tmp_path / "other")


def test_datasets_add_through_the_cli(tmp_path):
    from cli_invoke import run

    payload = fixture_zip({"ml-100k/u.data": "1\t10\t5\t100\n"})
    (tmp_path / "ml-100k.zip").write_bytes(payload)
    # The real publisher's checksum: this hand-made archive is refused, nothing cached.
    r = run("datasets", "add", "ml-100k", tmp_path / "ml-100k.zip", "--cache", tmp_path / "cache", code=2)
    assert "checksum" in r.output and not (tmp_path / "cache" / "ml-100k").exists()
    assert "ml-latest-small" in run("datasets", "list").stdout
