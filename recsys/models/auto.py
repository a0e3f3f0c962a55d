"""Hyper-parameters that follow the data: the rules behind ``"auto"``.

Some hyper-parameters weigh one part of the loss against another whose size depends on
the data, so no single number suits every data set. iALS's unobserved weight alpha0 is the
clearest case: the loss weighs every observed entry by its confidence and every one of the
``|U| x |I|`` unobserved pairs by alpha0, and its frequency-scaled regularization grows
with ``alpha0 * |I|`` per user. A value that balances the two on a dense log of 10,000
items (ml-latest-small: about 130 ratings per user) puts 500 times more weight on the
unobserved side of a sparse one (amazon-book: 9 interactions per user, 24,915 items);
there the regularization exceeds the signal in all but two directions and the factors
collapse towards zero (recall@20 0.019 against 0.15 for a well-scaled model; the analysis
is in ``experiments/quality/README.md``).

So such hyper-parameters default to ``"auto"``, and ``fit`` sets them from the shape of
the training data by the rules below: relative quantities (the share of the loss's weight
on observed entries) stay fixed, and the absolute values follow the data's density. A
number given by the user is used as given. The constants were chosen by a
leave-one-data-set-out search (``experiments/quality``): picked on three public data sets,
checked on the fourth.

The resolved values are the model's ``fitted_params``, saved with it and printed by
``recsys train`` (:func:`describe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

AUTO: Literal["auto"] = "auto"

UNOBSERVED_RATIO = 10.0
"""iALS: the unobserved pairs of a user weigh this many times the user's mean observed
confidence, i.e. ``alpha0 = UNOBSERVED_RATIO * confidence density``."""

OBSERVED_SHARE = 0.1
"""ALS (implicit's loss: weight 1 on every unobserved pair, the confidence on an observed
one): the observed confidences together weigh this share of all pairs' unit weights, i.e.
``alpha = OBSERVED_SHARE / density`` of the weighted values (scale 1)."""

REGULARIZATION_SHARE = 0.1
"""ALS: lambda is this share of the mean user's total observed confidence,
``lambda = REGULARIZATION_SHARE * alpha * density * n_items`` (the ridge must grow with the
confidences it tempers, or a denser log is regularized less)."""

NOISE_SHARE = 0.575
"""BPMF: the rating noise's variance is taken as this share of the training ratings'
variance, i.e. ``noise_precision = 1 / (NOISE_SHARE * var(r))``: the same setting on a 1-5,
a 0.5-5 or a 1-10 scale. Chosen on validation carves of ML-100K's u1.base and of
ml-latest-small (``experiments/explicit``, ``noise`` stage): among 0.5, 0.575 and 0.65 the
one at least as good as the others on both (0.65 is better on ML-100K, worse on
ml-latest-small; 0.5 the reverse, by less)."""


@dataclass(frozen=True)
class DataShape:
    """What the rules read from the training data.

    ``confidence_density`` is the sum of the observed confidences (the model's weighting
    with scale 1) over all ``n_users * n_items`` pairs: the mean weight a pair gets from
    being observed.
    """

    n_users: int
    n_items: int
    nnz: int
    feedback: str
    confidence_density: float

    @classmethod
    def of(cls, matrix: sp.csr_matrix, feedback: str, confidence: sp.csr_matrix | None = None) -> DataShape:
        n_users, n_items = matrix.shape
        weights = matrix if confidence is None else confidence
        return cls(
            n_users=int(n_users),
            n_items=int(n_items),
            nnz=int(matrix.nnz),
            feedback=feedback,
            confidence_density=float(np.sum(weights.data, dtype=np.float64) / (n_users * n_items)),
        )

    @property
    def density(self) -> float:
        return self.nnz / (self.n_users * self.n_items)

    def describe(self) -> str:
        return f"{self.nnz:,} pairs of {self.n_users:,} users x {self.n_items:,} items (density {self.density:.3%})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unobserved_weight(shape: DataShape, ratio: float = UNOBSERVED_RATIO) -> float:
    """iALS's alpha0 for data of ``shape`` (confidences with their ``alpha``)."""
    return ratio * shape.confidence_density


def confidence_scale(shape: DataShape, share: float = OBSERVED_SHARE) -> float:
    """ALS's alpha for data of ``shape`` (confidences with scale 1)."""
    return share / shape.confidence_density


def ridge(shape: DataShape, alpha: float, share: float = REGULARIZATION_SHARE) -> float:
    """ALS's lambda for data of ``shape`` (confidences with scale 1) and confidence scale
    ``alpha``: ``share`` of the mean user's observed confidence."""
    return share * alpha * shape.confidence_density * shape.n_items


def noise_precision(ratings: np.ndarray, share: float = NOISE_SHARE) -> float:
    """BPMF's alpha for the training ``ratings`` (1 where they do not vary)."""
    variance = float(np.var(ratings, dtype=np.float64))
    return 1.0 / (share * variance) if variance > 0 else 1.0


def chosen(given: Mapping[str, Any], fitted: Mapping[str, Any]) -> list[str]:
    """The hyper-parameters given as ``"auto"`` that a rule replaced with a value."""
    return [name for name, value in given.items() if value == AUTO and fitted.get(name, AUTO) != AUTO]


def describe(model_name: str, given: Mapping[str, Any], fitted: Mapping[str, Any], shape: Mapping[str, Any] | None) -> str | None:
    """One line on the values ``"auto"`` chose, e.g. ``"ials: unobserved_weight 0.00203
    (auto), chosen for 516,738 pairs of ..."``; None when no rule chose anything."""
    names = chosen(given, fitted)
    if not names:
        return None
    values = ", ".join(f"{name} {_short(fitted[name])}" for name in names)
    where = "" if shape is None else f", chosen for {DataShape(**shape).describe()}"
    return f"{model_name}: {values} (auto){where}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
