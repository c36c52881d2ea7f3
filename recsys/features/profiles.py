"""Bronze → gold: ``item_profiles``, ``user_profiles`` and ``training_examples``.

A user's behaviour becomes a sequence of *steps*: consecutive events on the same item (a
view, its click, its add-to-cart, its purchase) collapse into one step that keeps the
deepest funnel stage reached. The leave-one-out split of DESIGN.md works on steps: the last
step is the test target, the one before it the validation target, the rest is training.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.ingest.pipeline import write_report
from recsys.tables import EVENT_TYPE_INDEX, FUNNEL_RANK, read_table, table_exists, write_table

SPLITS = ("train", "validation", "test")
WINDOWS_DAYS = (1, 7, 30)


def _map_expr(mapping: dict[str, int], c: Column) -> Column:
    return F.create_map(*[x for k, v in mapping.items() for x in (F.lit(k), F.lit(v))])[c]


def build_item_profiles(spark: SparkSession, cfg: Config, events: DataFrame, catalog: DataFrame) -> DataFrame:
    """One row per catalogue item: dense indices for the model, counts, CTR and conversion.

    ``item_idx`` runs 1..N (0 is the model's padding); ``category_idx``, ``brand_idx`` and
    ``price_bucket`` likewise start at 1.
    """
    as_of = events.agg(F.max("ts")).first()[0]
    kinds = {"views": "view", "clicks": "click", "carts": "add_to_cart", "purchases": "purchase"}
    windowed = []
    if as_of is not None:
        # Counts over the last 1, 7 and 30 days before the newest event (trend features).
        for days in WINDOWS_DAYS:
            recent = F.col("ts") > F.lit(as_of) - F.expr(f"INTERVAL {days} DAYS")
            windowed += [F.sum(((F.col("event_type") == t) & recent).cast("long")).alias(f"{name}_{days}d")
                         for name, t in kinds.items()]
    counts = (
        events.where(F.col("item_id").isNotNull())
        .groupBy("item_id")
        .agg(
            *[F.sum((F.col("event_type") == t).cast("long")).alias(name) for name, t in kinds.items()],
            F.countDistinct("user_id").alias("users"),
            *windowed,
        )
    )
    window_cols = [f"{name}_{d}d" for d in WINDOWS_DAYS for name in kinds] if as_of is not None else []
    by_id = Window.orderBy("item_id")
    items = (
        catalog.join(counts, "item_id", "left")
        .fillna(0, ["views", "clicks", "carts", "purchases", "users", *window_cols])
        .withColumn("item_idx", F.row_number().over(by_id).cast("int"))
        .withColumn("category_idx", F.dense_rank().over(Window.orderBy("category")).cast("int"))
        .withColumn("top_category", F.split("category", ">").getItem(0))
        .withColumn("brand_idx", F.dense_rank().over(Window.orderBy("brand")).cast("int"))
        .withColumn(
            "price_bucket",
            F.when(F.col("price").isNull(), F.lit(0)).otherwise(
                F.ntile(cfg.features.price_buckets).over(Window.orderBy("price"))
            ).cast("int"),
        )
        # Beta(1, 1)-smoothed rates: an item with no views has CTR 0.5, not 0/0.
        .withColumn("ctr", (F.col("clicks") + 1) / (F.col("views") + 2))
        .withColumn("conversion", (F.col("purchases") + 1) / (F.col("views") + 2))
        .withColumn(
            "popularity_rank",
            F.row_number().over(Window.orderBy(F.desc("users"), F.desc("views"), "item_id")).cast("int"),
        )
    )
    return items.select(
        "item_id", "item_idx", "title", "category", "top_category", "category_idx", "brand", "brand_idx",
        "price", "price_bucket", "in_stock", "views", "clicks", "carts", "purchases", "users", "ctr",
        "conversion", "popularity_rank", *window_cols,
    )


def build_steps(events: DataFrame, items: DataFrame) -> DataFrame:
    """Item events → one row per (user, step): ``item_idx``, deepest ``event_type``, ``ts``, ``step``."""
    ev = events.where(F.col("event_type") != "search").join(
        items.select("item_id", "item_idx"), "item_id"
    )
    w = Window.partitionBy("user_id").orderBy("ts", "event_id")
    ev = ev.withColumn("_new", (F.lag("item_id").over(w).isNull() | (F.lag("item_id").over(w) != F.col("item_id"))).cast("int"))
    ev = ev.withColumn("step", F.sum("_new").over(w.rowsBetween(Window.unboundedPreceding, 0)))
    rank = _map_expr(FUNNEL_RANK, F.col("event_type"))
    steps = ev.groupBy("user_id", "step").agg(
        F.first("item_id").alias("item_id"),
        F.first("item_idx").alias("item_idx"),
        F.min("ts").alias("ts"),
        F.max(rank).alias("funnel"),
        F.max((F.col("event_type") == "purchase").cast("int")).alias("purchased"),
    )
    # funnel rank 1..4 → its event type name
    names = F.array(*[F.lit(t) for t, _ in sorted(FUNNEL_RANK.items(), key=lambda kv: kv[1])])
    return steps.withColumn("event_type", F.element_at(names, F.col("funnel")))


def _top_shares(steps: DataFrame, col: str, name: str, out: str, k: int = 3) -> DataFrame:
    """Per user: the ``k`` most frequent values of ``col`` among their steps, with their share."""
    per = steps.where(F.col(col).isNotNull()).groupBy("user_id", col).count()
    per = per.withColumn("share", F.col("count") / F.sum("count").over(Window.partitionBy("user_id")))
    return per.groupBy("user_id").agg(
        F.slice(
            F.transform(
                F.sort_array(F.collect_list(F.struct(F.col("count"), F.col(col).alias("value"), F.col("share"))), asc=False),
                lambda x: F.struct(x["value"].alias(name), F.round(x["share"], 4).alias("share")),
            ),
            1, k,
        ).alias(out)
    )


def build_user_profiles(spark: SparkSession, cfg: Config, events: DataFrame, steps: DataFrame,
                        users: DataFrame | None, items: DataFrame | None = None) -> DataFrame:
    """One row per user: ordered history, counts per event type, recency / frequency /
    monetary value, top categories and brands with their shares, price level, demographics."""
    as_of = events.agg(F.max("ts")).first()[0]
    counts = events.groupBy("user_id").agg(
        *[F.sum((F.col("event_type") == t).cast("long")).alias(f"n_{t}") for t in EVENT_TYPE_INDEX],
        F.countDistinct("session_id").alias("n_sessions"),
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        F.sum(F.when(F.col("event_type") == "purchase", F.col("price") * F.coalesce("quantity", F.lit(1)))).alias("monetary"),
    )
    type_idx = _map_expr(EVENT_TYPE_INDEX, F.col("event_type"))
    hist = steps.groupBy("user_id").agg(
        F.sort_array(
            F.collect_list(F.struct("step", "ts", "item_id", "item_idx", "event_type", type_idx.alias("type_idx")))
        ).alias("_h"),
        F.array_distinct(F.collect_list(F.when(F.col("purchased") == 1, F.col("item_idx")))).alias("purchased_item_idx"),
    )
    hist = hist.select(
        "user_id",
        F.transform("_h", lambda s: F.struct(s["ts"].alias("ts"), s["item_id"].alias("item_id"), s["event_type"].alias("event_type"))).alias("history"),
        F.transform("_h", lambda s: s["item_idx"]).alias("seq_item_idx"),
        F.transform("_h", lambda s: s["type_idx"]).alias("seq_type_idx"),
        "purchased_item_idx",
    )
    prof = counts.join(hist, "user_id", "left").withColumn(
        "recency_days", F.datediff(F.lit(as_of), F.col("last_ts"))
    ).withColumn("n_steps", F.coalesce(F.size("seq_item_idx"), F.lit(0)))
    if items is not None:
        rich = steps.join(items.select("item_idx", "top_category", "brand", "price_bucket"), "item_idx")
        prof = (
            prof.join(_top_shares(rich, "top_category", "category", "top_categories"), "user_id", "left")
            .join(_top_shares(rich, "brand", "brand", "top_brands"), "user_id", "left")
            .join(rich.groupBy("user_id").agg(F.round(F.avg(F.when(F.col("price_bucket") > 0, F.col("price_bucket"))), 2)
                                              .alias("price_level")), "user_id", "left")
        )
    if users is not None:
        prof = prof.join(users.select("user_id", "age", "gender", "location"), "user_id", "left")
    return prof


def _last_padded(arr: Column, length: int) -> Column:
    """The last ``length`` elements of ``arr``, left-padded with 0 to exactly ``length``."""
    tail = F.when(F.size(arr) > length, F.slice(arr, F.size(arr) - length + 1, length)).otherwise(arr)
    return F.concat(F.array_repeat(F.lit(0), F.lit(length) - F.size(tail)), tail)


def build_training_examples(cfg: Config, profiles: DataFrame) -> DataFrame:
    """Leave-one-out examples, one row per (user, split), all arrays of length ``max_seq_len``.

    * train: inputs = steps[1 .. n-3], targets = steps[2 .. n-2] (next-item at every position)
    * validation: inputs = steps[1 .. n-2], target = step n-1
    * test: inputs = steps[1 .. n-1], target = step n
    ``history_items`` (variable length) lists every item before the target, for masking.
    """
    L = cfg.features.max_seq_len
    p = profiles.where(F.col("n_steps") >= cfg.features.min_interactions).select(
        "user_id", "seq_item_idx", "seq_type_idx", F.col("n_steps").alias("n")
    )
    n = F.col("n")

    def head(c: str, k: Column) -> Column:
        return F.slice(F.col(c), 1, k)

    def row(split: str, n_in: Column, targets: Column, target: Column) -> DataFrame:
        return p.select(
            "user_id",
            F.lit(split).alias("split"),
            _last_padded(head("seq_item_idx", n_in), L).alias("input_items"),
            _last_padded(head("seq_type_idx", n_in), L).alias("input_types"),
            targets.alias("target_items"),
            target.cast("int").alias("target"),
            F.array_distinct(head("seq_item_idx", n_in)).alias("history_items"),
        )

    zeros = F.array_repeat(F.lit(0), L)
    train = row("train", n - 3, _last_padded(F.slice(F.col("seq_item_idx"), 2, n - 3), L), F.lit(0)).where(
        F.size(F.array_remove("input_items", 0)) >= 1
    )
    valid = row("validation", n - 2, F.concat(F.slice(zeros, 1, L - 1), F.array(F.element_at("seq_item_idx", n - 1))),
                F.element_at("seq_item_idx", n - 1))
    test = row("test", n - 1, F.concat(F.slice(zeros, 1, L - 1), F.array(F.element_at("seq_item_idx", n))),
               F.element_at("seq_item_idx", n))
    return train.unionByName(valid).unionByName(test)


def build_profiles(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Build the gold tables from bronze and return a report with their row counts."""
    events = read_table(spark, cfg, "events")
    catalog = read_table(spark, cfg, "catalog")
    users = read_table(spark, cfg, "users") if table_exists(cfg, "users") else None

    items = build_item_profiles(spark, cfg, events, catalog)
    write_table(items, cfg, "item_profiles")
    items = read_table(spark, cfg, "item_profiles")

    steps = build_steps(events, items)
    profiles = build_user_profiles(spark, cfg, events, steps, users, items)
    write_table(profiles, cfg, "user_profiles")
    profiles = read_table(spark, cfg, "user_profiles")

    examples = build_training_examples(cfg, profiles)
    write_table(examples, cfg, "training_examples", partition_by=["split"])
    examples = read_table(spark, cfg, "training_examples")

    by_split = {r["split"]: r["count"] for r in examples.groupBy("split").count().collect()}
    report = {
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "item_profiles": items.count(),
        "user_profiles": profiles.count(),
        "training_examples": by_split,
    }
    write_report(cfg, "profiles", report)
    return report
