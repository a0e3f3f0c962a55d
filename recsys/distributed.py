"""Data-parallel training over processes: the process group, and the few collective
operations the epoch loop and the trainers call.

A job joins a group in one of two ways, and trains the same way in both:

- ``recsys train --nproc N`` (:func:`group` with ``nproc``): this process is rank 0 and
  starts ranks 1..N-1 on this machine, each with the environment torchrun would give it;
- under ``torchrun --nnodes ... --nproc-per-node ...`` (its ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): every process is a whole command and
  joins from that environment.

gloo on the CPU, NCCL on GPUs (each rank on ``cuda:LOCAL_RANK``). Every process reads the
same data, splits it and starts the model from the same seed; each epoch they draw the same
permutation of the training pairs and each trains on its own equal-sized part
(:func:`shard`); gradients are averaged over the processes (DDP's rule), so the replicas stay
identical and the effective batch is N x ``batch_size``. Rank 0 alone validates, evaluates,
saves, checkpoints and reports; the others are quiet.

A failure on any rank ends the job: a process that dies closes its connections and the
others' next collective fails at once (:class:`ProcessFailed` says which rank and why, when
this process started it); a process that hangs is given up after :data:`TIMEOUT`.

With no group (one process, the default) every function here returns its input unchanged
and costs nothing: the single-process path is the code it always was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from recsys.device import THREADS_ENV, resolve_device, shared_threads
from recsys.errors import ConfigError, RecsysError

if TYPE_CHECKING:
    import torch

# A collective waiting longer than this ends the job: a rank that hangs (a dead one is
# noticed at once). Long enough for rank 0 to validate an epoch while the others wait.
TIMEOUT = dt.timedelta(minutes=30)
# The processes --nproc starts must join within this (they import torch and connect).
JOIN_TIMEOUT = dt.timedelta(minutes=5)
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class ProcessFailed(RecsysError):
    """Another process of a data-parallel job failed or stopped; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the group: its rank among ``size``, its rank and the number
    of processes on this machine, its device and the backend."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    device: torch.device
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0


_world: World | None = None


def current() -> World | None:
    """The group this process trains in, or None (one process)."""
    return _world


def is_main() -> bool:
    """True in rank 0 and in a process on its own: the one that evaluates, saves and reports."""
    return _world is None or _world.rank == 0


# -- joining ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Launch:
    """Where torchrun (or ``--nproc``) placed this process, from its environment."""

    rank: int
    size: int
    local_rank: int
    local_size: int


def launched() -> Launch | None:
    """The torchrun environment of this process, or None when it runs on its own (no
    ``WORLD_SIZE``, or a world of one)."""
    if "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but not {', '.join(missing)}: start data-parallel runs with "
                          "torchrun (or recsys train --nproc N)")
    try:
        size, rank, local_rank = (int(os.environ[k]) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be whole numbers") from None
    if size <= 1:
        return None
    if not (0 <= rank < size and 0 <= local_rank < local_size):
        raise ConfigError(f"RANK {rank} and LOCAL_RANK {local_rank} do not fit WORLD_SIZE {size} "
                          f"and LOCAL_WORLD_SIZE {local_size}")
    return Launch(rank, size, local_rank, local_size)


def processes(nproc: int | None) -> int:
    """How many processes a job asking for ``nproc`` (None: not asked) trains in: ``nproc``,
    torchrun's ``WORLD_SIZE``, or 1. Refuses a count below 1, and ``--nproc`` under torchrun."""
    if nproc is not None and (isinstance(nproc, bool) or int(nproc) < 1):
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    launch = launched()
    if launch is not None and nproc is not None and nproc > 1:
        raise ConfigError("this process was started by torchrun, which starts the processes itself "
                          "(--nproc-per-node); drop --nproc")
    return launch.size if launch is not None else int(nproc or 1)


def group(nproc: int | None, device: str, worker: Callable[..., Any] | None = None,
          args: Sequence[Any] = ()) -> contextlib.AbstractContextManager[World | None]:
    """The group a job trains in, as a context manager yielding this process's
    :class:`World` (None: one process, nothing to set up).

    ``nproc`` > 1: this process becomes rank 0 and starts ranks 1..nproc-1 on this machine,
    each running ``worker(*args)`` (a module-level function: they are fresh interpreters)
    inside the group. Under torchrun: joins from the environment. At the block's end the
    group is left and the started processes are waited for; a failure of theirs is raised.
    """
    if nproc is not None and nproc > 1:
        return _start(int(nproc), device, worker, tuple(args))
    launch = launched()
    if launch is not None:
        return _joined(launch, device)
    return contextlib.nullcontext(None)


@contextlib.contextmanager
def _joined(launch: Launch, device: str) -> Iterator[World]:
    """Join the group torchrun set up; the CPUs of this machine shared among its processes."""
    with shared_threads(launch.local_size), _member(launch, device) as world:
        try:
            yield world
        except RecsysError:
            raise
        except Exception as exc:
            if _lost_contact(exc):
                raise ProcessFailed(f"rank {world.rank}: lost contact with the job's other processes (one failed "
                                    f"or was stopped; its own output says why): {_first_line(exc)}") from None
            raise


@contextlib.contextmanager
def _member(launch: Launch, device: str, store: Any = None) -> Iterator[World]:
    """This process in the group (``store``: the rendezvous store, else torchrun's ``env://``)."""
    import torch
    import torch.distributed as dist

    global _world
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        _check_gpus(launch.local_size)
        torch.cuda.set_device(launch.local_rank)  # "cuda" means this rank's GPU from here on
        resolved = torch.device("cuda", launch.local_rank)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    options: dict[str, Any] = {"init_method": "env://"} if store is None else {"store": store}
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.size, timeout=TIMEOUT, **options)
    _world = World(launch.rank, launch.size, launch.local_rank, launch.local_size, resolved, backend)
    try:
        yield _world
    finally:
        _world = None
        dist.destroy_process_group()


def _check_gpus(processes: int) -> None:
    """Refuse more processes on this machine than it has GPUs (NCCL: one GPU per process)."""
    import torch

    count = torch.cuda.device_count()
    if processes > count:
        raise ConfigError(f"{processes} processes on this machine need {processes} GPUs (one each); torch sees "
                          f"{count}. Start fewer, or train on the CPU (--device cpu)")


# -- --nproc: rank 0 starts the others ----------------------------------------------------
@dataclasses.dataclass
class _Worker:
    rank: int
    process: Any  # multiprocessing.Process
    reports: Any  # the receiving end of its pipe: (kind, message) when it failed

    def failure(self, wait: float = 0.0) -> tuple[str, str] | None:
        """Its report, or what its exit says when it died without one; None while it runs."""
        if self.reports.poll(wait):
            with contextlib.suppress(EOFError, OSError):
                return self.reports.recv()
        code = self.process.exitcode
        if code is None or code == 0:
            return None
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        return "bug", f"exited with {how} without a message"


@contextlib.contextmanager
def _start(nproc: int, device: str, worker: Callable[..., Any] | None, args: tuple[Any, ...]) -> Iterator[World]:
    import multiprocessing

    import torch.distributed as dist

    if worker is None:
        raise ValueError("starting processes needs the worker they run")
    if launched() is not None:
        raise ConfigError("this process was started by torchrun; drop --nproc")
    if resolve_device(device).type == "cuda":
        _check_gpus(nproc)  # before any process starts
    context = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    with shared_threads(nproc) as share:
        store = dist.TCPStore("127.0.0.1", 0, nproc, is_master=True, timeout=JOIN_TIMEOUT, wait_for_workers=False)
        try:
            for rank in range(1, nproc):
                env = {"RANK": rank, "WORLD_SIZE": nproc, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": nproc,
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": store.port, THREADS_ENV: share}
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_worker_main, name=f"recsys-rank-{rank}", daemon=True,
                                          args=({k: str(v) for k, v in env.items()}, device, worker, args, send))
                process.start()
                send.close()
                workers.append(_Worker(rank, process, receive))
            _wait_until_joined(store, workers)
            with _member(Launch(0, nproc, 0, nproc), device, store) as world:
                try:
                    yield world
                except RecsysError:
                    raise  # this process's own error (the others, reading the same data, share it)
                except Exception as exc:
                    failed = _first_failure(workers, wait=5.0)
                    if failed is not None:
                        raise failed from None
                    if _lost_contact(exc):
                        raise ProcessFailed(f"rank 0: lost contact with the other processes: {_first_line(exc)}") from None
                    raise
            for each in workers:  # they leave after training; rank 0 has evaluated and saved meanwhile
                each.process.join(JOIN_TIMEOUT.total_seconds())
            failed = _first_failure(workers)
            if failed is not None:
                raise failed
        finally:
            for each in workers:
                if each.process.is_alive():
                    each.process.terminate()
                    each.process.join(5)
                if each.process.is_alive():
                    each.process.kill()
                    each.process.join()


def _wait_until_joined(store: Any, workers: list[_Worker]) -> None:
    """Wait for every started process to reach the rendezvous, checking that each still runs
    (a process that fails before joining would otherwise leave rank 0 waiting)."""
    deadline = time.monotonic() + JOIN_TIMEOUT.total_seconds()
    while store.add("recsys/joined", 0) < len(workers):
        failed = _first_failure(workers)
        if failed is not None:
            raise failed
        if time.monotonic() > deadline:
            raise ProcessFailed(f"the processes started by --nproc did not join within {JOIN_TIMEOUT}")
        time.sleep(0.05)


def _first_failure(workers: list[_Worker], wait: float = 0.0) -> Exception | None:
    """The first started process's failure as the exception to raise: :class:`ProcessFailed`
    for an error its user can act on, RuntimeError for a bug. ``wait``: how long to wait for
    a report from a process whose connection closed (it sends one before it exits)."""
    deadline = time.monotonic() + wait
    while True:
        for each in workers:
            found = each.failure()
            if found is not None:
                kind, message = found
                if kind == "user":
                    return ProcessFailed(f"rank {each.rank}: {message}")
                return RuntimeError(f"rank {each.rank} failed: {message}")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _worker_main(env: dict[str, str], device: str, worker: Callable[..., Any], args: tuple[Any, ...], report: Any) -> None:
    """A process started by ``--nproc``: join the group as torchrun's processes do, run
    ``worker(*args)``, and report a failure to rank 0 (which prints it); nothing else is
    printed. Ctrl-C is rank 0's to handle: it stops every process at the end of the epoch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    quiet = open(os.devnull, "w")  # noqa: SIM115 (the process's own output, for its whole life)
    os.dup2(quiet.fileno(), sys.stdout.fileno())
    os.dup2(quiet.fileno(), sys.stderr.fileno())
    code = 0
    try:
        import torch.distributed as dist

        launch = launched()
        assert launch is not None
        store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), launch.size, is_master=False,
                              timeout=JOIN_TIMEOUT)
        store.add("recsys/joined", 1)
        with _member(launch, device, store):
            try:
                worker(*args)
            except BaseException as exc:  # reported before the group closes: rank 0 sees it first
                code = _report(report, exc)
    except BaseException as exc:
        code = code or _report(report, exc)
    finally:
        report.close()
    os._exit(code)


def _report(report: Any, exc: BaseException) -> int:
    with contextlib.suppress(OSError, BrokenPipeError):
        if isinstance(exc, RecsysError):
            report.send(("user", str(exc)))
        else:
            report.send(("bug", "".join(traceback.format_exception_only(type(exc), exc)).strip()
                         + "\n" + "".join(traceback.format_tb(exc.__traceback__))))
    return 2 if isinstance(exc, RecsysError) else 1


def _lost_contact(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another process went away or hung."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "Connection closed", "Connection reset", "NCCL", "Timed out"))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- what the loop and the trainers call --------------------------------------------------
def shard_size(n: int) -> int:
    """The entries each process trains on per epoch when the group shares ``n`` (``n`` alone)."""
    return n if _world is None else math.ceil(n / _world.size)


def shard(order: torch.Tensor) -> torch.Tensor:
    """This process's part of ``order``, the epoch's permutation that every process drew
    alike: equal-sized contiguous parts (the permutation extended by its first entries up to
    a multiple of the group's size, as torch's DistributedSampler pads), so that every
    process takes the same number of steps of the same sizes. ``order`` itself alone."""
    world = _world
    if world is None:
        return order
    per = shard_size(len(order))
    if per * world.size != len(order):
        import torch

        order = order[torch.arange(per * world.size, device=order.device) % len(order)]
    return order[world.rank * per:(world.rank + 1) * per]


def mean(total: torch.Tensor) -> float:
    """``total`` averaged over the processes (a figure such as an epoch's loss), as a float."""
    world = _world
    if world is None:
        return float(total)
    import torch.distributed as dist

    total = total.detach().clone()
    dist.all_reduce(total)
    return float(total) / world.size


def agree(stop: bool, signum: int | None) -> tuple[bool, int | None]:
    """Whether every process stops after this epoch, and on which signal: any process's
    reason (rank 0's validation, a callback, a signal one of them received) is everyone's,
    so that they leave the loop together."""
    world = _world
    if world is None:
        return stop, signum
    import torch
    import torch.distributed as dist

    flags = torch.tensor([int(stop), signum or 0], device=world.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), int(flags[1]) or None


def check_same(value: str, what: str) -> None:
    """Refuse to train when the processes disagree on ``value`` (``what`` names it): every
    process must read the same data with the same settings."""
    world = _world
    if world is None:
        return
    import torch.distributed as dist

    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    differ = [rank for rank, v in enumerate(values) if v != values[0]]
    if differ:
        raise ConfigError(f"the processes disagree on {what} (rank {differ[0]} differs from rank 0): every "
                          "process must read the same files with the same settings")


def gather_rows(indices: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's ``(indices, gradient rows)`` of an embedding table, concatenated in
    rank order, the gradients divided by the number of processes (DDP's averaging): applied
    alike by every process's lazy optimizer, they keep the replicas identical while sending
    only the rows a step touched, never the table. Equal sizes on every process (the shards
    are, see :func:`shard`). Alone: the arguments unchanged."""
    world = _world
    if world is None:
        return indices, grad
    import torch.distributed as dist

    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.12
    every = indices.new_empty((world.size * len(indices),))
    gather(every, indices.contiguous())
    rows = grad.new_empty((world.size * grad.shape[0], *grad.shape[1:]))
    gather(rows, grad.contiguous())
    return every, rows.div_(world.size)


def data_parallel(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel (gradients averaged over the processes
    during the backward pass, the weights broadcast from rank 0 first); alone, ``module``."""
    world = _world
    if world is None:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def resync(*tensors: torch.Tensor) -> None:
    """Copy rank 0's ``tensors`` to every process, on GPUs only: there index_add_'s atomic
    adds sum in any order, so replicas could drift by rounding; on the CPU they are
    identical by construction and nothing is sent."""
    world = _world
    if world is None or world.device.type != "cuda":
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.broadcast(tensor, src=0)


def describe(world: World | None) -> dict[str, Any] | None:
    """What a run records of its group: processes, backend (None alone)."""
    return None if world is None else {"processes": world.size, "backend": world.backend,
                                       "per_machine": world.local_size}
