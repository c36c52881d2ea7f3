"""Item profiles: the catalogue with the model's dense ids, the daily item counts, and the
``item_profiles`` rows assembled from the two (plus each item's distinct users).

The daily counts are additive, so an incremental build recomputes only the (item, day) cells
new events touch and sums the rest; an item's distinct users move by the affected users'
change alone (``item_user_count_delta``).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys.config import Config

WINDOWS_DAYS = (1, 7, 30)
COUNT_KINDS = {"views": "view", "clicks": "click", "carts": "add_to_cart", "purchases": "purchase"}


def _assign_ids(keys: DataFrame, key: str, idx: str, old: DataFrame | None) -> DataFrame:
    """Dense ids 1..n for the distinct ``key`` values; ids already in ``old`` (key, idx) are kept
    and new keys get the next free ids in key order, so a model's embedding rows stay valid."""
    keys = keys.select(key).where(F.col(key).isNotNull()).distinct()
    by_key = Window.orderBy(key)
    if old is None:
        return keys.withColumn(idx, F.row_number().over(by_key).cast("int"))
    old = old.select(key, idx).where(F.col(key).isNotNull()).dropDuplicates([key])
    base = old.agg(F.max(idx)).first()[0] or 0
    fresh = keys.join(old, key, "left_anti").withColumn(idx, (F.lit(base) + F.row_number().over(by_key)).cast("int"))
    return keys.join(old, key).unionByName(fresh)


def catalog_ids(cfg: Config, catalog: DataFrame, previous: DataFrame | None) -> DataFrame:
    """The catalogue with the model's dense ids: ``item_idx``, ``category_idx``, ``brand_idx``
    (stable across rebuilds when ``previous`` item profiles exist) and ``price_bucket``
    (1..``price_buckets`` by price, 0 = no price). Ids start at 1: 0 is the model's padding."""
    ids = (
        catalog.join(_assign_ids(catalog, "item_id", "item_idx", previous), "item_id")
        .join(_assign_ids(catalog, "category", "category_idx", previous), "category", "left")
        .join(_assign_ids(catalog, "brand", "brand_idx", previous), "brand", "left")
    )
    return ids.withColumn("top_category", F.split("category", ">").getItem(0)).withColumn(
        "price_bucket",
        F.when(F.col("price").isNull(), F.lit(0)).otherwise(
            F.ntile(cfg.features.price_buckets).over(Window.orderBy("price", "item_id"))
        ).cast("int"),
    )


def item_events(events: DataFrame) -> DataFrame:
    """The events that concern an item: views, clicks, add-to-carts and purchases (not searches)."""
    return events.where(F.col("item_id").isNotNull() & (F.col("event_type") != "search"))


def daily_item_counts(events: DataFrame) -> DataFrame:
    """(item_id, event_date) → views, clicks, carts, purchases: the additive part of item profiles."""
    return (
        item_events(events)
        .groupBy("item_id", "event_date")
        .agg(*[F.sum((F.col("event_type") == t).cast("long")).alias(name) for name, t in COUNT_KINDS.items()])
    )


def item_user_counts(events: DataFrame) -> DataFrame:
    """Per item: the number of distinct users with an item event on it."""
    return item_events(events).groupBy("item_id").agg(F.countDistinct("user_id").alias("users"))


def item_user_count_delta(now: DataFrame, before: DataFrame) -> DataFrame:
    """(item_id, delta): how many more distinct users each item has in ``now`` than in
    ``before`` (both events of the same users, after and before this run's changes)."""
    def per_item(ev: DataFrame, name: str) -> DataFrame:
        return item_events(ev).select("item_id", "user_id").distinct().groupBy("item_id").agg(F.count("*").alias(name))

    return (
        per_item(now, "_now").join(per_item(before, "_before"), "item_id", "full")
        .select("item_id", (F.coalesce("_now", F.lit(0)) - F.coalesce("_before", F.lit(0))).alias("delta"))
    )


def assemble_item_profiles(ids: DataFrame, daily: DataFrame, users: DataFrame, as_of: dt.date | None) -> DataFrame:
    """One row per catalogue item from its ids, its daily counts and its distinct users.

    Windowed counts cover the last 1, 7 and 30 calendar days up to ``as_of`` (the newest
    event's date), so they can be summed from ``item_daily_counts`` without reading events.
    """
    windowed = []
    if as_of is not None:
        for days in WINDOWS_DAYS:
            recent = F.col("event_date") > F.date_sub(F.lit(as_of), days)
            windowed += [F.sum(F.when(recent, F.col(name)).otherwise(0)).alias(f"{name}_{days}d") for name in COUNT_KINDS]
    totals = daily.groupBy("item_id").agg(*[F.sum(name).alias(name) for name in COUNT_KINDS], *windowed)
    window_cols = [f"{name}_{d}d" for d in WINDOWS_DAYS for name in COUNT_KINDS] if as_of is not None else []
    items = (
        ids.join(totals, "item_id", "left")
        .join(users, "item_id", "left")
        .fillna(0, [*COUNT_KINDS, "users", *window_cols])
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
        "price", "price_bucket", "in_stock", *COUNT_KINDS, "users", "ctr", "conversion", "popularity_rank",
        *[F.col(c).cast("long") for c in window_cols],
    )
