"""The epoch loop, written once.

An iterative model creates a :class:`Trainer` for each fit
(:meth:`IterativeRecommender.create_trainer`, as LensKit's models do): the trainer holds
everything per fit (tensors, optimizer, generators, samplers) and runs
``train_epoch(epoch) -> figures``; its ``export()`` gives the learned arrays, which the
model takes as its learned attributes. The loop owns the progress bar, per-epoch
validation, early stopping with best-epoch restore, callbacks (tracking plugs in here) and
checkpoints; the estimator keeps only its hyper-parameters and what it learned.

Checkpoints (:mod:`recsys.checkpoint`) are written here, once for every model: the loop
saves its own state (epoch, history, validation, global random states) and the trainer's
:meth:`Trainer.state_dict` (factors, optimizer moments, the trainer's own generators), which
:meth:`Trainer.load_state_dict` restores, so that a resumed run continues exactly where it
stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recsys import distributed
from recsys.artifacts import _json_default
from recsys.checkpoint import (
    Checkpoint,
    Checkpointing,
    SignalGuard,
    TrainingInterrupted,
    load_checkpoint,
    save_checkpoint,
    set_random_states,
)
from recsys.data.interactions import Interactions
from recsys.device import ThreadGovernor, pace, resolve_device, step_threads, threads_chosen
from recsys.errors import DIVERGENCE_ADVICE, ConfigError, TrainingDiverged
from recsys.models.base import Recommender
from recsys.progress import progress_bar

if TYPE_CHECKING:
    from recsys.evaluation.validation import Validation


class Callback(Protocol):
    """Receives each epoch's figures; return True from ``on_epoch_end`` to stop training."""

    def on_epoch_end(self, model: Recommender, epoch: int, figures: dict[str, float]) -> bool | None: ...


class Trainer(Protocol):
    """One fit of an iterative model: all its per-fit state, and one epoch of training.

    Made by :meth:`IterativeRecommender.create_trainer` and driven by the shared loop; gone
    when the fit ends, so that nothing per-fit stays on the estimator.
    """

    #: Multiply-adds in one step of its largest operations; the loop gives a CPU trainer
    #: parallel threads only where a step is large enough to share (:func:`step_threads`).
    step_work: float

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run epoch ``epoch`` (counted from 1); return its figures (``loss`` at least, when
        there is one)."""
        ...

    def export(self) -> dict[str, np.ndarray]:
        """The learned arrays as they stand, as numpy copies: ``user_factors`` and
        ``item_factors``, and whatever else the model learns (``user_bias``,
        ``item_bias``, ``global_bias``; two-tower's ``tower.*`` weights). The model takes
        them with :meth:`IterativeRecommender._set_learned`; the loop keeps the best
        epoch's as its early-stopping snapshot."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything that, with the loop's own state, makes the next epoch exact: factors,
        optimizer moments, the trainer's own random generators, as plain arrays (what a
        checkpoint keeps under ``model.*``)."""
        ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (shapes and kinds checked first, see
        :func:`recsys.checkpoint.check_arrays`)."""
        ...

    def finalize(self) -> None:
        """Release what the trainer holds (called once, when the fit ends or fails)."""
        ...


@dataclass
class _LoopState:
    """What the loop carries from epoch to epoch, and a checkpoint keeps: the first epoch to
    run, the best validation (score, epoch, exported arrays) and the epochs since it."""

    first: int = 1
    best: tuple[float, int, dict[str, Any]] | None = None
    stale: int = 0


class IterativeRecommender(Recommender):
    """A model trained epoch by epoch through the shared loop (:meth:`_fit`), by the
    :class:`Trainer` that :meth:`create_trainer` makes."""

    epochs: int
    device: str
    trains_by_epoch = True

    @abstractmethod
    def create_trainer(self, data: Interactions, params: Mapping[str, Any]) -> Trainer:
        """A trainer for one fit on ``data`` with the hyper-parameters ``params`` (the
        :attr:`fitted_params`: every ``"auto"`` resolved for ``data``)."""

    @classmethod
    def supports_checkpoints(cls) -> bool:
        """Every trainer has a :meth:`Trainer.state_dict`, so every iterative model does."""
        return True

    def training_device(self) -> str:
        """The device ``device`` resolves to on this machine, in words (``cpu``, ``cuda``)."""
        return str(resolve_device(self.device))

    def _set_learned(self, learned: Mapping[str, Any]) -> None:
        """Take the arrays of :meth:`Trainer.export` (or of a best-epoch snapshot) as the
        learned attributes (override to take more than factors and biases)."""
        self.user_factors = learned["user_factors"]
        self.item_factors = learned["item_factors"]
        self.user_bias = learned.get("user_bias")
        self.item_bias = learned.get("item_bias")
        self.global_bias = float(learned.get("global_bias", 0.0))

    def _fit(
        self,
        data: Interactions,
        *,
        callbacks: Sequence[Callback] = (),
        validation: Validation | None = None,  # recsys.evaluation.Validation
        progress: bool = False,
        checkpointing: Checkpointing | None = None,
    ) -> None:
        resume = None
        if checkpointing is not None and checkpointing.resume:
            resume = load_checkpoint(checkpointing.directory)
            self._check_resume(resume)
        # Data-parallel: every process must have read and split the same data (a node with
        # another copy of the file would otherwise train on a different problem).
        distributed.check_same(self.training_fingerprint, "the training data")
        trainer = self.create_trainer(data, self.fitted_params)
        try:
            state = _LoopState() if resume is None else self._resume(trainer, resume)
            self._run_epochs(trainer, state, callbacks, validation, progress, checkpointing)
            self._set_learned(trainer.export())
            if state.best is not None and state.best[1] != self.history[-1]["epoch"]:
                self._set_learned(state.best[2])
            if state.best is not None:
                self.best_epoch = state.best[1]
        finally:
            trainer.finalize()

    def _resume(self, trainer: Trainer, resume: Checkpoint) -> _LoopState:
        """The trainer and the loop as the checkpoint left them."""
        try:
            trainer.load_state_dict(resume.group("model"))
            set_random_states(resume.arrays, resume.meta["random"])
            self.history = [dict(h) for h in resume.meta["history"]]
            kept = resume.meta.get("validation") or {}
            best = None
            if kept.get("best_epoch") is not None:
                best = (float(kept["best_score"]), int(kept["best_epoch"]), resume.group("best"))
            stale = int(kept.get("stale", 0))
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise ConfigError(f"{resume.directory}: the checkpoint does not fit this model ({exc})") from None
        return _LoopState(first=resume.epoch + 1, best=best, stale=stale)

    def _run_epochs(
        self,
        trainer: Trainer,
        state: _LoopState,
        callbacks: Sequence[Callback],
        validation: Validation | None,
        progress: bool,
        checkpointing: Checkpointing | None,
    ) -> None:
        # Steps get the threads their size deserves, fewer while the machine is busy (CPU only).
        governor = ThreadGovernor(step_threads(trainer.step_work),
                                  adaptive=not threads_chosen() and resolve_device(self.device).type == "cpu")
        guard = SignalGuard()
        main = distributed.is_main()  # rank 0 (or a process on its own) validates and checkpoints
        with guard.active(checkpointing is not None and checkpointing.handle_signals), \
                progress_bar(self.epochs, f"training {self.name}", enabled=progress) as bar:
            bar.advance(state.first - 1)
            for epoch in range(state.first, self.epochs + 1):
                start = time.perf_counter()
                # The training steps alone: validation's full-catalogue scoring and checkpoints
                # around them keep every CPU.
                with governor:
                    figures = {k: float(v) for k, v in trainer.train_epoch(epoch).items()}
                if not math.isfinite(figures.get("loss", 0.0)):
                    raise TrainingDiverged(f"{self.name}: training diverged at epoch {epoch} (loss "
                                           f"{figures['loss']}); nothing was saved. {DIVERGENCE_ADVICE}")
                figures["epoch_seconds"] = time.perf_counter() - start
                stop = validation is not None and main and self._validate(trainer, validation, epoch, figures, state)
                self.history.append({"epoch": epoch, **figures})
                for callback in callbacks:
                    if callback.on_epoch_end(self, epoch, figures):
                        stop = True
                stop, signum = distributed.agree(stop, guard.signum)  # all processes stop together
                bar.advance(1, **{k: v for k, v in figures.items() if k != "epoch_seconds"})
                if checkpointing is not None:
                    due = checkpointing.every and epoch % checkpointing.every == 0
                    if main and (signum is not None or (due and not stop and epoch < self.epochs)):
                        self._save_checkpoint(trainer, checkpointing, epoch, state)
                    if signum is not None:
                        raise TrainingInterrupted(checkpointing.directory, epoch, self.epochs, signum)
                if stop:
                    break

    def _validate(
        self, trainer: Trainer, validation: Validation, epoch: int, figures: dict[str, float], state: _LoopState
    ) -> bool:
        """Score the epoch when validation is due (adding ``val_<metric>`` to ``figures``),
        keep it when it is the best so far; True when patience has run out."""
        if epoch % validation.every != 0 and epoch != self.epochs:
            return False
        learned = trainer.export()  # fresh copies: they serve as the best-epoch snapshot as they are
        self._set_learned(learned)
        score = validation.score(self)
        figures[f"val_{validation.metric}"] = score
        if state.best is None or score > state.best[0]:
            state.best = (score, epoch, learned)
            state.stale = 0
            return False
        state.stale += 1
        return validation.patience is not None and state.stale >= validation.patience

    def _save_checkpoint(self, trainer: Trainer, checkpointing: Checkpointing, epoch: int, state: _LoopState) -> None:
        best = state.best
        arrays = {f"model.{k}": np.asarray(v) for k, v in trainer.state_dict().items()}
        if best is not None:
            arrays.update({f"best.{k}": np.asarray(v) for k, v in best[2].items()})
        meta = {
            "model": self.name,
            "params": _plain(self.get_params()),
            "epoch": epoch,
            "epochs": self.epochs,
            "history": self.history,
            "validation": {
                "best_score": None if best is None else best[0],
                "best_epoch": None if best is None else best[1],
                "stale": state.stale,
            },
            "training_fingerprint": self.training_fingerprint,
            "run": checkpointing.run,
        }
        save_checkpoint(checkpointing.directory, meta, arrays)

    def _check_resume(self, checkpoint: Checkpoint) -> None:
        meta, where = checkpoint.meta, checkpoint.directory
        if meta["model"] != self.name:
            raise ConfigError(f"{where}: the checkpoint is of a {meta['model']!r} model, not {self.name!r}")
        mine = _plain(self.get_params())
        theirs = _plain(self.rename_params(meta["params"]))  # written before a rename, read as today's
        mine.pop("epochs", None)  # a resumed run may train longer or shorter
        theirs.pop("epochs", None)
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ConfigError(f"{where}: the checkpoint was made with other hyper-parameters ({', '.join(diff)})")
        if meta.get("training_fingerprint") != self.training_fingerprint:
            raise ConfigError(
                f"{where}: the training data differ from the checkpoint's (same file, split and seed needed)"
            )
        if checkpoint.epoch >= self.epochs:
            raise ConfigError(f"{where}: the checkpoint is at epoch {checkpoint.epoch}; nothing left of {self.epochs} epochs")


def minibatch_epoch(
    n: int, batch_size: int, generator: Any, train_step: Callable[[Any, int], Any]
) -> dict[str, float]:
    """One pass over ``n`` training entries in shuffled minibatches (the loop of every
    gradient-trained model): ``train_step(entry_indices, step)`` trains on one batch (step
    counted from 0 within the epoch) and returns its detached loss. Returns
    ``{"loss": mean batch loss}``, with one host sync per epoch.

    Data-parallel (:mod:`recsys.distributed`), every process draws the same permutation and
    trains on its own equal part of it (:func:`~recsys.distributed.shard`), and the loss is
    averaged over the processes."""
    import torch

    device = generator.device
    order = distributed.shard(torch.randperm(n, generator=generator, device=device))
    total = torch.zeros((), device=device)
    steps = 0
    for start in range(0, len(order), batch_size):
        total += train_step(order[start:start + batch_size], steps)
        steps += 1
        pace()
    return {"loss": distributed.mean(total) / max(steps, 1)}


def optimizer_step(
    optimizer: Any,
    batch_loss: Callable[[Any], Any],
    *,
    before_step: Callable[[int], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> Callable[[Any, int], Any]:
    """A ``train_step`` for :func:`minibatch_epoch` that steps a torch optimizer on
    ``batch_loss(entry_indices)``; ``before_step(step)`` runs first (a learning-rate schedule)."""

    def train_step(batch: Any, step: int) -> Any:
        if before_step is not None:
            before_step(step)
        with autocast():
            loss = batch_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as they read back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(params, default=_json_default))


def optimizer_state(optimizer: Any) -> dict[str, np.ndarray]:
    """A torch optimizer's per-parameter state (moments, step counts) as ``opt.<i>.<key>`` arrays."""
    import torch

    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"opt.{index}.{key}"] = (
                value.detach().cpu().numpy().copy() if torch.is_tensor(value) else np.asarray(value)
            )
    return out


def set_optimizer_state(optimizer: Any, arrays: dict[str, np.ndarray]) -> None:
    """Restore :func:`optimizer_state` into an optimizer built with the same parameters."""
    import torch

    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    # Refuse what load_state_dict would take and a later step would crash on (or broadcast).
    if state:
        keys = {frozenset(entry) for entry in state.values()}
        if set(state) != set(range(len(params))) or len(keys) != 1:
            raise ConfigError("the optimizer state does not match the model's parameters")
    for index, entry in state.items():
        for key, value in entry.items():
            if value.dtype.kind not in "fiu":
                raise ConfigError(f"optimizer state {key!r} holds {value.dtype} values")
            if value.ndim == 0:
                entry[key] = value.item()  # step counts, which SparseAdam keeps as Python ints
            elif value.shape == tuple(params[index].shape):
                entry[key] = torch.from_numpy(value).to(params[index].device)
            else:
                raise ConfigError(f"optimizer state {key!r} has shape {value.shape}, expected {tuple(params[index].shape)}")
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
