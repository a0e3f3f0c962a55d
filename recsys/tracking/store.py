"""Where the tracking store is and whether it can be used: shared by the tracker and serving."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from recsys.errors import TrackingError

DEFAULT_URI = "sqlite:///mlflow.db"
NO_TRACK_ENV = "RECSYS_NO_TRACK"
URI_ENV = "MLFLOW_TRACKING_URI"


def tracking_enabled(flag: bool | None = None) -> bool:
    """``--track``/``--no-track`` when given, else on unless ``$RECSYS_NO_TRACK`` is set."""
    if flag is not None:
        return flag
    return os.environ.get(NO_TRACK_ENV, "").strip().lower() in ("", "0", "false", "no", "off")


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return uri or os.environ.get(URI_ENV) or DEFAULT_URI


def metric_key(name: str) -> str:
    """An MLflow-legal metric name: ``recall@20`` becomes ``recall_at_20``."""
    return name.replace("@", "_at_")


def local_store_path(uri: str) -> Path | None:
    """The database file or folder of a SQLite or file store, as the URI writes it (relative
    paths stay relative); None for a server or an in-memory database."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        return None if not path or path == ":memory:" else Path(path)
    if parsed.scheme in ("file", ""):
        return Path(parsed.path if parsed.scheme == "file" else uri)
    return None


def check_store(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, naming ``uri``, when the store cannot be reached or written.

    HTTP servers are asked for ``/health`` with a short timeout (MLflow's own client
    retries for minutes); SQLite and file stores need a writable directory.
    """
    parsed = urllib.parse.urlparse(uri)
    hint = "start the server, fix --tracking-uri or $MLFLOW_TRACKING_URI, or pass --no-track"
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code not in (401, 403):
                return  # something answers; MLflow's client reports what else is wrong
            raise TrackingError(f"tracking server {uri} answered HTTP {exc.code}; {hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"tracking server {uri} is unreachable ({reason}); {hint}") from None
    elif parsed.scheme in ("sqlite", "file", ""):
        path = local_store_path(uri)
        if path is None:
            return
        if parsed.scheme == "sqlite":
            directory = path.parent
        else:
            directory = path if path.exists() else path.parent
        directory = directory if str(directory) else Path(".")
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingError(f"tracking store {uri}: directory {directory} does not exist or is not writable; {hint}")
