"""Implicit-feedback ALS, by the `implicit` library (CPU, or CUDA when implicit has it)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.checkpoint import check_arrays
from recsys.data.interactions import Interactions
from recsys.device import cpu_budget
from recsys.errors import ConfigError
from recsys.models import auto
from recsys.models.auto import AUTO, DataShape
from recsys.models.training import IterativeRecommender
from recsys.seeding import derive_seed

Weighting = Literal["auto", "binary", "linear", "log"]


def resolved_weighting(weighting: Weighting, feedback: str) -> Weighting:
    """``auto``'s choice for the data's kind of values (see :func:`confidence`)."""
    if weighting == "auto":
        return "binary" if feedback == "rating" else "log"
    return weighting


def confidence(matrix: sp.csr_matrix, feedback: str, weighting: Weighting, alpha: float) -> sp.csr_matrix:
    """Confidence ``c_ui`` of each observed entry (Hu, Koren and Volinsky, 2008).

    ``binary``: alpha; ``linear``: alpha * r; ``log``: alpha * log1p(r); ``auto`` is
    ``binary`` for ratings (a rating says the user consumed the item; its value says how
    they liked it, not how sure we are) and ``log`` for counts (play counts span orders of
    magnitude; log keeps a heavy user from drowning the rest).
    """
    weighting = resolved_weighting(weighting, feedback)
    out = matrix.astype(np.float32, copy=True)
    if weighting == "binary":
        out.data[:] = alpha
    elif weighting == "linear":
        out.data *= alpha
    elif weighting == "log":
        out.data = (alpha * np.log1p(out.data)).astype(np.float32)
    else:
        raise ConfigError(f"unknown weighting {weighting!r}; use auto, binary, linear or log")
    return out


def implicit_gpu(device: str) -> bool:
    """Whether ``device`` (``auto``, ``cpu``, ``cuda``) means implicit's CUDA build:
    ``auto`` does when implicit has one (``implicit.gpu.HAS_CUDA``)."""
    import implicit.gpu

    choice = str(device).strip().lower()
    if choice == "cpu":
        return False
    if choice == "auto":
        return bool(implicit.gpu.HAS_CUDA)
    if choice == "cuda" or choice.startswith("cuda:"):
        if not implicit.gpu.HAS_CUDA:
            raise ConfigError("device 'cuda' was asked for, but this implicit was built without CUDA")
        return True
    raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")


def _device_of_flag(use_gpu: Any) -> str:
    """The ``device`` of a model saved with ``use_gpu`` (``auto``, true or false)."""
    return "auto" if use_gpu == "auto" else ("cuda" if use_gpu else "cpu")


class ALS(IterativeRecommender):
    """Alternating least squares for implicit feedback, wrapping ``implicit``.

    Parameters
    ----------
    factors : int
        Embedding dimension.
    epochs : int
        ALS sweeps (each solves users, then items).
    regularization : float or "auto"
        L2 weight on the factors. ``"auto"``: a share (``REGULARIZATION_SHARE``) of the mean
        user's total observed confidence, so the ridge keeps pace with the confidences it
        tempers (:func:`recsys.models.auto.ridge`).
    alpha : float or "auto"
        Confidence scale of observed entries (see :func:`confidence`). ``"auto"``: the
        observed confidences together weigh a fixed share (``OBSERVED_SHARE``) of the unit
        weights of all user-item pairs, whatever the density
        (:func:`recsys.models.auto.confidence_scale`).
    weighting : {"auto", "binary", "linear", "log"}
        How values become confidences.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses implicit's CUDA build when it reports one (``implicit.gpu.HAS_CUDA``).
    random_state : int
        Seed of the initial factors.

    The defaults come from the leave-one-data-set-out search in ``experiments/quality``.
    """

    name = "als"
    # The device was a flag before it was a training option like every other model's.
    renamed_params: ClassVar[dict[str, tuple[str, Callable[[Any], Any]]]] = {"use_gpu": ("device", _device_of_flag)}

    def __init__(
        self,
        factors: int = 256,
        epochs: int = 25,
        regularization: float | Literal["auto"] = AUTO,
        alpha: float | Literal["auto"] = AUTO,
        weighting: Weighting = "auto",
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.epochs = epochs
        self.regularization = regularization
        self.alpha = alpha
        self.weighting = weighting
        self.device = device
        self.random_state = random_state

    def _resolve_params(self, data: Interactions) -> tuple[dict[str, Any], DataShape | None]:
        params = self.get_params()
        if AUTO not in (self.alpha, self.regularization):
            return params, None
        # The shape of the confidences at scale 1: alpha is what the rule chooses.
        shape = DataShape.of(data.matrix, data.feedback, confidence(data.matrix, data.feedback, self.weighting, 1.0))
        if self.alpha == AUTO:
            params["alpha"] = auto.confidence_scale(shape)
        if self.regularization == AUTO:
            if not isinstance(params["alpha"], int | float):
                raise ConfigError(f"alpha must be a number > 0 or 'auto', got {params['alpha']!r}")
            params["regularization"] = auto.ridge(shape, params["alpha"])
        return params, shape

    def _validate_params(self) -> None:
        alpha, regularization = self.fitted_params["alpha"], self.fitted_params["regularization"]
        if self.factors < 1 or self.epochs < 1:
            raise ConfigError("factors and epochs must be at least 1")
        if not isinstance(alpha, int | float) or not isinstance(regularization, int | float):
            raise ConfigError(f"alpha and regularization must be numbers or 'auto', got {alpha!r} and {regularization!r}")
        if regularization < 0 or alpha <= 0:
            raise ConfigError("regularization must be >= 0 and alpha > 0")

    def training_device(self) -> str:
        return "cuda" if implicit_gpu(self.device) else "cpu"

    def create_trainer(self, data: Interactions, params: Mapping[str, Any]) -> ALSTrainer:
        return ALSTrainer(data, params)

    def _fold_in(self, matrix: sp.csr_matrix, feedback: str, **_: object) -> tuple[np.ndarray, None]:
        """implicit's user step, solved exactly: (Y'Y + sum_i (c_ui - 1) y_i y_i' + reg I) x = sum_i c_ui y_i."""
        from recsys.models.fold_in import weighted_least_squares

        params = self.fitted_params
        conf = confidence(matrix, feedback, self.weighting, params["alpha"])
        y = self.item_factors.astype(np.float64)
        return weighted_least_squares(y, y.T @ y, conf, -1.0, params["regularization"]), None


class ALSTrainer:
    """One fit of :class:`ALS`: the confidences and implicit's model, one sweep per epoch."""

    def __init__(self, data: Interactions, params: Mapping[str, Any]) -> None:
        from implicit.als import AlternatingLeastSquares

        self.factors = int(params["factors"])
        self.gpu = implicit_gpu(params["device"])
        self.step_work = math.inf  # one sweep is one step; implicit runs its own threads
        self.confidence = confidence(data.matrix, data.feedback, params["weighting"], params["alpha"])
        self._transposed: sp.csr_matrix | None = None  # items x users, for the CPU sweeps after the first
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=params["regularization"],
                alpha=1.0,  # already applied in the confidence
                iterations=1,  # the shared loop runs the epochs
                use_gpu=self.gpu,
                num_threads=cpu_budget(),  # not every core of the host: the CPUs this process may use
                random_state=derive_seed(params["random_state"]),
            )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        # implicit parallelizes over users itself; a multi-threaded BLAS underneath
        # oversubscribes the cores (implicit warns about exactly this).
        with threadpool_limits(1, "blas"):
            if self.gpu or self.model.user_factors is None:
                self.model.fit(self.confidence, show_progress=False)  # the first sweep also initializes
            else:
                self._sweep()
        return {}

    def _sweep(self) -> None:
        """One sweep of implicit's CPU ``fit`` (users, then items) on factors already set,
        with the item-by-user transpose made once per fit: ``fit`` transposes the matrix on
        every call, and the loop calls it once per epoch (2.4 CPU-s an epoch at 80M entries)."""
        if self._transposed is None:
            self._transposed = self.confidence.T.tocsr()
        model = self.model
        model.solver(self.confidence, model.user_factors, model.item_factors, model.regularization,
                     num_threads=model.num_threads)
        model.solver(self._transposed, model.item_factors, model.user_factors, model.regularization,
                     num_threads=model.num_threads)

    def export(self) -> dict[str, np.ndarray]:
        model = self.model.to_cpu() if self.gpu else self.model
        return {"user_factors": np.array(model.user_factors, dtype=np.float32),
                "item_factors": np.array(model.item_factors, dtype=np.float32)}

    def state_dict(self) -> dict[str, np.ndarray]:
        # implicit keeps factors that are already set and only initializes missing ones,
        # so the factors are the whole state: the next sweep continues from them.
        return self.export()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        n_users, n_items = self.confidence.shape
        check_arrays(state, {"user_factors": ((n_users, self.factors), "f"),
                             "item_factors": ((n_items, self.factors), "f")})
        users = np.ascontiguousarray(state["user_factors"], dtype=np.float32)
        items = np.ascontiguousarray(state["item_factors"], dtype=np.float32)
        if self.gpu:
            import implicit.gpu

            users, items = implicit.gpu.Matrix(users), implicit.gpu.Matrix(items)
        self.model.user_factors, self.model.item_factors = users, items

    def finalize(self) -> None:
        """Nothing to release: implicit's buffers go with the trainer."""
