"""Safe, portable artifacts: atomic writes, output locks, pickle-free arrays, checked metadata.

Every file or directory the toolkit produces is written under a temporary name in the
same folder and renamed into place at the end, so a run killed at any point leaves the
previous complete artifact or none. Two runs aiming at the same output path do not
interleave: the second is refused with a clear message while the first holds the lock.
An output replaces only an earlier output of the same kind (:func:`check_output`): never a
folder of the user's own files, an input of the run, or the working directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ModelFormatError, RecsysError

_TMP_MARK = ".recsys-tmp-"
# Fault injection for the crash-safety tests: when this variable names a point below, the
# process SIGKILLs itself there, exactly as an out-of-memory kill or a power cut would.
CRASH_ENV = "RECSYS_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, hard, if ``$RECSYS_CRASH_AT`` names this point (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, so that it replaces only an earlier output of the same kind.

    A directory kind names the file every such directory holds (``model.json``), what that
    file must say (``recognise``, applied to it: another program's ``model.json`` is not
    ours) and, where it is fixed, the only names it holds; a file kind recognises an earlier
    file of its own (a table by its header, a config by its comment).
    An empty directory, or a path that does not exist, may always be written.
    """

    name: str
    directory: bool = False
    marker: str | None = None
    names: frozenset[str] | None = None
    recognise: Callable[[Path], bool] | None = None


def check_output(path: str | os.PathLike, kind: OutputKind, inputs: Iterable[Any] = ()) -> Path:
    """Refuse (exit 2, before any work) an output that would destroy something other than an
    earlier output of ``kind``: a directory of other files, a file of another kind, a
    directory given for a file, the working directory or one above it, or one of ``inputs``
    (paths the run reads; other values are ignored)."""
    target = Path(path)
    resolved = target.resolve()
    advice = f"give a new path (or an earlier {kind.name}) instead"
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise RecsysError(f"{target}: is the working directory (or above it); {advice}")
    for given in _flat(inputs):
        if not isinstance(given, str | os.PathLike) or "://" in os.fspath(given):
            continue
        source = Path(given).resolve()
        if source == resolved or (kind.directory and resolved in source.parents):
            raise RecsysError(f"{target}: would overwrite {given}, which this run reads; {advice}")
    if not target.exists() and not target.is_symlink():
        return target
    if kind.directory:
        if not target.is_dir():
            raise RecsysError(f"{target}: exists and is not a directory; {advice}")
        names = sorted(p.name for p in target.iterdir())
        foreign = names if kind.marker not in names else [n for n in names if kind.names is not None and n not in kind.names]
        if names and not foreign and kind.recognise is not None and not _recognised(kind.recognise, target / str(kind.marker)):
            foreign = [str(kind.marker)]  # another program's file of the same name
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise RecsysError(f"{target}: holds other files ({shown}) and is not a {kind.name}; "
                              f"the output replaces the directory as a whole, so {advice}")
        return target
    if target.is_dir():
        raise RecsysError(f"{target}: is a directory; a {kind.name} is a file, so give a file path")
    if kind.recognise is None or not _recognised(kind.recognise, target):
        raise RecsysError(f"{target}: exists and is not a {kind.name} written by recsys; {advice}")
    return target


def _flat(values: Iterable[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list | tuple):
            yield from _flat(value)
        else:
            yield value


def _recognised(recognise: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(recognise(path))
    except (OSError, ValueError):
        return False


def starts_with(text: str, limit: int = 4096) -> Callable[[Path], bool]:
    """A file kind recognised by ``text`` within its first ``limit`` bytes."""
    needle = text.encode()
    return lambda path: needle in path.open("rb").read(limit)


def json_with_keys(keys: Iterable[str]) -> Callable[[Path], bool]:
    """A JSON object recognised by holding all of ``keys``."""
    wanted = set(keys)

    def recognise(path: Path) -> bool:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(obj, dict) and wanted <= obj.keys()

    return recognise


def json_format(name: str) -> Callable[[Path], bool]:
    """A JSON metadata file recognised by its ``"format"`` (``"recsys-model"``...)."""

    def recognise(path: Path) -> bool:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(obj, dict) and obj.get("format") == name  # "x" or [1] is valid JSON too

    return recognise


def table_with_columns(columns: Iterable[str]) -> Callable[[Path], bool]:
    """A CSV or Parquet table recognised by its leading columns."""
    wanted = list(columns)

    def recognise(path: Path) -> bool:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        else:
            with path.open("r", encoding="utf-8", errors="replace") as fh:
                names = [n.strip().strip("\"") for n in fh.readline().rstrip("\r\n").split(",")]
        return names[: len(wanted)] == wanted

    return recognise


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for writing ``path``; refuse at once if another run holds it.

    The lock is a ``.lock`` file beside the output, locked with ``flock`` so that it is
    released by the kernel even if the holder is killed. Folders created to hold the lock
    are removed again if nothing else was put in them (a failed run leaves nothing behind).
    """
    target = Path(path)
    created = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RecsysError(
                    f"{target}: another recsys run is writing this output right now; "
                    "wait for it to finish or choose another path"
                ) from None
            raise
        # The holder before us unlinks the lock file as it finishes; if we locked that
        # unlinked file, a third run could lock a fresh one beside us. Retry on a new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, lock: bool = True, kind: OutputKind | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` atomically.

    On any exception (or a kill) the temporary file is removed (or left under a hidden
    temporary name, which the next write to ``path`` removes) and ``path`` is untouched.
    ``lock=False``: the caller holds :func:`output_lock` on ``path`` or the folder is private.
    ``kind``: what the file is; an existing file of another kind is refused
    (:func:`check_output`). Without it (files inside a private folder) any file is replaced.
    """
    target = Path(path)
    if target.is_dir():
        raise RecsysError(f"{target}: is a directory; give a file path")
    if kind is not None:
        check_output(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    ctx = output_lock(target) if lock else contextlib.nullcontext()
    with ctx:
        _recover(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{_TMP_MARK}", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o644)
            crash_point("atomic_file.before_replace")
            os.replace(tmp_path, target)
            _fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
            raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, kind: OutputKind, lock: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it takes the place of ``path``, which
    must be new, empty or an earlier directory of ``kind`` (:func:`check_output`).

    An existing directory at ``path`` is swapped with the new one in one atomic step
    (``renameat2(RENAME_EXCHANGE)`` on Linux), then deleted. Where the kernel or file system
    lacks that call, the old one is renamed aside, the new one renamed in, then the old one
    deleted; a kill between those two renames leaves the old directory under a hidden name
    beside ``path``, and the next write to ``path`` puts it back first. Temporary
    directories left by killed runs are removed by the next write to the same ``path``.
    """
    target = Path(path)
    check_output(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    ctx = output_lock(target) if lock else contextlib.nullcontext()
    with ctx:
        _recover(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}", dir=target.parent))
        try:
            yield tmp
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            _fsync_dir(tmp)
            crash_point("atomic_directory.before_replace")
            if target.exists() and _exchange(tmp, target):
                # tmp now holds the previous directory.
                _fsync_dir(target.parent)
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = None
            if target.exists():
                old = target.parent / f".{target.name}{_TMP_MARK}old-{os.getpid()}"
                os.replace(target, old)
                crash_point("atomic_directory.after_aside")
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is unsupported."""
    if os.environ.get("RECSYS_NO_RENAME_EXCHANGE"):  # exercises the fallback in tests
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _recover(target: Path) -> None:
    """Under the output lock: restore a previous directory a killed swap left aside, and
    remove temporary files and directories that killed runs left behind."""
    leftovers = sorted(target.parent.glob(f".{glob.escape(target.name)}{_TMP_MARK}*"))
    for stale in leftovers:
        if stale.name.startswith(f".{target.name}{_TMP_MARK}old-") and not target.exists():
            os.replace(stale, target)
        elif stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays to an uncompressed ``.npz`` (no object arrays: pickle is never needed)."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object; it cannot be saved without pickle")
    with open(path, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`save_arrays`; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing") from None
    except Exception as exc:  # zipfile, numpy format and decompression errors
        raise ModelFormatError(f"{path}: not a readable array file ({exc})") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None


def read_description(
    path: str | os.PathLike, *, format: str, version: int, what: str, where: str | os.PathLike, advice: str = ""
) -> dict[str, Any]:
    """The JSON description of a saved artifact (model, index, checkpoint), checked.

    Refused with :class:`ModelFormatError` unless it is an object whose ``format`` is
    ``format`` and whose ``format_version`` is ``version``; ``what`` names the artifact in
    the message, ``where`` its directory, ``advice`` what the user can do about an old one.
    """
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise ModelFormatError(f"{path}: not a recsys {what} description")
    if meta.get("format_version") != version:
        raise ModelFormatError(
            f"{where}: {what} format version {meta.get('format_version')!r} is not supported "
            f"(this recsys reads version {version}){'; ' + advice if advice else ''}"
        )
    return meta


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def inside(base: str | os.PathLike, name: str) -> Path:
    """``base / name``, refusing names that would escape ``base`` (absolute, ``..``, links)."""
    base_path = Path(base).resolve()
    candidate = (base_path / name).resolve()
    if Path(name).is_absolute() or base_path not in (candidate, *candidate.parents):
        raise ModelFormatError(f"{base}: metadata names a file outside the directory: {name!r}")
    return candidate
