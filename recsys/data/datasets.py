"""Public data sets, fetched from their publishers into a local cache with checksum checks.

``download("ml-100k")`` returns the path of the extracted folder; ``load("ml-100k")``
returns its interactions. The cache is ``$RECSYS_DATA`` or ``~/.cache/recsys``. Nothing is
redistributed: the archives come from the publishers' own URLs, and each is checked
against the checksum its publisher states (GroupLens' ``.md5`` files) before it is
unpacked. ``RECSYS_DATASETS_URL`` replaces the publishers' base URL (a mirror, or a local
server in tests). ``add(name, path)`` registers an archive (or, for data sets published as
plain files, a folder of them) downloaded by hand, with the same checks.
"""

from __future__ import annotations

import hashlib
import os
import re
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


# The checksum of an archive its publisher updates in place: read from its ``.md5`` file.
PUBLISHED = "md5:published"


@dataclass(frozen=True)
class Dataset:
    name: str
    base_url: str
    archive: str | None  # a zip; None for data sets published as plain files (``files``)
    checksum: str  # "md5:<hex>", "sha256:<hex>" or PUBLISHED
    folder: str  # the folder the archive unpacks to
    interactions: str  # the interaction file inside it
    description: str
    license: str
    files: tuple[tuple[str, str], ...] = ()  # (name, checksum) of plain files, fetched into ``folder``
    data_format: str = "auto"  # how load() reads the interactions ("lists": adjacency lists)

    @property
    def url(self) -> str:
        return self.url_of(self.archive or "")

    def url_of(self, name: str) -> str:
        base = os.environ.get(MIRROR_ENV, self.base_url).rstrip("/")
        return f"{base}/{name}"


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
        Dataset("ml-latest-small", _GROUPLENS_ML, "ml-latest-small.zip", PUBLISHED, "ml-latest-small",
                "ratings.csv", "MovieLens latest small: about 100,000 ratings (0.5-5) of 9,700 movies by 610 users "
                "(updated by GroupLens from time to time)", _GROUPLENS_TERMS),
        # The KGAT authors' own split (Wang et al., KDD 2019), adjacency lists; the checksums
        # are those of the copies measured in experiments/quality.
        Dataset("amazon-book",
                "https://raw.githubusercontent.com/xiangwang1223/knowledge_graph_attention_network/master/Data/amazon-book",
                None, "", "amazon-book", "train.txt",
                "Amazon-book, KGAT's split: 652,514 training + 193,920 test pairs of 70,679 users, 24,915 books",
                "Amazon review data terms (McAuley et al.); the split is the KGAT authors'",
                files=(("train.txt", "sha256:4d10106bb06a77e11df660429903c0067aeb85b86431807836b0d8b7edc30c38"),
                       ("test.txt", "sha256:f47eff9d35fb95c07d74251a991478a84095ce6c5969b0dafcb4afe99fc716ec")),
                data_format="lists"),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys")


def _lookup(name: str) -> Dataset:
    if name not in DATASETS:
        raise RecsysError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


def _published_checksum(dataset: Dataset) -> str:
    """The md5 the publisher states beside an archive it updates in place (``<archive>.md5``)."""
    assert dataset.archive is not None
    url = dataset.url_of(dataset.archive + ".md5")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            text = response.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise RecsysError(f"cannot read the publisher's checksum {url}: {exc}") from None
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise RecsysError(f"{url}: no md5 checksum in it")
    return "md5:" + found.group(0).lower()


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
        if dataset.archive is None:
            for file, _ in dataset.files:
                _fetch(dataset.url_of(file), Path(tmp) / file, progress)
            return _install(dataset, Path(tmp), target, move=True)
        archive = Path(tmp) / dataset.archive
        _fetch(dataset.url, archive, progress)
        checksum = _published_checksum(dataset) if dataset.checksum == PUBLISHED else dataset.checksum
        return _install(dataset, archive, target, checksum)


def add(name: str, path: str | os.PathLike, *, cache: str | os.PathLike | None = None) -> Path:
    """Register a copy of data set ``name`` downloaded by hand: its archive (a zip) or, for a
    data set published as plain files, a folder holding them. Checked like a download (an
    archive its publisher updates in place is checked for the files it must hold); returns
    the cached folder."""
    dataset = _lookup(name)
    source = Path(path)
    if not source.exists():
        raise RecsysError(f"{source}: no such file or folder")
    if dataset.archive is None and not source.is_dir():
        raise RecsysError(f"{source}: {name} is published as files ({', '.join(f for f, _ in dataset.files)}); "
                          "give the folder that holds them")
    if dataset.archive is not None and not source.is_file():
        raise RecsysError(f"{source}: give the archive {dataset.archive} itself")
    root = Path(cache) if cache is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    checksum = None if dataset.checksum == PUBLISHED else dataset.checksum
    return _install(dataset, source, root / dataset.name, checksum)


def _install(dataset: Dataset, source: Path, target: Path, checksum: str | None = None, move: bool = False) -> Path:
    """Verify ``source`` (an archive, or a folder of plain files) and put it in place as
    ``target`` atomically; a download replaces only an earlier one of the same data set.
    ``move``: the plain files are a download's own (moved); else the user's (copied)."""
    kind = OutputKind(f"{dataset.name} download", directory=True, marker=dataset.folder)
    if dataset.archive is None:
        for file, file_checksum in dataset.files:
            if not (source / file).is_file():
                raise RecsysError(f"{source}: {file} is missing")
            _verify(source / file, file_checksum)
        with atomic_directory(target, kind=kind) as out:
            (out / dataset.folder).mkdir()
            for file, _ in dataset.files:
                (shutil.move if move else shutil.copyfile)(source / file, out / dataset.folder / file)
        return target / dataset.folder
    if checksum is not None:
        _verify(source, checksum)
    with atomic_directory(target, kind=kind) as out:
        _extract(source, out)
        if not (out / dataset.folder / dataset.interactions).is_file():
            raise RecsysError(f"{source.name} does not contain {dataset.folder}/{dataset.interactions}")
    return target / dataset.folder


def load(name: str, **kwargs: object) -> Interactions:
    """The interactions of data set ``name``, downloading it first if needed."""
    from recsys.data.io import read_interactions

    folder = download(name, **kwargs)  # type: ignore[arg-type]
    dataset = _lookup(name)
    return read_interactions(folder / dataset.interactions, data_format=dataset.data_format)  # type: ignore[arg-type,return-value]


def remove(name: str, cache: str | os.PathLike | None = None) -> bool:
    """Delete a cached data set; True if there was one."""
    target = (Path(cache) if cache is not None else cache_dir()) / _lookup(name).name
    if target.exists():
        shutil.rmtree(target)
        return True
    return False
