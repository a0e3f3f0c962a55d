"""Public data sets, fetched from their publishers into a local cache with checksum checks.

``download("ml-100k")`` returns the path of the extracted folder; ``load("ml-100k")``
returns its interactions. The cache is ``$RECSYS_DATA`` or ``~/.cache/recsys``. Nothing is
redistributed: the archives come from the publishers' own URLs, and each is checked
against the checksum its publisher states (GroupLens' ``.md5`` files) before it is
unpacked. ``RECSYS_DATASETS_URL`` replaces the publishers' base URL (a mirror, or a local
server in tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recsys.artifacts import OutputKind, atomic_directory
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.progress import progress_bar

CACHE_ENV = "RECSYS_DATA"
MIRROR_ENV = "RECSYS_DATASETS_URL"


@dataclass(frozen=True)
class Dataset:
    name: str
    base_url: str
    archive: str
    checksum: str  # "md5:<hex>" or "sha256:<hex>"
    folder: str  # the folder the archive unpacks to
    interactions: str  # the interaction file inside it
    description: str
    license: str

    @property
    def url(self) -> str:
        base = os.environ.get(MIRROR_ENV, self.base_url).rstrip("/")
        return f"{base}/{self.archive}"


_GROUPLENS_ML = "https://files.grouplens.org/datasets/movielens"
_GROUPLENS_TERMS = "GroupLens terms: research use, no redistribution; see the data set's README"

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("ml-100k", _GROUPLENS_ML, "ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723",
                "ml-100k", "u.data", "MovieLens 100K: 100,000 ratings (1-5) of 1,682 movies by 943 users",
                _GROUPLENS_TERMS),
        Dataset("ml-1m", _GROUPLENS_ML, "ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906",
                "ml-1m", "ratings.dat", "MovieLens 1M: 1,000,209 ratings of 3,706 movies by 6,040 users",
                _GROUPLENS_TERMS),
        Dataset("ml-20m", _GROUPLENS_ML, "ml-20m.zip", "md5:cd245b17a1ae2cc31bb14903e1204af3",
                "ml-20m", "ratings.csv", "MovieLens 20M: 20,000,263 ratings of 27,278 movies by 138,493 users",
                _GROUPLENS_TERMS),
        Dataset("lastfm-2k", "https://files.grouplens.org/datasets/hetrec2011", "hetrec2011-lastfm-2k.zip",
                "sha256:6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
                "hetrec2011-lastfm-2k", "user_artists.dat",
                "HetRec 2011 Last.fm: 92,834 user-artist play counts of 1,892 users",
                "HetRec 2011 terms: non-commercial use; see the data set's readme"),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys")


def _lookup(name: str) -> Dataset:
    if name not in DATASETS:
        raise RecsysError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


def _verify(path: Path, checksum: str) -> None:
    algorithm, _, expected = checksum.partition(":")
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    if h.hexdigest() != expected:
        raise RecsysError(
            f"{path.name}: {algorithm} checksum {h.hexdigest()} does not match the publisher's "
            f"{expected}; the download is corrupt or the file changed upstream (nothing was kept)"
        )


def _fetch(url: str, dest: Path, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            total = response.headers.get("Content-Length")
            with progress_bar(int(total) if total else None, f"downloading {dest.name}", enabled=progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.advance(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise RecsysError(f"cannot download {url}: {exc}") from None


def _extract(archive: Path, into: Path) -> None:
    """Unzip, refusing members that would land outside ``into`` (zip-slip)."""
    root = into.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (root / member.filename).resolve()
                if root not in (target, *target.parents):
                    raise RecsysError(f"{archive.name}: member {member.filename!r} points outside the folder")
            zf.extractall(root)
    except zipfile.BadZipFile as exc:
        raise RecsysError(f"{archive.name}: not a valid zip archive ({exc})") from None


def download(name: str, *, cache: str | os.PathLike | None = None, force: bool = False, progress: bool = False) -> Path:
    """Fetch, verify and unpack data set ``name``; return its folder (cached after the first call).

    The folder appears atomically, only after the checksum matched and unpacking finished.
    """
    dataset = _lookup(name)
    root = Path(cache) if cache is not None else cache_dir()
    target = root / dataset.name
    if (target / dataset.folder / dataset.interactions).is_file() and not force:
        return target / dataset.folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / dataset.archive
        _fetch(dataset.url, archive, progress)
        _verify(archive, dataset.checksum)
        # A download replaces only an earlier download of the same data set.
        kind = OutputKind(f"{dataset.name} download", directory=True, marker=dataset.folder)
        with atomic_directory(target, kind=kind) as out:
            _extract(archive, out)
            if not (out / dataset.folder / dataset.interactions).is_file():
                raise RecsysError(f"{dataset.archive} does not contain {dataset.folder}/{dataset.interactions}")
    return target / dataset.folder


def load(name: str, **kwargs: object) -> Interactions:
    """The interactions of data set ``name``, downloading it first if needed."""
    from recsys.data.io import read_interactions

    folder = download(name, **kwargs)  # type: ignore[arg-type]
    return read_interactions(folder / _lookup(name).interactions)  # type: ignore[return-value]


def remove(name: str, cache: str | os.PathLike | None = None) -> bool:
    """Delete a cached data set; True if there was one."""
    target = (Path(cache) if cache is not None else cache_dir()) / _lookup(name).name
    if target.exists():
        shutil.rmtree(target)
        return True
    return False
