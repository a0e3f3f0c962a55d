"""Spark as an engine: ``recsys train --engine spark`` (Spark MLlib's ALS, the log read and
split on the cluster) and ``recsys recommend --engine spark`` (top-k for every user on the
executors). What comes back is a normal recsys model directory or recommendations table.

Install with ``pip install 'recsys[spark]'`` (and Java 17+). Nothing here imports pyspark
until a Spark job runs, so ``import recsys`` never loads it.
"""

from recsys.spark.session import DEFAULT_MASTER, SparkSettings, SparkUnavailable, engine_settings

__all__ = ["DEFAULT_MASTER", "SparkSettings", "SparkUnavailable", "engine_settings"]
