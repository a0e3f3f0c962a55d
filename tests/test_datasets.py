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
