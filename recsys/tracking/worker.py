"""MLflow in a process of its own, so that recording a run costs the job almost nothing.

Importing MLflow, opening a SQLite store and logging the pyfunc model take about 4 s of
CPU (experiments/speed, "Fixed costs"), which a job in one process pays on top of its own
work. :class:`RecorderProcess` starts ``python -m recsys.tracking.worker``, which does all
of that while the job starts up, reads its data and trains on the other CPUs (it opens the
store, creating a new one, only when the job's run starts), and hands it the job's calls in
order, one JSON line each. Calls return at once: a directory or model the job may remove
afterwards is handed over as a snapshot of hard links, which the process removes once it
is logged (where links cannot be made, the call waits until it is logged). Calls that
arrive together (an epoch's metrics while the process was busy) are one write. A run's
MLflow id is waited for when asked. The job waits for the process when its run
ends, so the run is complete in the store when the command returns.

A failure in the process (a store that cannot be opened, a call MLflow refuses) is raised
as a :class:`recsys.errors.TrackingError` by the job's next call, or when its run ends.
Ctrl-C and SIGTERM are the job's to handle: the process ignores them, ends the runs the
job ends (``KILLED``), and ends any left open ``KILLED`` if the job's process dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from recsys.errors import TrackingError

_CLOSED = object()


class RecorderProcess:
    """The runs of one job, recorded by MLflow in a worker process (see the module's notes)."""

    def __init__(self, uri: str, experiment: str, *, log_models: bool = True) -> None:
        self.uri = uri
        root = str(Path(__file__).resolve().parents[2])  # the same recsys as this process's
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "recsys.tracking.worker", json.dumps({"uri": uri, "experiment": experiment, "log_models": log_models})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8", bufsize=1,
        )
        self._replies: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=_read_lines, args=(self._process.stdout, self._replies),
                         name="recsys-tracking-replies", daemon=True).start()
        # Dropped unused (a command that failed before its run), the process sees its input end and exits.
        self._hang_up = weakref.finalize(self, _hang_up, self._process)
        self._run_ids: dict[int, str] = {}
        self._acks: set[int] = set()
        self._tokens = 0
        self._sequence = 0
        self.error: str | None = None
        self._closed = False  # the process's stdout has ended
        self._finished = False  # the process said it finished everything sent
        self._owned: list[Path] = []  # snapshots handed to the process, removed by it

    def _take(self, block: bool) -> bool:
        """Take the replies that have come (waiting for one if ``block``); False once the process is gone."""
        while True:
            try:
                reply = self._replies.get(block=block)
            except queue.Empty:
                return True
            block = False
            if reply is _CLOSED:
                self._closed = True
                if self.error is None and not self._finished:
                    code = self._process.wait()
                    self.error = (f"the tracking process for {self.uri} ended unexpectedly (exit status {code}); "
                                  "its messages are above, or pass --no-track")
                return False
            if "closed" in reply:
                self._finished = True
            elif "started" in reply:
                self._run_ids[reply["started"]] = reply["run_id"]
            elif "ack" in reply:
                self._acks.add(reply["ack"])
            elif "error" in reply and self.error is None:
                self.error = reply["error"]

    def _send(self, message: dict[str, Any], *, check: bool = True) -> None:
        if not self._closed:
            self._take(block=False)
        if check and self.error is not None:
            raise TrackingError(self.error)
        if self._closed:
            return
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(message) + "\n")
        except (BrokenPipeError, OSError, ValueError):
            self._take(block=True)
            if check:
                raise TrackingError(self.error or f"the tracking process for {self.uri} ended") from None

    def _wait(self, done: Any) -> None:
        while not done() and self.error is None and not self._closed:
            self._take(block=True)
        if self.error is not None:
            raise TrackingError(self.error)

    def start(self, name: str, kind: str, tags: dict[str, str], nested: bool) -> int:
        token = self._tokens
        self._tokens += 1
        self._send({"op": "start", "token": token, "name": name, "kind": kind, "tags": tags, "nested": nested})
        return token

    def run_id(self, token: int) -> str:
        self._wait(lambda: token in self._run_ids)
        return self._run_ids[token]

    def call(self, token: int, method: str, *args: Any, files: bool = False) -> None:
        """Send a run's call. With ``files``, its first argument is a directory the caller
        may remove, or whose files it may replace (not edit in place), once this returns:
        the process logs a snapshot of it (hard links, which it removes), or, where links
        cannot be made, the call waits until the directory is logged."""
        sequence, owned = None, None
        if files:
            owned = _snapshot(Path(args[0]))
            if owned is None:
                self._sequence += 1
                sequence = self._sequence
            else:
                self._owned.append(owned)
                args = (str(owned / Path(args[0]).name), *args[1:])
        try:
            self._send({"op": "call", "token": token, "method": method, "args": list(args), "seq": sequence,
                        "owned": None if owned is None else str(owned)})
        except BaseException:
            if owned is not None:
                shutil.rmtree(owned, ignore_errors=True)
            raise
        if sequence is not None:
            self._wait(lambda: sequence in self._acks)

    def end(self, token: int, status: str, error: str | None = None) -> None:
        """End the run (best effort: a failed process is reported by :meth:`close`)."""
        self._send({"op": "end", "token": token, "status": status, "error": error}, check=False)

    def close(self) -> None:
        """Wait until everything sent is recorded and the process has exited; raise its failure."""
        self._send({"op": "close"}, check=False)
        self._hang_up()
        # Everything is recorded once the process says so; its own exit is not waited for.
        while not self._finished and not self._closed:
            self._take(block=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=1)  # it exits at once (os._exit), reaped here
        for folder in self._owned:  # gone already, unless the process failed
            shutil.rmtree(folder, ignore_errors=True)
        if self.error is not None:
            raise TrackingError(self.error)


def _snapshot(directory: Path) -> Path | None:
    """A copy of ``directory`` made of hard links (instant, no bytes copied): in the
    system's temporary folder, else in a hidden folder beside it (where the two are on
    different file systems); None where links cannot be made in either, and on Windows,
    where the job could not remove its own files while the process reads their links."""
    if os.name == "nt":
        return None
    for place in (None, directory.parent):
        try:
            folder = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tracking-", dir=place))
        except OSError:
            continue
        try:
            shutil.copytree(directory, folder / directory.name, copy_function=os.link)
        except (OSError, shutil.Error):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        return folder
    return None


def _read_lines(stream: Any, lines: queue.Queue[Any]) -> None:
    """Each JSON line of ``stream`` into ``lines``, then ``_CLOSED``: the job's replies
    thread and the process's requests thread alike."""
    try:
        for line in stream:
            lines.put(json.loads(line))
    finally:  # also if reading fails: the reader must not wait for lines that will not come
        lines.put(_CLOSED)


def _hang_up(process: subprocess.Popen) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


def serve(config: dict[str, Any], requests: Any, reply: Any) -> None:
    """The worker's loop: open the store, then carry out each request line until ``close``."""
    from recsys.tracking.recorder import BATCHED, CALLS, MlflowRecorder

    recorder = MlflowRecorder(config["uri"], config["experiment"])

    def send(**message: Any) -> None:
        with contextlib.suppress(OSError, ValueError):  # the job is gone: nobody is left to tell
            reply.write(json.dumps(message) + "\n")
            reply.flush()

    # Lines are read by a thread of their own, so that the loop can see what is waiting:
    # calls that arrived together are recorded as one batch (one transaction in a SQLite
    # store, not one per epoch), and the pyfunc model is prepared only while nothing waits.
    pending: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_read_lines, args=(requests, pending), name="recsys-tracking-requests",
                     daemon=True).start()

    # Loaded before the first request; the store itself is opened (and a new one created) only
    # when a run starts, so a job that fails before its run leaves no store behind.
    import mlflow

    if recorder.uri.startswith("sqlite:"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    warm = not config.get("log_models")

    error: str | None = None
    run_ids: dict[int, str] = {}
    open_tokens: list[int] = []
    held: dict[str, Any] | None = None  # a request taken while batching, not yet carried out
    request: Any = None
    while True:
        if held is not None:
            request, held = held, None
        else:
            if not warm and pending.empty():
                warm_up()
                warm = True
            request = pending.get()
        if request is _CLOSED:
            break
        op = request["op"]
        if op == "close":
            break
        if op == "end":
            # Ended even after a failure: a run left RUNNING in the store is worse than a lost call.
            if request["token"] in open_tokens:
                open_tokens.remove(request["token"])
                status, reason = request["status"], request["error"]
                if error is not None and status == "FINISHED":
                    status, reason = "FAILED", error  # its record is incomplete
                try:
                    recorder.end(status, reason)
                except Exception as exc:  # reported to the job, which decides
                    if error is None:
                        error = f"tracking store {recorder.uri}: ending the run failed: {exc}"
                        send(error=error)
            continue
        if error is not None:
            _discard(request)
            continue
        method = request.get("method", op)
        try:
            if op == "start":
                recorder.open()
                run_id = recorder.start(request["name"], request["kind"], request["tags"], request["nested"])
                run_ids[request["token"]] = run_id
                open_tokens.append(request["token"])
                send(started=request["token"], run_id=run_id)
            elif op == "call" and method in BATCHED:
                batch, methods, held = gather(request, pending)
                method = ", ".join(sorted(methods))
                recorder.log_batch(run_ids[request["token"]], batch)
            elif op == "call" and method in CALLS:
                try:
                    getattr(recorder, method)(run_ids[request["token"]], *request["args"])
                finally:
                    _discard(request)
                if request["seq"] is not None:
                    send(ack=request["seq"])
            else:
                raise ValueError(f"unknown request {op!r}")
        except TrackingError as exc:
            error = str(exc)
            send(error=error)
        except Exception as exc:  # MLflow's, named for the job to report
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = f"tracking store {recorder.uri}: {method} failed: {first[:500]}"
            send(error=error)
    if request is _CLOSED:
        # The job's process is gone without ending its runs.
        for _ in reversed(open_tokens):
            with contextlib.suppress(Exception):  # nobody is left to tell
                recorder.end("KILLED", "the job's process ended without ending its run")
    while held is not None or not pending.empty():  # snapshots handed over but never logged
        request, held = (held if held is not None else pending.get()), None
        if request is not _CLOSED:
            _discard(request)
    send(closed=True)


def gather(request: dict[str, Any], pending: queue.Queue[Any]) -> tuple[Any, set[str], Any]:
    """The parameters, metrics and tags of ``request`` and of the calls of the same run
    already waiting behind it, as one batch; the method names taken, and the first
    request not taken (None if the queue ran dry)."""
    from recsys.tracking.recorder import BATCHED, Batch

    batch = Batch()
    batch.add(request["method"], *request["args"])
    methods = {request["method"]}
    while not pending.empty():
        following = pending.get()
        if (following is _CLOSED or following["op"] != "call" or following["token"] != request["token"]
                or following["method"] not in BATCHED or not batch.add(following["method"], *following["args"])):
            return batch, methods, following
        methods.add(following["method"])
    return batch, methods, None


def _discard(request: dict[str, Any]) -> None:
    """Remove the snapshot a call handed over (``owned``), logged or not."""
    if request.get("owned"):
        shutil.rmtree(request["owned"], ignore_errors=True)


def warm_up() -> None:
    """What logging the pyfunc model needs, loaded while the job still trains: the pyfunc
    module, and MLflow's map of installed packages (its requirement check, ~0.9 s)."""
    with contextlib.suppress(Exception):  # only a head start: logging does it anyway
        import mlflow.pyfunc  # noqa: F401
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()


def main() -> None:
    # Ctrl-C reaches the whole process group; the job decides how its run ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Replies go to the original stdout; anything MLflow prints goes to stderr.
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(json.loads(sys.argv[1]), sys.stdin, reply)
    # Everything is recorded and the job told so: skip MLflow's exit handlers (seconds of
    # telemetry and thread shutdown the job would otherwise wait for in `close`).
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
