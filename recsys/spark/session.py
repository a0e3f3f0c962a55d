"""The Spark session a job runs in: where (``master``), with which settings, and the clear
message when pyspark or Java is missing.

pyspark is imported here, inside functions, and nowhere outside :mod:`recsys.spark`, so that
``import recsys`` never loads it (an import-linter contract and a test check both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recsys.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
INSTALL = "pip install 'recsys[spark]'"


class SparkUnavailable(ConfigError):
    """pyspark is not installed, or Spark cannot start (no Java)."""


@dataclass(frozen=True)
class SparkSettings:
    """Where a Spark job runs: ``master`` (``local[*]``, ``local[2]``, ``spark://host:7077``,
    ``yarn``, ``k8s://...``) and Spark settings (``spark.executor.memory``: ``"8g"``...), as
    ``--spark-master`` and ``--spark-conf KEY=VALUE`` give them."""

    master: str = DEFAULT_MASTER
    conf: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_flags(cls, master: str | None, conf: Sequence[str] = ()) -> SparkSettings:
        """From the command line's ``--spark-master`` and ``--spark-conf KEY=VALUE`` (repeatable)."""
        pairs: dict[str, str] = {}
        for text in conf:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--spark-conf takes KEY=VALUE (e.g. spark.executor.memory=8g), got {text!r}")
            pairs[key.strip()] = value.strip()
        master = (master or DEFAULT_MASTER).strip()
        if not master:
            raise ConfigError("--spark-master is empty; give local[*], local[N], spark://HOST:PORT, yarn, ...")
        return cls(master, pairs)

    @property
    def local(self) -> bool:
        """Whether the executors run in this process's machine (``local``, ``local[N]``...)."""
        return self.master == "local" or self.master.startswith("local[")

    def describe(self) -> dict[str, Any]:
        """As a run records it."""
        return {"engine": "spark", "spark_master": self.master,
                **{f"spark_conf.{key}": value for key, value in sorted(self.conf.items())}}


ENGINES = ("local", "spark")


def engine_settings(engine: str, master: str | None = None, conf: Sequence[str] = ()) -> SparkSettings | None:
    """The command line's ``--engine``, ``--spark-master`` and ``--spark-conf`` as the
    settings a job takes: None for the local engine, :class:`SparkSettings` for Spark."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; use local or spark")
    if engine == "local":
        if master is not None or conf:
            raise ConfigError("--spark-master and --spark-conf apply to --engine spark")
        return None
    return SparkSettings.from_flags(master, conf)


def local_cores(master: str) -> int:
    """The cores of a local master: ``local`` 1, ``local[N]`` N, ``local[*]`` this machine's."""
    inside = master[len("local["):-1] if master.startswith("local[") else "1"
    inside = inside.split(",")[0].strip()  # local[N, maxFailures]
    if inside == "*":
        return os.cpu_count() or 1
    return int(inside) if inside.isdigit() and int(inside) > 0 else 1


def require_pyspark() -> None:
    """Raise :class:`SparkUnavailable` (one line, exit 2) unless pyspark and Java are there."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable(f"--engine spark needs pyspark, which is not installed: {INSTALL}") from None
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.isfile(os.path.join(java_home, "bin", "java"))) and shutil.which("java") is None:
        raise SparkUnavailable("--engine spark needs Java 17 or later, and there is no `java` on PATH "
                               "(nor a JAVA_HOME); install a JDK (e.g. apt-get install openjdk-17-jre-headless)")


@contextlib.contextmanager
def spark_session(settings: SparkSettings, *, progress: bool = False) -> Iterator[SparkSession]:
    """The active Spark session, or a new one for ``settings`` that is stopped at the end.

    An active session (a notebook's, a test suite's) is used as it is and left running; its
    master and settings are its own. For a local master the Python workers run this
    interpreter (``$PYSPARK_PYTHON`` unless set), so they import the same recsys; on a cluster the
    executors need recsys installed (``--spark-conf spark.archives=...``, see the README).
    """
    require_pyspark()
    # pyspark 4.x warns about pandas 3 on import; recsys moves data through Arrow, not pandas.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = SparkSession.builder.master(settings.master).appName("recsys")
    defaults = {
        "spark.ui.showConsoleProgress": "true" if progress else "false",
        # Arrow moves the factors, ids and top-k lists between the JVM and Python.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if settings.local:
        # Spark's 200 shuffle partitions are sized for clusters; on one machine each is a task
        # of pure overhead (a local[2] split of ml-100k: minutes instead of seconds).
        defaults["spark.sql.shuffle.partitions"] = str(2 * local_cores(settings.master))
        # pyspark starts its Python workers with $PYSPARK_PYTHON (else `python3`, which may
        # lack recsys); a user's own choice wins.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**defaults, **settings.conf}.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say why in one line
        if type(exc).__name__ in ("PySparkRuntimeError", "RuntimeError", "Py4JError", "Py4JNetworkError"):
            raise SparkUnavailable(f"Spark could not start for master {settings.master!r} "
                                   f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                   "check Java 17+ and the master URL") from None
        raise
    # Errors reach the user as one line of ours (or a traceback with --debug), not as JVM logs.
    session.sparkContext.setLogLevel("FATAL")
    try:
        yield session
    finally:
        session.stop()
