"""The bookkeeping that lets a profiles build be incremental.

Each build appends a row to the profiles log: the identity and version of every bronze input
it read, a fingerprint of the feature settings, the gold tables' versions and row counts.
The next build compares that with now (``why_full``) and, when nothing forces a full
rebuild, reads only the bronze change data feed since those versions (``read_changes``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import storage
from recsys.config import Config
from recsys.features.splits import build_training_examples
from recsys.tables import read_pinned, read_table, table_exists, table_version

# Bump when the gold tables' definitions change: the next run rebuilds them in full.
GOLD_SCHEMA_VERSION = 4


def log_path(cfg: Config) -> str:
    """The profiles log: one row per build with the bronze versions it covered."""
    return cfg.lakehouse.uri("_profiles_log")


def fingerprint(cfg: Config) -> str:
    """The settings the gold tables depend on: a build whose fingerprint differs is full."""
    f = cfg.features
    return json.dumps({"schema": GOLD_SCHEMA_VERSION, "max_seq_len": f.max_seq_len,
                       "min_interactions": f.min_interactions, "price_buckets": f.price_buckets,
                       "validation_share": f.validation_share}, sort_keys=True)


def delta_state(spark: SparkSession, cfg: Config, name: str) -> dict[str, Any] | None:
    """The table's identity and latest version, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(cfg, name, spark):
        return None
    path = cfg.table_path(name)
    return {"id": DeltaTable.forPath(spark, path).detail().first()["id"], "version": table_version(spark, path)}


def last_log(spark: SparkSession, cfg: Config, path: str | None = None) -> dict[str, Any] | None:
    """The state the last build logged (``write_log``) in the build log at ``path`` (default
    the profiles log), or None before the first build."""
    path = path or log_path(cfg)
    if not storage.is_delta_table(path, spark):
        return None
    row = spark.read.format("delta").load(path).orderBy(F.desc("finished_at")).limit(1).collect()
    return json.loads(row[0]["state"]) if row else None


def write_log(spark: SparkSession, cfg: Config, mode: str, state: dict[str, Any], path: str | None = None) -> None:
    """Append this build's ``state`` (JSON) to the build log at ``path`` (default the profiles
    log): what the next build starts from."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    spark.createDataFrame([(now, mode, json.dumps(state))], "finished_at timestamp, mode string, state string") \
        .write.format("delta").mode("append").save(path or log_path(cfg))


def read_version(spark: SparkSession, cfg: Config, name: str, version: int) -> DataFrame:
    """The table ``name`` as of ``version``."""
    return read_pinned(spark, cfg.table_path(name), version)


def last_gold(spark: SparkSession, cfg: Config, last: dict[str, Any], name: str) -> DataFrame:
    """A gold table as the last build left it: a rerun after a run killed before its log was
    written starts from the same rows, so it does not add the same changes twice."""
    version = last.get("gold", {}).get(name)
    return read_table(spark, cfg, name) if version is None else read_version(spark, cfg, name, version)


def why_full(spark: SparkSession, cfg: Config, last: dict[str, Any] | None, now: dict[str, Any],
             gold_tables: Sequence[str]) -> str | None:
    """Why this run cannot be incremental (None = it can): ``last`` and ``now`` are the logged
    and the current state, ``gold_tables`` the tables an incremental build updates."""
    if last is None:
        return "no earlier build"
    if last.get("fingerprint") != now["fingerprint"]:
        return "feature settings or gold schema changed"
    if any(not table_exists(cfg, t, spark) for t in gold_tables):
        return "a gold table is missing"
    for name in ("events", "catalog", "users"):
        before, after = last["tables"].get(name), now["tables"].get(name)
        if (before is None) != (after is None) or (before and (before["id"] != after["id"] or before["version"] > after["version"])):
            return f"bronze table {name} was recreated"
    cat_before, cat_now = last["tables"]["catalog"], now["tables"]["catalog"]
    if cat_before["version"] != cat_now["version"]:
        # New items, prices or categories move ids, price buckets and every profile that uses them.
        cols = ["item_id", "title", "category", "brand", "price", "in_stock"]
        try:
            old = read_version(spark, cfg, "catalog", cat_before["version"]).select(cols)
        except Exception:  # noqa: BLE001 - an old version vacuumed away: rebuild
            return "the catalogue's previous version is no longer readable"
        if read_version(spark, cfg, "catalog", cat_now["version"]).select(cols).exceptAll(old).limit(1).count():
            return "the catalogue changed"
    return None


CHANGE_COLUMNS = ["event_id", "ts", "user_id", "session_id", "event_type", "item_id", "price", "quantity",
                  "event_date", "_change_type", "_commit_version"]


def read_changes(spark: SparkSession, cfg: Config, last: dict[str, Any], now: dict[str, Any]) -> tuple[DataFrame, DataFrame]:
    """From the change data feed since the last build: the changed ``events`` rows (the event
    columns and ``_change_type``) and the affected user ids (those of changed events and of
    changed ``users`` rows)."""
    ev_from, ev_to = last["tables"]["events"]["version"], now["tables"]["events"]["version"]
    if ev_to > ev_from:
        changes = (
            spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", ev_from + 1).option("endingVersion", ev_to)
            .load(cfg.table_path("events")).select(*CHANGE_COLUMNS)
        )
    else:
        changes = events_like_empty(spark, cfg)
    changes = changes.localCheckpoint()
    users = changes.select("user_id")
    u_before, u_now = last["tables"].get("users"), now["tables"].get("users")
    if u_now and u_now["version"] > u_before["version"]:
        users = users.unionByName(
            spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", u_before["version"] + 1).option("endingVersion", u_now["version"])
            .load(cfg.table_path("users")).select("user_id")
        )
    return changes, users.distinct().localCheckpoint()


def events_like_empty(spark: SparkSession, cfg: Config) -> DataFrame:
    """No changed events, with the change feed's columns."""
    return read_table(spark, cfg, "events").limit(0).withColumn("_change_type", F.lit("insert")) \
        .withColumn("_commit_version", F.lit(0).cast("long")).select(*CHANGE_COLUMNS)


def events_before(now: DataFrame, changes: DataFrame, cols: list[str]) -> DataFrame:
    """The events (``cols``) as they were before ``changes``, from those users' current events
    ``now``: an event the changes touched was there before only if its first change (by commit)
    removed or updated it (an event both inserted and deleted since was never there)."""
    gone = F.col("_change_type").isin("delete", "update_preimage")
    first = Window.partitionBy("event_id").orderBy("_commit_version", F.when(gone, 0).otherwise(1))
    firsts = changes.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1)
    return now.join(changes.select("event_id").distinct(), "event_id", "left_anti").select(*cols) \
        .unionByName(firsts.where(gone).select(*cols))


def count_moves(cfg: Config, new: DataFrame, old: DataFrame) -> list:
    """Rows (split, d): how many rows the replacement of users' rows ``old`` by ``new`` adds to
    ``user_profiles`` (split null) and to each split of ``training_examples``."""
    def signed(rows: DataFrame, sign: int) -> DataFrame:
        return build_training_examples(cfg, rows).select("split", F.lit(sign).alias("d")).unionByName(
            rows.select(F.lit(None).cast("string").alias("split"), F.lit(sign).alias("d")))

    return signed(new, 1).unionByName(signed(old, -1)).groupBy("split").agg(F.sum("d").alias("d")).collect()
