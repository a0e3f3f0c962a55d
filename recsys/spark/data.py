"""An interaction log read, indexed and split by Spark, on the cluster.

What is the same as the local path (:func:`recsys.data.read_interactions`,
:func:`recsys.jobs.settings.split_for_training`):

- the layout: the first lines are sniffed by the local rules (separator, header, which column
  is the user, item, rating or weight, timestamp; adjacency lists; Parquet by its magic
  bytes), and the ``--user-col``... options mean the same;
- ids: read as text, blanks around them stripped; repeated (user, item) rows combine by the
  same rule (counts add up; a rating keeps the latest, by timestamp);
- the filters (``--min-rating``, the k-core);
- the id maps: the distinct ids are found on the cluster and ordered by the local reader's
  rule (numerically when every id is a canonical integer, else as text), so index ``u`` is
  the same user as in a local read;
- the split: ``user``, ``last-n`` and ``leave-one-out`` draw their random tie-breaks from the
  same seeded stream, entry by entry in the same order (each task jumps ahead to its share,
  :func:`recsys.data.splits.tie_values`), and ``temporal`` takes the same cutoff, so the same
  entries are held out as locally.

What differs: malformed rows are counted and one is shown, without a line number (Spark
reads a file in pieces); repeated ratings with equal timestamps keep the row Spark reads
last (file order within one file, not across the files of a directory); the ``random`` and
``cold-items`` splits are not available (a global permutation has no parallel equivalent:
split with ``recsys split`` and pass ``--test``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.data.diagnose import FLOAT32_MAX
from recsys.data.filters import FilterReport, Filters
from recsys.data.ids import to_vocabulary
from recsys.data.interactions import Interactions, build_csr
from recsys.data.sniff import (
    LIST_BLANKS,
    LIST_TOKEN,
    Layout,
    Role,
    check_data_format,
    layout_of_lines,
    match_roles,
)
from recsys.data.splits import tie_values
from recsys.data.vocabulary import Vocabulary
from recsys.errors import ConfigError, InputError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SNIFF_LINES = 50
SPLITS_ON_SPARK = ("user", "last-n", "leave-one-out", "temporal", "none")


@dataclass
class SparkLog:
    """A log on the cluster: ``entries`` (``u``, ``i``, ``value``[, ``ts``]: one row per
    (user, item), indices into ``users`` and ``items``) and what reading it did."""

    entries: DataFrame
    users: Vocabulary
    items: Vocabulary
    feedback: str
    source: str
    rows: int
    merged: int
    filtered: FilterReport

    @property
    def has_timestamps(self) -> bool:
        return "ts" in self.entries.columns

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.users), len(self.items)

    def unpersist(self) -> None:
        """Drop the cached entries (a long-lived session would otherwise hold every log read)."""
        self.entries.unpersist()


def read_log(spark: SparkSession, path: str | os.PathLike, options: Any, filters: Filters) -> SparkLog:
    """Read the log at ``path`` (anything Spark reads: a file, a directory of parts,
    ``hdfs://``, ``s3a://``) with the reading ``options`` (a
    :class:`recsys.jobs.ReadOptions`), filter it and index it."""
    source = os.fspath(path)
    explicit: dict[Role, str | None] = {"user": options.user_col, "item": options.item_col,
                                        "rating": options.rating_col, "weight": options.weight_col,
                                        "timestamp": options.timestamp_col}
    check_data_format(options.data_format, options.sep, options.header, explicit)
    raw, layout = _read_raw(spark, source, options, explicit)
    feedback = options.feedback or ("rating" if "rating" in layout.roles else "count")
    rows, n_rows = _checked(raw, source, options.skip_bad_rows)
    combined = _combine(rows, feedback).persist()
    n_pairs = combined.count()
    pairs, report = _filter(combined, filters, feedback, n_pairs)
    users, items = _vocabulary(pairs, "user"), _vocabulary(pairs, "item")
    entries = _indexed(spark, pairs, users, items).persist()
    entries.count()  # cached now, from the cached pairs, before they go
    pairs.unpersist()
    combined.unpersist()  # the same frame without filters
    return SparkLog(entries, users, items, feedback, source, n_rows, n_rows - n_pairs, report)


# -- reading ----------------------------------------------------------------------------------
def _read_raw(spark: SparkSession, source: str, options: Any,
              explicit: dict[Role, str | None]) -> tuple[DataFrame, Layout]:
    """Columns ``user``, ``item`` (text), ``value`` and ``ts`` where the log has them, and the
    layout sniffed from its first lines."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    try:
        head = [row.value for row in spark.read.text(source).limit(4 * SNIFF_LINES).collect()]
    except AnalysisException as exc:
        raise InputError(f"Spark cannot read it ({str(exc).splitlines()[0]})", path=source) from None
    if (head and head[0].startswith("PAR1")) or source.rstrip("/").lower().endswith((".parquet", ".pq")):
        if options.data_format == "lists":
            raise InputError("is Parquet, a table; --data-format lists reads text lines user item item ...",
                             path=source)
        frame = spark.read.parquet(source)
        layout = Layout("parquet", False, None, frame.columns, frame.columns,
                        match_roles(frame.columns, explicit, source))  # type: ignore[arg-type]
    else:
        lines = [line.lstrip("\ufeff") for line in head if line.strip()][:SNIFF_LINES]
        if not lines:
            raise InputError("the file is empty; expected a header or rows of user,item[,rating][,timestamp]",
                             path=source)
        layout = layout_of_lines(lines, source, gzipped=False, sep=options.sep, header=options.header,
                                 explicit=explicit, data_format=options.data_format)
        if layout.fmt == "lists":
            return _read_lists(spark, source), layout
        schema = StructType([StructField(name, StringType()) for name in layout.names])
        frame = spark.read.csv(source, schema=schema, sep=layout.delimiter, header=layout.header is not None,
                               encoding=options.encoding, mode="PERMISSIVE")
    roles = layout.roles
    columns = [F.col(f"`{roles['user']}`").cast("string").alias("user"),
               F.col(f"`{roles['item']}`").cast("string").alias("item")]
    value_role = "rating" if "rating" in roles else ("weight" if "weight" in roles else None)
    if value_role is not None:
        columns.append(F.col(f"`{roles[value_role]}`").alias("value_text"))  # type: ignore[index]
    if "timestamp" in roles:
        columns.append(F.col(f"`{roles['timestamp']}`").alias("ts_text"))
    return frame.select(*columns), layout


def _read_lists(spark: SparkSession, source: str) -> DataFrame:
    """Adjacency lists (``user item item ...``) as one row per pair."""
    from pyspark.sql import functions as F

    blanks = "[" + LIST_BLANKS.replace("\t", "\\t").replace("\r", "\\r") + "]"
    tokens = F.split(F.regexp_replace(F.col("value"), f"^{blanks}+|{blanks}+$", ""), " ")
    lines = spark.read.text(source).where(F.trim(F.col("value")) != "").select(tokens.alias("tokens"))
    bad = F.exists("tokens", lambda t: ~t.rlike(f"^{LIST_TOKEN}$"))
    return lines.select(F.col("tokens")[0].alias("user"), F.explode(F.slice("tokens", 2, 1 << 30)).alias("item"),
                        bad.alias("_line_bad"))


def _checked(raw: DataFrame, source: str, skip_bad_rows: bool) -> tuple[DataFrame, int]:
    """Rows with text ids stripped of blanks, ``value`` (double; 1 without a value column) and
    ``ts`` (seconds) when there is a timestamp column, and the number of rows read. Malformed
    rows are refused (one shown, with their number) or, with ``skip_bad_rows``, dropped and
    counted in a warning (logger ``recsys``), as locally."""
    from pyspark.sql import functions as F

    strip = "^\\s+|\\s+$"
    user = F.regexp_replace("user", strip, "")
    item = F.regexp_replace("item", strip, "")
    problems: list[tuple[Column, str]] = []
    if "_line_bad" in raw.columns:
        problems.append((F.col("_line_bad"), "a token that is not an integer (adjacency lists: user item item ...)"))
    problems += [(user.isNull() | (user == ""), "empty user id"), (item.isNull() | (item == ""), "empty item id")]
    columns = [user.alias("user"), item.alias("item")]
    if "value_text" in raw.columns:
        value = F.col("value_text").try_cast("double")
        problems.append((value.isNull() | F.isnan(value) | (value < 0) | (value > FLOAT32_MAX),
                         f"expected a finite number >= 0 and <= {FLOAT32_MAX:.3g}"))
        columns.append(value.alias("value"))
    else:
        columns.append(F.lit(1.0).alias("value"))
    if "ts_text" in raw.columns:
        text = F.col("ts_text").cast("string")
        seconds = F.coalesce(text.try_cast("double").try_cast("long"), F.unix_timestamp(F.try_to_timestamp(text)))
        problems.append((seconds.isNull(), "expected a timestamp (seconds since 1970 or an ISO date)"))
        columns.append(seconds.alias("ts"))
    why = F.when(problems[0][0], problems[0][1])
    for condition, reason in problems[1:]:
        why = why.when(condition, reason)
    flagged = raw.withColumn("_why", why)
    # One pass counts the rows and the malformed ones.
    total, n_bad = flagged.agg(F.count(F.lit(1)), F.count("_why")).first()
    if total == 0:
        raise InputError("no data rows (only a header?); expected rows of user, item[, rating][, timestamp]",
                         path=source)
    if n_bad and not skip_bad_rows:
        row = flagged.where(F.col("_why").isNotNull()).first().asDict()
        shown = ", ".join(f"{k.removesuffix('_text')}={v!r}" for k, v in row.items()
                          if k in ("user", "item", "value_text", "ts_text"))
        raise InputError(f"{n_bad:,} malformed row{'s' if n_bad != 1 else ''}, e.g. ({shown}): {row['_why']} "
                         "(Spark reads files in pieces and names no line; --skip-bad-rows drops them)", path=source)
    if n_bad == total:
        raise InputError("every row was skipped as malformed", path=source)
    if skip_bad_rows:
        logging.getLogger("recsys").warning("%s: skipped %d malformed row%s (--skip-bad-rows)",
                                            source, n_bad, "" if n_bad == 1 else "s")
    return flagged.where(F.col("_why").isNull()).select(*columns), int(total - n_bad)  # the rows kept


def _combine(rows: DataFrame, feedback: str) -> DataFrame:
    """One row per (user, item), by the local rule: counts add up, a rating keeps the latest
    (by timestamp, then by the order Spark reads the rows in)."""
    from pyspark.sql import functions as F

    has_ts = "ts" in rows.columns
    if feedback == "count":
        aggregates = [F.sum("value").alias("value")]
    else:
        order = F.struct(*([F.col("ts")] if has_ts else []), F.col("_row"))
        rows = rows.withColumn("_row", F.monotonically_increasing_id())
        aggregates = [F.max_by("value", order).alias("value")]
    if has_ts:
        aggregates.append(F.max("ts").alias("ts"))
    return rows.groupBy("user", "item").agg(*aggregates)


def _filter(pairs: DataFrame, filters: Filters, feedback: str, n_pairs: int) -> tuple[DataFrame, FilterReport]:
    """The minimum rating, then the k-core (rounds until nothing more drops), as
    :func:`recsys.data.filters.apply_filters` does locally."""
    from pyspark.sql import functions as F

    filters.check()
    if not filters.active:
        return pairs, FilterReport(0, 0, 0)
    users_before = pairs.select("user").distinct().count()
    items_before = pairs.select("item").distinct().count()
    kept = pairs
    if filters.min_rating is not None:
        if feedback != "rating":
            raise ConfigError("--min-rating filters ratings; this log holds counts (use --min-user-count / "
                              "--min-item-count, or read its values as ratings with --feedback rating)")
        kept = kept.where(F.col("value") >= filters.min_rating)
    size = kept.count()
    while filters.min_user_count > 1 or filters.min_item_count > 1:
        users = kept.groupBy("user").count().where(F.col("count") >= filters.min_user_count).select("user")
        items = kept.groupBy("item").count().where(F.col("count") >= filters.min_item_count).select("item")
        now = kept.join(users, "user", "left_semi").join(items, "item", "left_semi").localCheckpoint()
        smaller = now.count()
        kept = now
        if smaller == size:
            break
        size = smaller
    if size == 0:
        raise ConfigError(f"the filters ({filters.describe()}) leave no entries")
    kept = kept.persist()
    report = FilterReport(n_pairs - size, users_before - kept.select("user").distinct().count(),
                          items_before - kept.select("item").distinct().count())
    return kept, report


def _vocabulary(pairs: DataFrame, role: str) -> Vocabulary:
    """The id map of ``role``: distinct ids found on the cluster, ordered by the local rule."""
    ids = pairs.select(role).distinct().toArrow().column(0).to_numpy(zero_copy_only=False)
    vocab, _ = to_vocabulary(np.asarray(ids, dtype=object), np.zeros(0, dtype=np.int64))
    return vocab


def _indexed(spark: SparkSession, pairs: DataFrame, users: Vocabulary, items: Vocabulary) -> DataFrame:
    """``pairs`` with their ids replaced by indices (``u``, ``i``), joined on the cluster."""
    import pyarrow as pa

    def index_frame(vocab: Vocabulary, role: str, column: str) -> DataFrame:
        text = pa.array(vocab.ids.astype(str) if vocab.is_integer else vocab.ids, pa.string())
        return spark.createDataFrame(pa.table({role: text, column: pa.array(np.arange(len(vocab)), pa.int32())}))

    kept = [c for c in ("value", "ts") if c in pairs.columns]
    return (pairs.join(index_frame(users, "user", "u"), "user").join(index_frame(items, "item", "i"), "item")
            .select("u", "i", *kept))


# -- splitting --------------------------------------------------------------------------------
def split_log(log: SparkLog, strategy: str, *, test_fraction: float, n: int, seed: int) -> DataFrame:
    """``log.entries`` with a boolean ``test`` column: the entries the local split of the same
    name and seed holds out (see the module's notes). The frame is cached: unpersist it when done."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    entries = log.entries
    if strategy == "none":
        return entries.withColumn("test", F.lit(False)).persist()
    if strategy not in SPLITS_ON_SPARK:
        raise ConfigError(f"the {strategy!r} split is not available with --engine spark (it takes "
                          f"{', '.join(SPLITS_ON_SPARK)}); split with `recsys split` and pass --test")
    if strategy in ("last-n", "temporal") and not log.has_timestamps:
        raise ConfigError(f"the {strategy!r} split needs timestamps, and this data has none")
    if strategy == "temporal":
        return entries.withColumn("test", F.col("ts") > _cutoff(entries, test_fraction)).persist()
    if strategy == "leave-one-out" and log.has_timestamps:
        strategy, n = "last-n", 1
    ties, ordered = _with_ties(entries, seed)
    primary = -F.col("ts") if strategy == "last-n" else F.lit(0)
    by_user = Window.partitionBy("u")
    count = F.count(F.lit(1)).over(by_user)
    position = F.row_number().over(by_user.orderBy(primary, F.col("tie"), F.col("i"))) - 1
    if strategy == "user":
        held = F.least(F.floor(F.lit(test_fraction) * count + 0.5), F.greatest(count - 1, F.lit(0)))
    else:  # last-n, leave-one-out without timestamps: the first n by (time,) tie
        held = F.least(F.lit(n if strategy == "last-n" else 1), F.greatest(count - 1, F.lit(0)))
    parts = ties.withColumn("test", position < held).drop("tie").persist()
    parts.count()  # cached now, so that the sorted copy the ties were drawn on can go
    ordered.unpersist()
    return parts


def _cutoff(entries: DataFrame, test_fraction: float) -> int:
    """The time that puts ``test_fraction`` of the entries after it (numpy's ``lower`` quantile)."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test fraction must be between 0 and 1, got {test_fraction}")
    total = entries.count()
    rank = math.floor((total - 1) * (1.0 - test_fraction))
    return int(entries.select("ts").orderBy("ts").offset(rank).limit(1).collect()[0][0])


def _with_ties(entries: DataFrame, seed: int) -> tuple[DataFrame, DataFrame]:
    """``entries`` with ``tie``: entry number ``p`` (in (user, item) order, as a local CSR
    holds them) gets value ``p`` of the seeded stream the local split draws; and the cached,
    sorted frame it is drawn on (unpersist it once the result is cached)."""
    from pyspark import TaskContext
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StructField, StructType

    parts = max(1, entries.sparkSession.sparkContext.defaultParallelism)
    ordered = entries.repartitionByRange(parts, "u", "i").sortWithinPartitions("u", "i").persist()
    sizes = dict(ordered.groupBy(F.spark_partition_id().alias("p")).count().collect())
    starts = np.concatenate([[0], np.cumsum([sizes.get(p, 0) for p in range(parts)])]).tolist()

    def draw(batches: Any) -> Any:
        import pyarrow as pa

        position = starts[TaskContext.get().partitionId()]
        for batch in batches:
            yield batch.append_column("tie", pa.array(tie_values(seed, position, batch.num_rows)))
            position += batch.num_rows

    schema = StructType([*ordered.schema.fields, StructField("tie", DoubleType(), False)])
    return ordered.mapInArrow(draw, schema), ordered


# -- back to the driver -----------------------------------------------------------------------
def to_interactions(log: SparkLog, entries: DataFrame) -> Interactions:
    """The entries (``u``, ``i``, ``value``[, ``ts``]) as :class:`Interactions` on the driver,
    with the log's id maps."""
    columns = ["u", "i", "value", *(["ts"] if log.has_timestamps else [])]
    table = entries.select(*columns).toArrow()
    arrays = {name: table.column(name).to_numpy() for name in columns}
    matrix, ts = build_csr(arrays["u"], arrays["i"], arrays["value"].astype(np.float32), arrays.get("ts"),
                           log.shape, log.feedback)  # type: ignore[arg-type]
    return Interactions(matrix, log.users, log.items, ts, log.feedback, source=log.source)  # type: ignore[arg-type]
