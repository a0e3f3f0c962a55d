"""The epoch loop, written once.

An iterative model supplies ``_init_training(data)``, ``_train_epoch(epoch) -> figures``
and ``_export()`` (learned state to numpy ``user_factors``/``item_factors``). The loop
owns the progress bar, per-epoch validation, early stopping with best-epoch restore,
callbacks (tracking plugs in here) and checkpoints.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.models.base import Recommender
from recsys.progress import progress_bar


class Callback(Protocol):
    """Receives each epoch's figures; return True from ``on_epoch_end`` to stop training."""

    def on_epoch_end(self, model: Recommender, epoch: int, figures: dict[str, float]) -> bool | None: ...


@dataclass
class Validation:
    """Per-epoch validation: ``metric`` (e.g. ``recall@20``) on held-out ``data``.

    With ``patience``, training stops after that many epochs without improvement and the
    best epoch's factors are restored.
    """

    data: Interactions
    metric: str = "recall@20"
    patience: int | None = None
    every: int = 1

    @property
    def k(self) -> int:
        try:
            return int(self.metric.split("@")[1])
        except (IndexError, ValueError):
            raise ConfigError(f"validation metric must look like 'recall@20', got {self.metric!r}") from None


def validation_score(model: Recommender, validation: Validation) -> float:
    """Mean ``validation.metric`` of ``model`` on ``validation.data`` (exact, full ranking)."""
    from recsys.evaluation.evaluate import evaluate_search

    name = validation.metric

    def search(users, k, exclude):
        return model.recommend_indices(users, k, exclude=exclude)

    values, _users, _ = evaluate_search(search, validation.data.matrix, model.seen, [validation.k])
    if name not in values:
        raise ConfigError(f"unknown validation metric {name!r}")
    v = values[name]
    return float(v.mean()) if len(v) else float("nan")


class IterativeRecommender(Recommender):
    """A model trained epoch by epoch through the shared loop (:meth:`_fit`)."""

    epochs: int

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

    def _fit(
        self,
        data: Interactions,
        *,
        callbacks: Sequence[Callback] = (),
        validation: Validation | None = None,
        progress: bool = False,
    ) -> None:
        self._init_training(data)
        best: tuple[float, int, dict[str, Any]] | None = None
        stale = 0
        try:
            with progress_bar(self.epochs, f"training {self.name}", enabled=progress) as bar:
                for epoch in range(1, self.epochs + 1):
                    start = time.perf_counter()
                    figures = {k: float(v) for k, v in self._train_epoch(epoch).items()}
                    figures["epoch_seconds"] = time.perf_counter() - start
                    stop = False
                    if validation is not None and (epoch % validation.every == 0 or epoch == self.epochs):
                        self._export()
                        score = validation_score(self, validation)
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
                    if stop:
                        break
            self._export()
            if best is not None and best[1] != self.history[-1]["epoch"]:
                self._restore(best[2])
            if best is not None:
                self.best_epoch = best[1]
        finally:
            self._end_training()

    def _snapshot(self) -> dict[str, Any]:
        names = ("user_factors", "item_factors", "user_bias", "item_bias", "global_bias")
        return {n: np.copy(getattr(self, n)) for n in names if getattr(self, n, None) is not None}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)
