"""The epoch loop, written once.

An iterative model supplies ``_init_training(data)``, ``_train_epoch(epoch) -> figures``
and ``_export()`` (learned state to numpy ``user_factors``/``item_factors``). The loop
owns the progress bar, per-epoch validation, early stopping with best-epoch restore,
callbacks (tracking plugs in here) and checkpoints.

Checkpoints (:mod:`recsys.checkpoint`) are written here, once for every model: the loop
saves its own state (epoch, history, validation, global random states) and asks the
model for its training state through two small hooks, :meth:`IterativeRecommender._training_state`
and :meth:`IterativeRecommender._set_training_state` (factors, optimizer moments, the
model's own generators), so that a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

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
from recsys.device import resolve_device
from recsys.errors import ConfigError
from recsys.models.base import Recommender
from recsys.progress import progress_bar

if TYPE_CHECKING:
    from recsys.evaluation.validation import Validation


class Callback(Protocol):
    """Receives each epoch's figures; return True from ``on_epoch_end`` to stop training."""

    def on_epoch_end(self, model: Recommender, epoch: int, figures: dict[str, float]) -> bool | None: ...


class IterativeRecommender(Recommender):
    """A model trained epoch by epoch through the shared loop (:meth:`_fit`)."""

    epochs: int
    device: str
    trains_by_epoch = True

    @abstractmethod
    def _init_training(self, data: Interactions) -> None:
        """Set up learned state and anything per-fit (tensors, samplers, optimizers)."""

    @abstractmethod
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """Run one epoch; return its figures (``loss`` at least, when there is one)."""

    @abstractmethod
    def _export(self) -> None:
        """Copy learned state to numpy ``user_factors``, ``item_factors`` (and biases)."""

    def _end_training(self) -> None:
        """Release per-fit state (override where there is any)."""

    @classmethod
    def supports_checkpoints(cls) -> bool:
        """Whether the model implements the two checkpoint hooks."""
        return cls._training_state is not IterativeRecommender._training_state

    def training_device(self) -> str:
        """The device ``device`` resolves to on this machine, in words (``cpu``, ``cuda``)."""
        return str(resolve_device(self.device))

    def _training_state(self) -> dict[str, np.ndarray]:
        """Everything that, with the loop's own state, makes the next epoch exact (override).

        Factors, optimizer moments, the model's own random generators: plain arrays.
        """
        raise ConfigError(f"model {self.name!r} does not support checkpoints")

    def _set_training_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_training_state` returned; called after :meth:`_init_training`."""
        raise ConfigError(f"model {self.name!r} does not support checkpoints")

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
        self._init_training(data)
        best: tuple[float, int, dict[str, Any]] | None = None
        stale = 0
        first = 1
        if resume is not None:
            try:
                self._set_training_state(resume.group("model"))
                set_random_states(resume.arrays, resume.meta["random"])
                self.history = [dict(h) for h in resume.meta["history"]]
                kept = resume.meta.get("validation") or {}
                if kept.get("best_epoch") is not None:
                    best = (float(kept["best_score"]), int(kept["best_epoch"]), resume.group("best"))
                stale = int(kept.get("stale", 0))
            except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
                raise ConfigError(f"{resume.directory}: the checkpoint does not fit this model ({exc})") from None
            first = resume.epoch + 1
        guard = SignalGuard()
        try:
            with guard.active(checkpointing is not None and checkpointing.handle_signals), \
                    progress_bar(self.epochs, f"training {self.name}", enabled=progress) as bar:
                bar.advance(first - 1)
                for epoch in range(first, self.epochs + 1):
                    start = time.perf_counter()
                    figures = {k: float(v) for k, v in self._train_epoch(epoch).items()}
                    figures["epoch_seconds"] = time.perf_counter() - start
                    stop = False
                    if validation is not None and (epoch % validation.every == 0 or epoch == self.epochs):
                        self._export()
                        score = validation.score(self)
                        figures[f"val_{validation.metric}"] = score
                        if best is None or score > best[0]:
                            best = (score, epoch, self._snapshot())
                            stale = 0
                        else:
                            stale += 1
                            stop = validation.patience is not None and stale >= validation.patience
                    self.history.append({"epoch": epoch, **figures})
                    for callback in callbacks:
                        if callback.on_epoch_end(self, epoch, figures):
                            stop = True
                    bar.advance(1, **{k: v for k, v in figures.items() if k != "epoch_seconds"})
                    if checkpointing is not None:
                        due = checkpointing.every and epoch % checkpointing.every == 0
                        if guard.signum is not None or (due and not stop and epoch < self.epochs):
                            self._save_checkpoint(checkpointing, epoch, best, stale)
                        if guard.signum is not None:
                            raise TrainingInterrupted(checkpointing.directory, epoch, self.epochs, guard.signum)
                    if stop:
                        break
            self._export()
            if best is not None and best[1] != self.history[-1]["epoch"]:
                self._restore(best[2])
            if best is not None:
                self.best_epoch = best[1]
        finally:
            self._end_training()

    def _save_checkpoint(
        self, checkpointing: Checkpointing, epoch: int, best: tuple[float, int, dict[str, Any]] | None, stale: int
    ) -> None:
        arrays = {f"model.{k}": np.asarray(v) for k, v in self._training_state().items()}
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
                "stale": stale,
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

    def _snapshot(self) -> dict[str, Any]:
        names = ("user_factors", "item_factors", "user_bias", "item_bias", "global_bias")
        return {n: np.copy(getattr(self, n)) for n in names if getattr(self, n, None) is not None}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)


def minibatch_epoch(
    n: int,
    batch_size: int,
    generator: Any,
    optimizer: Any,
    batch_loss: Callable[[Any], Any],
    *,
    before_step: Callable[[int], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, float]:
    """One pass over ``n`` training entries in shuffled minibatches (the loop of every
    gradient-trained model): ``batch_loss(entry_indices)`` gives each batch's loss,
    ``before_step(step)`` runs before each step of the epoch (a learning-rate schedule).
    Returns ``{"loss": mean batch loss}``, with one host sync per epoch."""
    import torch

    device = generator.device
    order = torch.randperm(n, generator=generator, device=device)
    total = torch.zeros((), device=device)
    steps = 0
    for start in range(0, n, batch_size):
        if before_step is not None:
            before_step(steps)
        with autocast():
            loss = batch_loss(order[start:start + batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        steps += 1
    return {"loss": float(total) / max(steps, 1)}


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
