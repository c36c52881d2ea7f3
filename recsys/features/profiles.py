"""Bronze → gold: ``item_daily_counts``, ``item_profiles``, ``user_profiles`` and
``training_examples``, built in full or incrementally.

``build_profiles`` decides which (``incremental.why_full``) and runs one of the two builds
below; the rows themselves come from ``items``, ``users`` and ``splits``, and an incremental
build gives the same tables as a full one.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.features.incremental import (count_moves, delta_state, events_before, fingerprint, last_gold, last_log,
                                         read_changes, read_version, why_full, write_log)
from recsys.features.items import (COUNT_KINDS, assemble_item_profiles, catalog_ids, daily_item_counts, item_events,
                                   item_user_count_delta, item_user_counts)
from recsys.features.splits import SPLITS, build_training_examples
from recsys.features.users import build_steps, build_user_profiles, continue_user_profiles, user_event_counts
from recsys.reports import write_report
from recsys.tables import read_table, require_table, table_exists, table_version, upsert, write_table
from recsys.timing import StepTimer

GOLD_TABLES = ("item_daily_counts", "item_profiles", "user_profiles", "training_examples")
BRONZE_INPUTS = ("events", "catalog", "users")
PINNED_GOLD = ("item_profiles", "user_profiles")  # read back by the next incremental build
# An incremental build MERGEs the affected users (a fifth of them after a day of a shop's
# logs) into user_profiles and training_examples, spread over every file. With deletion
# vectors a MERGE writes the new rows and marks the old ones deleted instead of rewriting
# every file: its time fell by about a third at 5M events. Readers without deletion-vector
# support (delta-rs, so DuckDB and Polars) refuse such tables: features.deletion_vectors=false.


def merged_by_user(cfg: Config) -> dict[str, str]:
    """Table properties of the two tables MERGEd by user."""
    return {"delta.enableDeletionVectors": str(cfg.features.deletion_vectors).lower()}


def build_profiles(spark: SparkSession, cfg: Config, *, full: bool = False) -> dict[str, Any]:
    """Build the gold tables from bronze and return a report with their row counts.

    After a first (full) build, each run reads the change data feed of ``events`` and
    ``users`` since the versions the last build covered, and MERGEs only the users and items
    those changes concern (``mode: incremental``). A full rebuild happens when asked
    (``full=True``), on the first run, when the catalogue, the feature settings or the gold
    schema changed, or when a bronze table was recreated (the report says why). Item, category
    and brand ids survive rebuilds: new ones are appended after the known ones.
    """
    for name in ("events", "catalog"):
        require_table(cfg, name, spark)  # a clear error if ingest has not run
    t0 = time.time()
    steps_t = StepTimer()
    with ThreadPoolExecutor(3) as pool:  # three small driver-bound jobs each: overlap them
        states = dict(zip(BRONZE_INPUTS, pool.map(lambda name: delta_state(spark, cfg, name), BRONZE_INPUTS)))
    # Read bronze at the versions this build records: rows an ingest appends meanwhile are the
    # next build's change feed, not counted twice.
    events, catalog, users = (read_version(spark, cfg, name, states[name]["version"]) if states[name] else None
                              for name in BRONZE_INPUTS)
    now = {"fingerprint": fingerprint(cfg), "tables": states}
    last = last_log(spark, cfg)
    reason = "asked for a full build" if full else why_full(spark, cfg, last, now, GOLD_TABLES)
    steps_t.done("plan")
    if reason is None:
        mode, detail = "incremental", _incremental_build(spark, cfg, events, catalog, users, last, now, steps_t)
    else:
        mode, detail = "full", _full_build(spark, cfg, events, catalog, users, steps_t)
        detail["reason"] = reason
    now["as_of_date"] = detail["as_of_date"]
    counts = detail.pop("counts", None)
    if counts is None:  # a full build, or the first run after a log without counts: count the tables
        examples = read_table(spark, cfg, "training_examples")
        counts = {"item_profiles": read_table(spark, cfg, "item_profiles").count(),
                  "user_profiles": read_table(spark, cfg, "user_profiles").count(),
                  "training_examples": {r["split"]: r["count"] for r in examples.groupBy("split").count().collect()}}
    now["counts"] = counts  # the next incremental build's report starts from these
    steps_t.done("counts")
    with ThreadPoolExecutor(2) as pool:
        now["gold"] = dict(zip(PINNED_GOLD, pool.map(lambda name: table_version(spark, cfg.table_path(name)), PINNED_GOLD)))
    write_log(spark, cfg, mode, now)  # last: a run killed before this point is simply redone
    steps_t.done("log")

    report = {
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "mode": mode,
        "seconds": round(time.time() - t0, 2),
        "step_seconds": steps_t.seconds,
        **detail,
        **counts,
    }
    write_report(cfg, "profiles", report)
    return report


def _full_build(spark: SparkSession, cfg: Config, events: DataFrame, catalog: DataFrame,
                users: DataFrame | None, steps_t: StepTimer) -> dict[str, Any]:
    """Overwrite the four gold tables from all of bronze (item ids kept, see ``catalog_ids``)."""
    previous = None
    if table_exists(cfg, "item_profiles", spark):  # keep the ids a trained model knows
        previous = read_table(spark, cfg, "item_profiles").select(
            "item_id", "item_idx", "category", "category_idx", "brand", "brand_idx").localCheckpoint()
    as_of = events.agg(F.max("event_date")).first()[0]
    write_table(daily_item_counts(events), cfg, "item_daily_counts")
    steps_t.done("item_daily_counts")
    ids = catalog_ids(cfg, catalog, previous)
    items = assemble_item_profiles(ids, read_table(spark, cfg, "item_daily_counts"), item_user_counts(events), as_of)
    write_table(items, cfg, "item_profiles")
    items = read_table(spark, cfg, "item_profiles")
    steps_t.done("item_profiles")

    steps = build_steps(events, items).localCheckpoint()  # read four times below
    profiles = build_user_profiles(user_event_counts(events), steps, users, items)
    write_table(profiles, cfg, "user_profiles", properties=merged_by_user(cfg))
    profiles = read_table(spark, cfg, "user_profiles")
    steps_t.done("user_profiles")
    write_table(build_training_examples(cfg, profiles), cfg, "training_examples", partition_by=["split"],
                properties=merged_by_user(cfg))
    steps_t.done("training_examples")
    return {"as_of_date": str(as_of) if as_of else None}


def _incremental_build(spark: SparkSession, cfg: Config, events: DataFrame, catalog: DataFrame,
                       users: DataFrame | None, last: dict[str, Any], now: dict[str, Any],
                       steps_t: StepTimer) -> dict[str, Any]:
    """MERGE only what the new events concern; gives the same tables as a full build.

    An affected user whose changes are only new events, all later than their profile's
    ``last_ts`` (the usual case: today's logs), is *continued*: their steps are the profile's
    history plus the new events, and their counts the profile's plus the new events' (see
    ``continue_user_profiles``), so none of their older events is read. Any other affected user
    (late events, deleted or updated events) is *rebuilt* from all their events.

    The users' rows need only the item ids, categories, brands and price buckets, which an
    incremental build never changes (a changed catalogue forces a full one), so they read them
    from the item profiles as they were before this run."""
    changes, affected_users = read_changes(spark, cfg, last, now)
    pairs = changes.where(F.col("item_id").isNotNull()).select("item_id", "event_date").distinct().localCheckpoint()
    n_pairs, n_users = pairs.count(), affected_users.count()
    inserted = changes.where(F.col("_change_type") == "insert").drop("_change_type", "_commit_version")
    # users with deleted or updated events: rebuilt below
    touched = changes.where(F.col("_change_type") != "insert").select("user_id").distinct().localCheckpoint()
    removed_any = touched.count() > 0
    before = dt.date.fromisoformat(last["as_of_date"]) if last.get("as_of_date") else None
    if before is not None and not removed_any:  # the newest day can only have moved forward
        newest = inserted.agg(F.max("event_date")).first()[0]
        as_of = max(before, newest) if newest else before
    else:
        as_of = events.agg(F.max("event_date")).first()[0]
    current = last_gold(spark, cfg, last, "item_profiles").localCheckpoint()

    old = last_gold(spark, cfg, last, "user_profiles").join(F.broadcast(affected_users), "user_id", "left_semi") \
        .localCheckpoint()  # the affected users' rows before this run: one scan of the table
    old_rows = old  # all of them, continued and rebuilt: the report's row counts move by these
    late = (inserted.groupBy("user_id").agg(F.min("ts").alias("_first")).join(old.select("user_id", "last_ts"), "user_id")
            .where(F.col("_first") <= F.col("last_ts")).select("user_id"))
    rebuilt = late.unionByName(touched).distinct().localCheckpoint()
    n_rebuilt = rebuilt.count()
    continued = affected_users.join(rebuilt, "user_id", "left_anti")
    old = old.join(F.broadcast(continued), "user_id", "left_semi")
    new = inserted.join(F.broadcast(continued), "user_id", "left_semi")
    # Item user counts move by each continued user's items that are new to them (and by the
    # rebuilt users' change, below).
    first_time = (
        item_events(new).select("user_id", "item_id").distinct().join(current.select("item_id", "item_idx"), "item_id")
        .join(old.select("user_id", "seq_item_idx"), "user_id", "left")
        .where(F.col("seq_item_idx").isNull() | ~F.array_contains("seq_item_idx", F.col("item_idx")))
    )
    deltas = [first_time.groupBy("item_id").agg(F.count("*").alias("delta"))]
    rebuilt_ev = None
    if n_rebuilt:
        # Every current event of the rebuilt users, and the same users' events before this run.
        cols = ["user_id", "ts", "event_id", "item_id", "event_type"]
        rebuilt_ev = events.join(F.broadcast(rebuilt), "user_id", "left_semi").localCheckpoint()
        deltas.append(item_user_count_delta(rebuilt_ev, events_before(rebuilt_ev, changes.join(
            F.broadcast(rebuilt), "user_id", "left_semi"), cols)))
    steps_t.done("change_feed")

    # 1. Daily item counts: recompute the touched (item, day) cells from those days' partitions.
    if n_pairs:
        days = [r[0] for r in pairs.select("event_date").distinct().collect()]
        fresh = daily_item_counts(events.where(F.col("event_date").isin(days))
                                  .join(F.broadcast(pairs), ["item_id", "event_date"], "left_semi"))
        source = pairs.join(fresh, ["item_id", "event_date"], "left").fillna(0, list(COUNT_KINDS))
        # A cell whose events all went is deleted, not kept with zero counts (never negative).
        empty = F.greatest(*[F.col(c) for c in COUNT_KINDS]) == 0
        upsert(spark, cfg.table_path("item_daily_counts"), source, ["item_id", "event_date"], delete_when=empty)
    steps_t.done("item_daily_counts")

    # 2. Item profiles: distinct users move by the affected users' change only (no other user's
    #    events moved); windows and ranks come from the small daily table.
    delta = deltas[0] if len(deltas) == 1 else deltas[0].unionByName(deltas[1])
    delta = delta.groupBy("item_id").agg(F.sum("delta").alias("delta"))
    user_counts = (
        current.select("item_id", "users").join(delta, "item_id", "left")
        .select("item_id", (F.col("users") + F.coalesce("delta", F.lit(0))).alias("users"))
    )
    ids = current.select("item_id", "item_idx", "title", "category", "top_category", "category_idx", "brand",
                         "brand_idx", "price", "price_bucket", "in_stock")
    items = assemble_item_profiles(ids, read_table(spark, cfg, "item_daily_counts"), user_counts, as_of)
    changed_items = None
    if as_of != before:
        # The 1/7/30-day windows moved with the newest day, so most rows change: one overwrite
        # of this one-row-per-item table is cheaper than finding them and MERGEing them.
        write_table(items, cfg, "item_profiles")
    else:
        items = items.localCheckpoint()
        row_hash = F.xxhash64(*[F.col(c) for c in items.columns])
        changed = (
            items.withColumn("_h", row_hash).join(current.select("item_id", row_hash.alias("_old")), "item_id", "left")
            .where(F.col("_old").isNull() | (F.col("_h") != F.col("_old"))).drop("_h", "_old").localCheckpoint()
        )
        changed_items = changed.count()
        if changed_items:
            upsert(spark, cfg.table_path("item_profiles"), changed, ["item_id"])
    steps_t.done("item_profiles")

    # 3. The affected users' rows: continued or rebuilt, then MERGEd.
    if n_users:
        profiles = continue_user_profiles(old, new, users, current)
        if rebuilt_ev is not None:
            steps = build_steps(rebuilt_ev, current).localCheckpoint()
            profiles = profiles.unionByName(build_user_profiles(user_event_counts(rebuilt_ev), steps, users, current))
        profiles = profiles.localCheckpoint()
        steps_t.done("user_rows")
        # A rebuilt user may have lost events: their rows missing from the new ones go.
        gone_users = rebuilt if n_rebuilt else None
        gone_examples = rebuilt.crossJoin(spark.createDataFrame([(s,) for s in SPLITS], "split string")) \
            if n_rebuilt else None
        with ThreadPoolExecutor(3) as pool:  # two tables, two independent MERGEs, and the count moves
            merges = [pool.submit(upsert, spark, cfg.table_path("user_profiles"), profiles, ["user_id"],
                                  delete_missing=gone_users),
                      pool.submit(upsert, spark, cfg.table_path("training_examples"),
                                  build_training_examples(cfg, profiles), ["user_id", "split"],
                                  delete_missing=gone_examples)]
            moves = pool.submit(count_moves, cfg, profiles, old_rows) if last.get("counts") else None
            for m in merges:
                m.result()
        steps_t.done("user_profiles_and_training_examples")  # both MERGEs, run side by side
    counts = None
    if last.get("counts"):
        # The MERGEs replaced the affected users' rows (old_rows) by their new ones (profiles)
        # and their training examples likewise, a pure function of the rows; the catalogue,
        # hence item_profiles' rows, did not change. So the tables' row counts move by the
        # difference, which is cheaper than reading the three tables at their new versions.
        counts = copy.deepcopy(last["counts"])
        if n_users:
            for r in moves.result():
                if r["split"] is None:
                    counts["user_profiles"] += r["d"]
                else:
                    counts["training_examples"][r["split"]] = counts["training_examples"].get(r["split"], 0) + r["d"]
            counts["training_examples"] = {k: v for k, v in counts["training_examples"].items() if v}
    return {"as_of_date": str(as_of) if as_of else None, "affected_users": n_users,
            "rebuilt_users": n_rebuilt, "touched_item_days": n_pairs,
            "item_profiles_write": "overwrite" if changed_items is None else "merge" if changed_items else "none",
            "changed_item_rows": changed_items, "counts": counts}
