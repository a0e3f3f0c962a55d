"""Two-tower retrieval model: users and items embedded from ids, features and history.

User tower: user-id embedding, user feature embeddings (categorical, multi-valued, numeric)
and the mean of the embeddings of the user's most recent items, through an MLP to ``d``.
Item tower: item-id embedding and item feature embeddings through an MLP to ``d``. The
score is the dot product (or the cosine divided by a temperature).

Training: in-batch sampled softmax, each batch's other positives serving as negatives,
with the sampling-bias (logQ) correction for popular items (Yi et al., 2019), optional
extra uniformly sampled negatives (mixed negative sampling, Yang et al., 2020), and
bfloat16 autocast on CUDA. Id embeddings start at zero and are dropped at random during
training (``id_dropout``), so the towers also learn to embed from features alone: that is
what gives items without interactions (cold items) and new users useful embeddings.

After ``fit``, ``user_factors`` and ``item_factors`` are the towers' outputs, so exact and
approximate search, evaluation, ``recommend`` and ``similar_items`` work unchanged; cold
items are in the catalogue with embeddings from their features.

Layout: :mod:`~recsys.models.two_tower.towers` (the torch modules, their weights as arrays,
tower outputs to factors), :mod:`~recsys.models.two_tower.encoding` (feature tensors and
users' recent items), :mod:`~recsys.models.two_tower.trainer` (one fit's state and its
epoch), :mod:`~recsys.models.two_tower.model` (the estimator: new users and items,
persistence).
"""

from recsys.models.two_tower.encoding import first_items, recent_item_matrix
from recsys.models.two_tower.model import FeatureFoldIn, TwoTower
from recsys.models.two_tower.towers import Tower
from recsys.models.two_tower.trainer import TwoTowerTrainer, cosine_decay

__all__ = ["FeatureFoldIn", "Tower", "TwoTower", "TwoTowerTrainer", "cosine_decay", "first_items", "recent_item_matrix"]
