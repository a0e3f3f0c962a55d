"""recsys's ``als`` runs implicit 0.7's ALS one sweep per epoch, calling its solver directly
(``ALSTrainer._sweep``: implicit's private surface). Pinned here against implicit's own
``fit``, so that an implicit release that changes what the solver does fails a test, not a
benchmark; pyproject.toml bounds implicit to the minor series this passes on."""

from __future__ import annotations

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares

from recsys.data.synthetic import latent_factor_log
from recsys.models import create_model
from recsys.models.als import confidence
from recsys.seeding import derive_seed


@pytest.mark.parametrize("epochs", [1, 4])
def test_our_per_epoch_sweeps_equal_implicits_fit_of_as_many_iterations(epochs):
    data = latent_factor_log(n_users=60, n_items=40, dim=4, items_per_user=8, signal=6.0, seed=2)
    params = {"factors": 6, "regularization": 0.05, "alpha": 3.0, "weighting": "log", "random_state": 7}
    ours = create_model("als", epochs=epochs, device="cpu", **params).fit(data)

    reference = AlternatingLeastSquares(factors=6, regularization=0.05, alpha=1.0, iterations=epochs,
                                        num_threads=1, random_state=derive_seed(7))
    reference.fit(confidence(data.matrix, data.feedback, "log", 3.0), show_progress=False)
    np.testing.assert_allclose(ours.user_factors, reference.user_factors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.item_factors, reference.item_factors, rtol=1e-4, atol=1e-5)
