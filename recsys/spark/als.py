"""recsys's ``als`` trained by Spark MLlib's ALS: the same model, hyper-parameters and
confidences, its factors computed on the cluster.

The mapping (Spark's names on the right; the README's "Scaling out" shows it as a table):

- ``factors`` -> ``rank``; ``epochs`` -> ``maxIter`` (one sweep of users, then items, each);
  ``random_state`` -> ``seed`` (drawn from it as for implicit; the initial factors differ:
  each library draws its own).
- ``alpha`` and ``weighting`` -> the confidence of an observed entry, ``c = alpha * w(r)``
  with ``w`` = 1 (binary), r (linear) or log(1 + r) (log), exactly as implicit's loss
  weighs it (unobserved pairs weigh 1). Spark weighs an observed rating ``r'`` by
  ``1 + alpha' |r'|``, so it is given ``r' = c - 1`` with ``alpha' = 1``: the same weights.
  An entry with ``c <= 1`` has no Spark equivalent (Spark would read it as a negative) and
  is refused with a message. ``"auto"`` values are chosen by the same rules
  (:mod:`recsys.models.auto`) from the same training data.
- ``regularization`` (lambda) -> ``regParam``. implicit adds ``lambda`` to every user's and
  item's normal equations; Spark adds ``regParam * n`` where ``n`` is that user's (item's)
  number of entries (ALS-WR, Zhou et al. 2008). ``regParam = lambda users / entries``
  gives the mean user implicit's ridge; a heavy user is regularized more on Spark, a light
  one less, and items by their own counts. Measured (``experiments/distributed``): this
  matches implicit's quality; the same total ridge over users and items (``lambda (users +
  items) / (2 entries)``) lost 27% of recall@20 on lastfm-2k (17,632 items for 1,892 users:
  each user's ridge five times implicit's), matching the mean item's ridge lost 72%.
- ``implicitPrefs`` is true: the ``als`` model reads any log as implicit feedback (ratings
  as binary positives by default), as it does locally.
- ``device`` has no Spark meaning (Spark runs on its executors' CPUs).

Every ``CHECKPOINT_INTERVAL`` sweeps the factors are checkpointed (their lineage cut):
without it the plan of 25 sweeps (``als``'s default) overflows the JVM's stack when a
task is serialized. A local master checkpoints to a temporary folder of this process; a
cluster needs a folder every executor sees: ``--spark-conf spark.checkpoint.dir=hdfs://...``
(or one the session already has, ``SparkContext.setCheckpointDir``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from recsys.data.interactions import Interactions
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError
from recsys.models.als import ALS, confidence, resolved_weighting
from recsys.seeding import derive_seed

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import Column, DataFrame

CHECKPOINT_INTERVAL = 10
CHECKPOINT_CONF = "spark.checkpoint.dir"


def ensure_checkpoint_dir(context: SparkContext, sweeps: int) -> None:
    """Give ``context`` a checkpoint folder when ``sweeps`` need one and it has none (see the
    module's docstring); refuse a cluster run without one, before its sweeps start."""
    if sweeps <= CHECKPOINT_INTERVAL or context.getCheckpointDir() is not None:
        return
    chosen = context.getConf().get(CHECKPOINT_CONF)
    if chosen:
        context.setCheckpointDir(chosen)
    elif str(context.master).startswith("local"):
        folder = tempfile.mkdtemp(prefix="recsys-spark-checkpoints-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        context.setCheckpointDir(folder)
    else:
        raise ConfigError(
            f"Spark's ALS needs a checkpoint folder on the cluster for more than {CHECKPOINT_INTERVAL} sweeps "
            f"({sweeps} asked): give one every executor sees, --spark-conf {CHECKPOINT_CONF}=hdfs://..., "
            f"or train {CHECKPOINT_INTERVAL} epochs or fewer")


def reg_param(regularization: float, n_users: int, entries: int) -> float:
    """Spark's ``regParam`` for implicit's ``regularization``: the mean user's ridge is
    implicit's (Spark scales it by each user's and item's number of entries)."""
    return float(regularization) * n_users / entries


def spark_confidence(value: Column, weighting: str, alpha: float) -> Column:
    """Spark's rating column for an entry of ``value``: its confidence less one
    (:func:`recsys.models.als.confidence`, written as a Spark expression)."""
    from pyspark.sql import functions as F

    if weighting == "binary":
        weight = F.lit(1.0)
    elif weighting == "linear":
        weight = value
    else:
        weight = F.log1p(value)
    return F.lit(float(alpha)) * weight - 1.0


class SparkALS(ALS):
    """:class:`~recsys.models.ALS` whose :meth:`fit` runs Spark MLlib's ALS.

    It saves, loads, evaluates, recommends and folds in as ``als`` (the saved model is an
    ``als`` model). ``fit(train, entries=..., users=..., items=...)``: ``train`` on the
    driver gives what every model keeps (id maps, seen items, popularity, the data's shape
    for ``"auto"``); ``entries`` (``u``, ``i``, ``value``) are the same training pairs on the
    cluster, indexed into the id maps ``users`` and ``items`` of the log they were read from.
    """

    trains_by_epoch: ClassVar[bool] = False

    @classmethod
    def supports_checkpoints(cls) -> bool:
        return False

    def training_device(self) -> str:
        return "spark"

    def _fit(self, data: Interactions, *, entries: DataFrame, users: Vocabulary, items: Vocabulary,
             **_: Any) -> None:
        from pyspark.ml.recommendation import ALS as SparkMLlibALS

        params = self.fitted_params
        weighting = resolved_weighting(params["weighting"], data.feedback)
        lowest = float(confidence(data.matrix, data.feedback, weighting, params["alpha"]).data.min())
        if lowest <= 1.0:
            raise ConfigError(
                f"Spark's implicit ALS weighs an observed entry more than an unobserved one; at alpha "
                f"{params['alpha']:.4g} with weighting {weighting} some entries weigh {lowest:.3g} (<= 1), "
                "which it cannot express; raise alpha (-p alpha=...) or train with --engine local")
        ratings = entries.select("u", "i", spark_confidence(entries["value"], weighting, params["alpha"]).alias("c"))
        ensure_checkpoint_dir(entries.sparkSession.sparkContext, int(params["epochs"]))
        estimator = SparkMLlibALS(
            rank=int(params["factors"]), maxIter=int(params["epochs"]), checkpointInterval=CHECKPOINT_INTERVAL,
            regParam=reg_param(params["regularization"], data.n_users, data.nnz),
            implicitPrefs=True, alpha=1.0, userCol="u", itemCol="i", ratingCol="c",
            seed=derive_seed(params["random_state"]), nonnegative=False,
        )
        fitted = estimator.fit(ratings)
        self.user_factors = _factors(fitted.userFactors, users, data.users, int(params["factors"]))
        self.item_factors = _factors(fitted.itemFactors, items, data.items, int(params["factors"]))


def _factors(frame: DataFrame, source: Vocabulary, target: Vocabulary, rank: int) -> np.ndarray:
    """Spark's factor table (``id``: an index into ``source``, ``features``) as rows of
    ``target``'s ids; every id of ``target`` has training entries, so Spark has its factors."""
    table = frame.toArrow()
    ids = table.column("id").to_numpy()
    features = np.asarray(table.column("features").combine_chunks().flatten().to_numpy(), dtype=np.float32)
    rows = target.index(source.ids[ids])
    out = np.zeros((len(target), rank), dtype=np.float32)
    found = rows >= 0
    out[rows[found]] = features.reshape(len(ids), rank)[found]
    if found.sum() != len(target):
        raise ConfigError(f"Spark returned factors for {int(found.sum())} of {len(target)} ids")
    return out
