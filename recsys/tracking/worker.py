"""MLflow in a process of its own, so that recording a run costs the job almost nothing.

Importing MLflow, opening a SQLite store and logging the pyfunc model take about 4 s of
CPU (experiments/speed, "Fixed costs"), which a job in one process pays on top of its own
work. :class:`RecorderProcess` starts ``python -m recsys.tracking.worker``, which does all
of that while the job starts up, reads its data and trains on the other CPUs (it opens the
store, creating a new one, only when the job's run starts), and hands it the job's calls in
order, one JSON line each. Calls return at once, except those that name files
the job may remove afterwards (a directory, the model), which wait until they are logged;
a run's MLflow id is waited for when asked. The job waits for the process when its run
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
import signal
import subprocess
import sys
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
        threading.Thread(target=_read_replies, args=(self._process.stdout, self._replies),
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

    def call(self, token: int, method: str, *args: Any, wait: bool = False) -> None:
        self._sequence += 1
        sequence = self._sequence if wait else None
        self._send({"op": "call", "token": token, "method": method, "args": list(args), "seq": sequence})
        if wait:
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
        if self.error is not None:
            raise TrackingError(self.error)


def _read_replies(stream: Any, replies: queue.Queue[Any]) -> None:
    for line in stream:
        replies.put(json.loads(line))
    replies.put(_CLOSED)


def _hang_up(process: subprocess.Popen) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


def serve(config: dict[str, Any], requests: Any, reply: Any) -> None:
    """The worker's loop: open the store, then carry out each request line until ``close``."""
    from recsys.tracking.recorder import CALLS, MlflowRecorder

    recorder = MlflowRecorder(config["uri"], config["experiment"])

    def send(**message: Any) -> None:
        reply.write(json.dumps(message) + "\n")
        reply.flush()

    # Loaded before the first request; the store itself is opened (and a new one created) only
    # when a run starts, so a job that fails before its run leaves no store behind.
    import mlflow

    if recorder.uri.startswith("sqlite:"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    if config.get("log_models"):
        warm_up()

    error: str | None = None
    run_ids: dict[int, str] = {}
    open_tokens: list[int] = []
    for line in requests:
        request = json.loads(line)
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
            continue
        try:
            if op == "start":
                recorder.open()
                run_id = recorder.start(request["name"], request["kind"], request["tags"], request["nested"])
                run_ids[request["token"]] = run_id
                open_tokens.append(request["token"])
                send(started=request["token"], run_id=run_id)
            elif op == "call" and request["method"] in CALLS:
                getattr(recorder, request["method"])(run_ids[request["token"]], *request["args"])
                if request["seq"] is not None:
                    send(ack=request["seq"])
            else:
                raise ValueError(f"unknown request {op!r}")
        except TrackingError as exc:
            error = str(exc)
            send(error=error)
        except Exception as exc:  # MLflow's, named for the job to report
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = f"tracking store {recorder.uri}: {request.get('method', op)} failed: {first[:500]}"
            send(error=error)
    else:
        # The job's process is gone without ending its runs.
        for _ in reversed(open_tokens):
            with contextlib.suppress(Exception):  # nobody is left to tell
                recorder.end("KILLED", "the job's process ended without ending its run")
    send(closed=True)


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
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
