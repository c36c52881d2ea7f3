"""Bronze → gold: ``item_profiles``, ``user_profiles`` and ``training_examples``.

A user's behaviour becomes a sequence of *steps*: consecutive events on the same item (a
view, its click, its add-to-cart, its purchase) collapse into one step that keeps the
deepest funnel stage reached. The leave-one-out split of DESIGN.md works on steps: the last
step is the test target, the one before it the validation target, the rest is training.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql.window import WindowSpec
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.reports import write_report
from recsys.tables import (EVENT_TYPE_INDEX, FUNNEL_RANK, read_pinned, read_table, require_table, table_exists,
                           table_version, write_table)
from recsys.timing import StepTimer

SPLITS = ("train", "validation", "test")
WINDOWS_DAYS = (1, 7, 30)
COUNT_KINDS = {"views": "view", "clicks": "click", "carts": "add_to_cart", "purchases": "purchase"}


def by_time() -> WindowSpec:
    """A user's events in time order (ties broken by event id)."""
    return Window.partitionBy("user_id").orderBy("ts", "event_id")


def _map_expr(mapping: dict[str, int], c: Column) -> Column:
    return F.create_map(*[x for k, v in mapping.items() for x in (F.lit(k), F.lit(v))])[c]


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


def catalog_ids(spark: SparkSession, cfg: Config, catalog: DataFrame, previous: DataFrame | None) -> DataFrame:
    """The catalogue with the model's dense ids: ``item_idx``, ``category_idx``, ``brand_idx``
    (stable across rebuilds when ``previous`` item profiles exist) and ``price_bucket``
    (1..``price_buckets`` by price, 0 = no price)."""
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


def daily_item_counts(events: DataFrame) -> DataFrame:
    """(item_id, event_date) → views, clicks, carts, purchases: the additive part of item profiles."""
    return (
        item_events(events)
        .groupBy("item_id", "event_date")
        .agg(*[F.sum((F.col("event_type") == t).cast("long")).alias(name) for name, t in COUNT_KINDS.items()])
    )


def item_events(events: DataFrame) -> DataFrame:
    """The events that concern an item: views, clicks, add-to-carts and purchases (not searches)."""
    return events.where(F.col("item_id").isNotNull() & (F.col("event_type") != "search"))


def item_user_counts(events: DataFrame) -> DataFrame:
    """Per item: the number of distinct users with an item event on it."""
    return item_events(events).groupBy("item_id").agg(F.countDistinct("user_id").alias("users"))


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


def build_item_profiles(spark: SparkSession, cfg: Config, events: DataFrame, catalog: DataFrame,
                        previous: DataFrame | None = None) -> DataFrame:
    """One row per catalogue item: dense indices for the model, counts, CTR and conversion.

    ``item_idx`` runs 1..N (0 is the model's padding); ``category_idx``, ``brand_idx`` and
    ``price_bucket`` likewise start at 1.
    """
    as_of = events.agg(F.max("event_date")).first()[0]
    return assemble_item_profiles(catalog_ids(spark, cfg, catalog, previous), daily_item_counts(events),
                                  item_user_counts(events), as_of)


def build_steps(events: DataFrame, items: DataFrame) -> DataFrame:
    """Item events → one row per (user, step): ``item_idx``, deepest ``event_type``, ``ts``, ``step``."""
    ev = item_events(events).join(items.select("item_id", "item_idx"), "item_id")
    w = by_time()
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


def _tops(per: DataFrame, name: str, out: str, k: int = 3) -> DataFrame:
    """From (user_id, ``name``, count) rows: every value's count in value order
    (``<name>_counts``, the state an incremental build adds new steps to), and from it the
    ``k`` most frequent values with their share (``out``, see ``_tops_of``)."""
    counts = per.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct(F.col(name), F.col("count")))).alias(f"{name}_counts"))
    return counts.select("user_id", _tops_of(F.col(f"{name}_counts"), name, k).alias(out), f"{name}_counts")


def _purchase_value() -> Column:
    """A purchase's value in exact cents (price rounded to 2 decimals, times the quantity), so
    that sums do not depend on the order they are added in."""
    return F.when(F.col("event_type") == "purchase",
                  F.col("price").try_cast("decimal(18,2)") * F.coalesce("quantity", F.lit(1)))


COUNT_COLUMNS = [f"n_{t}" for t in EVENT_TYPE_INDEX]


def user_event_counts(events: DataFrame) -> DataFrame:
    """Per user: events per type, visits (``n_sessions``: runs of consecutive events with the
    same session id; events without one do not break a run), first and last event time, the
    last session id, and the purchase value (``monetary``)."""
    # An event starts a visit when it has a session id and the user's last earlier session id
    # (in time order, skipping events without one) is none or another one.
    s = F.col("session_id")
    earlier = F.last("session_id", ignorenulls=True).over(by_time().rowsBetween(Window.unboundedPreceding, -1))
    ev = events.withColumn("_visit", (s.isNotNull() & (earlier.isNull() | (earlier != s))).cast("long"))
    return ev.groupBy("user_id").agg(
        *[F.sum((F.col("event_type") == t).cast("long")).alias(f"n_{t}") for t in EVENT_TYPE_INDEX],
        F.sum("_visit").alias("n_sessions"),
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        # the last session id that is not null (max_by skips rows whose ordering is null)
        F.max_by("session_id", F.when(F.col("session_id").isNotNull(), F.struct("ts", "event_id")))
        .alias("last_session_id"),
        F.sum(_purchase_value()).cast("double").alias("monetary"),
    )


def _history(h: Column) -> dict[str, Column]:
    """The history columns from ``h``, a user's steps as structs sorted by step."""
    return {
        "history": F.transform(h, lambda s: F.struct(s["ts"].alias("ts"), s["item_id"].alias("item_id"),
                                                     s["event_type"].alias("event_type"))),
        "seq_item_idx": F.transform(h, lambda s: s["item_idx"]),
        "seq_type_idx": F.transform(h, lambda s: s["type_idx"]),
    }


def _sorted_steps(steps: DataFrame) -> DataFrame:
    """(user_id, _h): each user's steps as structs sorted by step."""
    type_idx = _map_expr(EVENT_TYPE_INDEX, F.col("event_type"))
    return steps.groupBy("user_id").agg(F.sort_array(F.collect_list(
        F.struct("step", "ts", "item_id", "item_idx", "event_type", type_idx.alias("type_idx")))).alias("_h"))


def _purchased(h: Column) -> Column:
    """Distinct purchased items, in the order of their first purchase."""
    return F.array_distinct(F.transform(F.filter(h, lambda s: s["event_type"] == "purchase"), lambda s: s["item_idx"]))


def _step_features(steps: DataFrame, items: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Per-step rows for the additive step features: (user_id, category, count),
    (user_id, brand, count) and (user_id, priced_steps, price_bucket_sum)."""
    rich = steps.join(items.select("item_idx", "top_category", "brand", "price_bucket"), "item_idx")
    one = F.lit(1).cast("long")
    priced = F.col("price_bucket") > 0
    return (
        rich.where(F.col("top_category").isNotNull()).select("user_id", F.col("top_category").alias("category"), one.alias("count")),
        rich.where(F.col("brand").isNotNull()).select("user_id", "brand", one.alias("count")),
        rich.select("user_id", F.when(priced, 1).otherwise(0).cast("long").alias("priced_steps"),
                    F.when(priced, F.col("price_bucket")).cast("long").alias("price_bucket_sum")),
    )


def _assemble_user_profiles(counts: DataFrame, hist: DataFrame, categories: DataFrame, brands: DataFrame,
                            prices: DataFrame, users: DataFrame | None) -> DataFrame:
    per = lambda df, name: df.groupBy("user_id", name).agg(F.sum("count").alias("count"))  # noqa: E731
    price = prices.groupBy("user_id").agg(F.sum("priced_steps").alias("priced_steps"),
                                          F.sum("price_bucket_sum").alias("price_bucket_sum"))
    prof = (
        counts.join(hist, "user_id", "left")
        .withColumn("n_steps", F.coalesce(F.size("seq_item_idx"), F.lit(0)))
        .join(_tops(per(categories, "category"), "category", "top_categories"), "user_id", "left")
        .join(_tops(per(brands, "brand"), "brand", "top_brands"), "user_id", "left")
        .join(price, "user_id", "left")
        # mean price bucket over the steps whose item has a price
        .withColumn("price_level", F.when(F.col("priced_steps") > 0,
                                          F.round(F.col("price_bucket_sum") / F.col("priced_steps"), 2)))
    )
    if users is not None:
        prof = prof.join(users.select("user_id", "age", "gender", "location"), "user_id", "left")
    return prof


def build_user_profiles(counts: DataFrame, steps: DataFrame, users: DataFrame | None, items: DataFrame) -> DataFrame:
    """One row per user of ``counts`` (``user_event_counts``): ordered history, counts per event
    type, recency / frequency / monetary value, top categories and brands with their shares,
    price level, demographics, plus the additive state an incremental build continues from
    (``category_counts``, ``brand_counts``, ``priced_steps``, ``price_bucket_sum``).

    Recency is ``last_ts`` (days since = the reader's today minus it): storing a day count
    would make every profile change each day, and an incremental build touch every user.
    """
    h = _sorted_steps(steps)
    hist = h.select("user_id", *[c.alias(name) for name, c in _history(F.col("_h")).items()],
                    _purchased(F.col("_h")).alias("purchased_item_idx"))
    return _assemble_user_profiles(counts, hist, *_step_features(steps, items), users)


def _counted(old: Column, new_values: Column, name: str) -> Column:
    """``old`` (a ``<name>_counts`` array of (name, count), or null) followed by a count of 1 for
    each of ``new_values``: the entries ``_merged_counts`` adds up."""
    ones = F.transform(new_values, lambda v: F.struct(v.alias(name), F.lit(1).cast("long").alias("count")))
    return F.concat(F.coalesce(old, F.slice(ones, 1, 0)), ones)


def _merged_counts(entries: Column, name: str) -> Column:
    """The (name, count) ``entries`` summed per name, sorted by name (null when there are none)."""
    keys = F.array_sort(F.array_distinct(F.transform(entries, lambda x: x[name])))
    merged = F.transform(keys, lambda k: F.struct(k.alias(name), F.aggregate(
        F.filter(entries, lambda x: x[name] == k), F.lit(0).cast("long"), lambda a, x: a + x["count"]).alias("count")))
    return F.when(F.size(entries) > 0, merged)


def _tops_of(counts: Column, name: str, k: int = 3) -> Column:
    """The ``k`` most frequent values of a ``<name>_counts`` array with their share of the
    total, rounded to 4 places (ties: the larger value first)."""
    total = F.aggregate(counts, F.lit(0).cast("long"), lambda a, x: a + x["count"])
    ranked = F.sort_array(F.transform(counts, lambda x: F.struct(
        x["count"].alias("count"), x[name].alias("value"), (x["count"] / total).alias("share"))), asc=False)
    return F.slice(F.transform(ranked, lambda x: F.struct(x["value"].alias(name), F.round(x["share"], 4).alias("share"))),
                   1, k)


def _of_type(t: str):
    # a one-argument lambda: Spark reads a second argument as the element's index
    return lambda e: e["event_type"] == t


def continue_user_profiles(old: DataFrame, new: DataFrame, users: DataFrame | None, items: DataFrame) -> DataFrame:
    """``build_user_profiles`` for users whose new events (``new``) all come after their profile
    row (``old``; missing for a new user), from those two alone: no older event is read.

    One pass: each user's new events are collected in time order and folded into the old row
    with array functions (one shuffle and one join, instead of the dozen joins and
    aggregations of a build from events). The profile's last step is the fold's starting
    point, so that a new event on the same item joins that step as it would from the raw
    events; the steps before it are kept as they are. Counts, visits, the purchase value,
    category and brand counts and the price sums continue from the old row's values.

    Each array expression is computed once, in its own projection: Spark does not merge
    projections when that would repeat a costly expression, and array functions run
    interpreted (with the fold inlined into its ten uses, this step took 22 to 25 s instead of
    5 s for a 1% day at 5M events)."""
    attrs = items.select("item_id", "item_idx", "top_category", "brand", "price_bucket")
    per_user = new.join(F.broadcast(attrs), "item_id", "left").groupBy("user_id").agg(F.sort_array(F.collect_list(
        F.struct("ts", "event_id", "session_id", "event_type", "item_id", "item_idx", "top_category", "brand",
                 "price_bucket", _purchase_value().alias("value")))).alias("_ev"))
    carried = [*COUNT_COLUMNS, "n_sessions", "first_ts", "last_ts", "last_session_id", "monetary", "history",
               "seq_item_idx", "seq_type_idx", "purchased_item_idx", "n_steps", "category_counts", "brand_counts",
               "priced_steps", "price_bucket_sum"]
    rows = old.alias("o").join(per_user.alias("n"), F.col("o.user_id") == F.col("n.user_id"), "full").select(
        F.coalesce("o.user_id", "n.user_id").alias("user_id"), *[F.col(f"o.{c}").alias(c) for c in carried],
        # no new events: an empty array of the events' type
        F.coalesce("n._ev", F.array_repeat(F.try_element_at("n._ev", F.lit(1)), 0)).alias("_ev"))
    c, evs = F.col, F.col("_ev")

    # Steps: consecutive item events on the same item collapse into one, keeping the deepest
    # stage; the fold starts from the profile's last step.
    rank = lambda t: _map_expr(FUNNEL_RANK, t)  # noqa: E731
    step = lambda ts, item_id, item_idx, cat, brand, bucket, funnel: F.struct(  # noqa: E731
        ts.alias("ts"), item_id.alias("item_id"), item_idx.cast("int").alias("item_idx"),
        cat.cast("string").alias("top_category"), brand.cast("string").alias("brand"),
        bucket.cast("int").alias("price_bucket"), funnel.cast("int").alias("funnel"))
    had = F.coalesce(c("n_steps"), F.lit(0)) > 0
    last = F.try_element_at(c("history"), F.lit(-1))
    # the last old step's category, brand and price were counted already: not needed again
    pseudo = step(last["ts"], last["item_id"], F.try_element_at(c("seq_item_idx"), F.lit(-1)), F.lit(None),
                  F.lit(None), F.lit(None), rank(last["event_type"]))

    def fold(acc: Column, e: Column) -> Column:
        prev = F.try_element_at(acc, F.lit(-1))
        joined = step(prev["ts"], prev["item_id"], prev["item_idx"], prev["top_category"], prev["brand"],
                      prev["price_bucket"], F.greatest(prev["funnel"], rank(e["event_type"])))
        fresh = step(e["ts"], e["item_id"], e["item_idx"], e["top_category"], e["brand"], e["price_bucket"],
                     rank(e["event_type"]))
        return F.when((F.size(acc) > 0) & (prev["item_id"] == e["item_id"]),
                      F.concat(F.slice(acc, 1, F.size(acc) - 1), F.array(joined))).otherwise(F.concat(acc, F.array(fresh)))

    item_evs = F.filter(evs, lambda e: e["item_idx"].isNotNull() & (e["event_type"] != "search"))
    rows = rows.withColumn("_tail", F.aggregate(item_evs, F.slice(F.array(pseudo), 1, F.when(had, 1).otherwise(0)), fold))
    tail = c("_tail")
    # the new steps (not the re-derived last one): their features add to the old counts
    rows = rows.withColumn("_fresh", F.filter(tail, lambda s, i: ~had | (i > 0)))
    fresh = c("_fresh")

    names = F.array(*[F.lit(t) for t, _ in sorted(FUNNEL_RANK.items(), key=lambda kv: kv[1])])
    type_of = lambda s: F.element_at(names, s["funnel"])  # noqa: E731
    keep = F.greatest(F.coalesce(c("n_steps"), F.lit(0)) - 1, F.lit(0))
    tails = {
        "history": F.transform(tail, lambda s: F.struct(s["ts"].alias("ts"), s["item_id"].alias("item_id"),
                                                        type_of(s).alias("event_type"))),
        "seq_item_idx": F.transform(tail, lambda s: s["item_idx"]),
        "seq_type_idx": F.transform(tail, lambda s: _map_expr(EVENT_TYPE_INDEX, type_of(s))),
    }
    bought = F.transform(F.filter(tail, lambda s: s["funnel"] == FUNNEL_RANK["purchase"]), lambda s: s["item_idx"])
    rows = rows.select(
        "user_id", *carried, "_ev", "_fresh",
        *[F.concat(F.coalesce(F.slice(c(name), 1, keep), F.slice(after, 1, 0)), after).alias(f"_{name}")
          for name, after in tails.items()],
        F.array_distinct(F.concat(F.coalesce(c("purchased_item_idx"), F.slice(bought, 1, 0)), bought)).alias("_purchased"),
        _counted(c("category_counts"), F.transform(F.filter(fresh, lambda s: s["top_category"].isNotNull()),
                                                   lambda s: s["top_category"]), "category").alias("_categories"),
        _counted(c("brand_counts"), F.transform(F.filter(fresh, lambda s: s["brand"].isNotNull()),
                                                lambda s: s["brand"]), "brand").alias("_brands"),
        F.filter(fresh, lambda s: s["price_bucket"] > 0).alias("_priced"),
        F.filter(F.transform(evs, lambda e: e["value"]), lambda v: v.isNotNull()).alias("_values"),
    )

    # Counts, visits, first and last event and the purchase value add up; the first new event
    # continues the visit of the old row's last_session_id.
    visit = lambda acc, e: F.struct(  # noqa: E731
        F.coalesce(e["session_id"], acc["prev"]).alias("prev"),
        (acc["n"] + (e["session_id"].isNotNull() & (acc["prev"].isNull() | (acc["prev"] != e["session_id"])))
         .cast("long")).alias("n"))
    visits = F.aggregate(evs, F.struct(c("last_session_id").alias("prev"), F.lit(0).cast("long").alias("n")), visit,
                         lambda acc: acc["n"])
    with_session = F.filter(evs, lambda e: e["session_id"].isNotNull())
    values, priced = c("_values"), c("_priced")
    added = F.aggregate(values, F.lit(0).cast("decimal(38,2)"), lambda a, v: (a + v).cast("decimal(38,2)"))
    any_steps = F.size("_seq_item_idx") > 0  # a user without steps has no history, as in a full build
    prof = rows.select(
        "user_id",
        *[(F.coalesce(c(f"n_{t}"), F.lit(0)) + F.size(F.filter(evs, _of_type(t)))).cast("long").alias(f"n_{t}")
          for t in EVENT_TYPE_INDEX],
        (F.coalesce(c("n_sessions"), F.lit(0)) + visits).alias("n_sessions"),
        F.coalesce(c("first_ts"), F.try_element_at(evs, F.lit(1))["ts"]).alias("first_ts"),
        F.coalesce(F.try_element_at(evs, F.lit(-1))["ts"], c("last_ts")).alias("last_ts"),
        F.coalesce(F.try_element_at(with_session, F.lit(-1))["session_id"], c("last_session_id")).alias("last_session_id"),
        F.when(c("monetary").isNull() & (F.size(values) == 0), F.lit(None))
        .otherwise(F.coalesce(c("monetary").cast("decimal(38,2)"), F.lit(0)) + added).cast("double").alias("monetary"),
        *[F.when(any_steps, c(f"_{name}")).alias(name) for name in tails],
        F.when(any_steps, c("_purchased")).alias("purchased_item_idx"),
        _merged_counts(c("_categories"), "category").alias("category_counts"),
        _merged_counts(c("_brands"), "brand").alias("brand_counts"),
        F.when((F.size(fresh) > 0) | c("priced_steps").isNotNull(),
               F.coalesce(c("priced_steps"), F.lit(0)) + F.size(priced)).cast("long").alias("priced_steps"),
        F.when(c("price_bucket_sum").isNull() & (F.size(priced) == 0), F.lit(None)).otherwise(
            F.coalesce(c("price_bucket_sum"), F.lit(0))
            + F.aggregate(priced, F.lit(0).cast("long"), lambda a, s: a + s["price_bucket"])).cast("long")
        .alias("price_bucket_sum"),
    )
    prof = prof.select(
        "*",
        F.coalesce(F.size("seq_item_idx"), F.lit(0)).alias("n_steps"),
        _tops_of(c("category_counts"), "category").alias("top_categories"),
        _tops_of(c("brand_counts"), "brand").alias("top_brands"),
        F.when(c("priced_steps") > 0, F.round(c("price_bucket_sum") / c("priced_steps"), 2)).alias("price_level"),
    )
    if users is not None:
        prof = prof.join(users.select("user_id", "age", "gender", "location"), "user_id", "left")
    return prof


def _last_padded(arr: Column, length: int) -> Column:
    """The last ``length`` elements of ``arr``, left-padded with 0 to exactly ``length``."""
    tail = F.when(F.size(arr) > length, F.slice(arr, F.size(arr) - length + 1, length)).otherwise(arr)
    return F.concat(F.array_repeat(F.lit(0), F.lit(length) - F.size(tail)), tail)


def validation_user(share: float) -> Column:
    """True for the fixed hash sample of users (``share`` of them) that keep a validation target."""
    return F.pmod(F.xxhash64("user_id"), F.lit(10_000)) < F.lit(int(round(share * 10_000)))


def build_training_examples(cfg: Config, profiles: DataFrame) -> DataFrame:
    """Leave-one-out examples, one row per (user, split), all arrays of length ``max_seq_len``.

    * train: inputs = steps[1 .. n-3], targets = steps[2 .. n-2] (next-item at every position)
    * validation: inputs = steps[1 .. n-2], target = step n-1
    * test: inputs = steps[1 .. n-1], target = step n
    ``history_items`` (variable length) lists every item before the target, for masking.

    With ``features.validation_share`` < 1, only that share of users (a fixed hash sample)
    keeps its step n-1 as a validation target; for everyone else step n-1 becomes one more
    training target (inputs steps[1 .. n-2], targets steps[2 .. n-1]) and there is no
    validation row. The test target is never trained on.
    """
    L = cfg.features.max_seq_len
    p = profiles.where(F.col("n_steps") >= cfg.features.min_interactions).select(
        "user_id", "seq_item_idx", "seq_type_idx", F.col("n_steps").alias("n"),
        validation_user(cfg.features.validation_share).alias("_holdout"),
    )
    n = F.col("n")
    n_train = F.when(F.col("_holdout"), n - 3).otherwise(n - 2)

    def head(c: str, k: Column) -> Column:
        return F.slice(F.col(c), 1, k)

    def row(split: str, n_in: Column, targets: Column, target: Column) -> DataFrame:
        return p.select(
            "_holdout",
            "user_id",
            F.lit(split).alias("split"),
            _last_padded(head("seq_item_idx", n_in), L).alias("input_items"),
            _last_padded(head("seq_type_idx", n_in), L).alias("input_types"),
            targets.alias("target_items"),
            target.cast("int").alias("target"),
            F.array_distinct(head("seq_item_idx", n_in)).alias("history_items"),
        )

    zeros = F.array_repeat(F.lit(0), L)
    train = row("train", n_train, _last_padded(F.slice(F.col("seq_item_idx"), 2, n_train), L), F.lit(0)).where(
        F.size(F.array_remove("input_items", 0)) >= 1
    )
    valid = row("validation", n - 2, F.concat(F.slice(zeros, 1, L - 1), F.array(F.element_at("seq_item_idx", n - 1))),
                F.element_at("seq_item_idx", n - 1)).where(F.col("_holdout"))
    test = row("test", n - 1, F.concat(F.slice(zeros, 1, L - 1), F.array(F.element_at("seq_item_idx", n))),
               F.element_at("seq_item_idx", n))
    return train.unionByName(valid).unionByName(test).drop("_holdout")


# --- orchestration: full and incremental builds -----------------------------------------------

# Bump when the gold tables' definitions change: the next run rebuilds them in full.
GOLD_SCHEMA_VERSION = 4
GOLD_TABLES = ("item_daily_counts", "item_profiles", "user_profiles", "training_examples")
BRONZE_INPUTS = ("events", "catalog", "users")
# An incremental build MERGEs the affected users (a fifth of them after a day of a shop's
# logs) into user_profiles and training_examples, spread over every file. With deletion
# vectors a MERGE writes the new rows and marks the old ones deleted instead of rewriting
# every file: its time fell by about a third at 5M events.
MERGED_BY_USER = {"delta.enableDeletionVectors": "true"}


def log_path(cfg: Config) -> str:
    """The profiles log: one row per build with the bronze versions it covered."""
    return str(cfg.lakehouse.root_path / "_profiles_log")


def _fingerprint(cfg: Config) -> str:
    f = cfg.features
    return json.dumps({"schema": GOLD_SCHEMA_VERSION, "max_seq_len": f.max_seq_len,
                       "min_interactions": f.min_interactions, "price_buckets": f.price_buckets,
                       "validation_share": f.validation_share}, sort_keys=True)


def _delta_state(spark: SparkSession, cfg: Config, name: str) -> dict[str, Any] | None:
    """The table's identity and latest version, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(cfg, name):
        return None
    path = cfg.table_path(name)
    return {"id": DeltaTable.forPath(spark, path).detail().first()["id"], "version": table_version(spark, path)}


def _last_log(spark: SparkSession, cfg: Config) -> dict[str, Any] | None:
    if not (Path(log_path(cfg)) / "_delta_log").is_dir():
        return None
    row = spark.read.format("delta").load(log_path(cfg)).orderBy(F.desc("finished_at")).limit(1).collect()
    return json.loads(row[0]["state"]) if row else None


def _write_log(spark: SparkSession, cfg: Config, mode: str, state: dict[str, Any]) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    spark.createDataFrame([(now, mode, json.dumps(state))], "finished_at timestamp, mode string, state string") \
        .write.format("delta").mode("append").save(log_path(cfg))


def _read_version(spark: SparkSession, cfg: Config, name: str, version: int) -> DataFrame:
    return read_pinned(spark, cfg.table_path(name), version)


PINNED_GOLD = ("item_profiles", "user_profiles")  # read back by the next incremental build


def _gold(spark: SparkSession, cfg: Config, last: dict[str, Any], name: str) -> DataFrame:
    """A gold table as the last build left it: a rerun after a run killed before its log was
    written starts from the same rows, so it does not add the same changes twice."""
    version = last.get("gold", {}).get(name)
    return read_table(spark, cfg, name) if version is None else _read_version(spark, cfg, name, version)


def _why_full(spark: SparkSession, cfg: Config, last: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """Why this run cannot be incremental (None = it can)."""
    if last is None:
        return "no earlier build"
    if last.get("fingerprint") != now["fingerprint"]:
        return "feature settings or gold schema changed"
    if any(not table_exists(cfg, t) for t in GOLD_TABLES):
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
            old = _read_version(spark, cfg, "catalog", cat_before["version"]).select(cols)
        except Exception:  # noqa: BLE001 - an old version vacuumed away: rebuild
            return "the catalogue's previous version is no longer readable"
        if _read_version(spark, cfg, "catalog", cat_now["version"]).select(cols).exceptAll(old).limit(1).count():
            return "the catalogue changed"
    return None


CHANGE_COLUMNS = ["event_id", "ts", "user_id", "session_id", "event_type", "item_id", "price", "quantity",
                  "event_date", "_change_type", "_commit_version"]


def _changes(spark: SparkSession, cfg: Config, last: dict[str, Any], now: dict[str, Any]) -> tuple[DataFrame, DataFrame]:
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


def _events_before(now: DataFrame, changes: DataFrame, cols: list[str]) -> DataFrame:
    """The events (``cols``) as they were before ``changes``, from those users' current events
    ``now``: an event the changes touched was there before only if its first change (by commit)
    removed or updated it (an event both inserted and deleted since was never there)."""
    gone = F.col("_change_type").isin("delete", "update_preimage")
    first = Window.partitionBy("event_id").orderBy("_commit_version", F.when(gone, 0).otherwise(1))
    firsts = changes.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1)
    return now.join(changes.select("event_id").distinct(), "event_id", "left_anti").select(*cols) \
        .unionByName(firsts.where(gone).select(*cols))


def _user_count_delta(now: DataFrame, before: DataFrame) -> DataFrame:
    """(item_id, delta): how many more distinct users each item has in ``now`` than in
    ``before`` (both events of the same users, after and before this run's changes)."""
    def per_item(ev: DataFrame, name: str) -> DataFrame:
        return item_events(ev).select("item_id", "user_id").distinct().groupBy("item_id").agg(F.count("*").alias(name))

    return (
        per_item(now, "_now").join(per_item(before, "_before"), "item_id", "full")
        .select("item_id", (F.coalesce("_now", F.lit(0)) - F.coalesce("_before", F.lit(0))).alias("delta"))
    )


def _count_moves(cfg: Config, new: DataFrame, old: DataFrame) -> list:
    """Rows (split, d): how many rows the replacement of users' rows ``old`` by ``new`` adds to
    ``user_profiles`` (split null) and to each split of ``training_examples``."""
    def signed(rows: DataFrame, sign: int) -> DataFrame:
        return build_training_examples(cfg, rows).select("split", F.lit(sign).alias("d")).unionByName(
            rows.select(F.lit(None).cast("string").alias("split"), F.lit(sign).alias("d")))

    return signed(new, 1).unionByName(signed(old, -1)).groupBy("split").agg(F.sum("d").alias("d")).collect()


def _merge(spark: SparkSession, cfg: Config, name: str, source: DataFrame, keys: list[str],
           candidates: DataFrame | None = None) -> None:
    """Upsert ``source`` into ``name`` by ``keys``; rows whose keys are in ``candidates`` but not
    in ``source`` are deleted (a rebuilt user who lost events can lose rows too)."""
    from delta.tables import DeltaTable

    cond = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    target = DeltaTable.forPath(spark, cfg.table_path(name)).alias("t")
    if candidates is None:
        target.merge(source.alias("s"), cond).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        return
    gone = candidates.join(source.select(*keys), keys, "left_anti").withColumn("_gone", F.lit(True))
    marked = source.withColumn("_gone", F.lit(False)).unionByName(gone, allowMissingColumns=True)
    values = {c: f"s.`{c}`" for c in source.columns}
    target.merge(marked.alias("s"), cond).whenMatchedDelete("s._gone").whenMatchedUpdate(set=values) \
        .whenNotMatchedInsert("NOT s._gone", values=values).execute()


def _full_build(spark: SparkSession, cfg: Config, events: DataFrame, catalog: DataFrame,
                users: DataFrame | None, steps_t: StepTimer) -> dict[str, Any]:
    previous = None
    if table_exists(cfg, "item_profiles"):  # keep the ids a trained model knows
        previous = read_table(spark, cfg, "item_profiles").select(
            "item_id", "item_idx", "category", "category_idx", "brand", "brand_idx").localCheckpoint()
    as_of = events.agg(F.max("event_date")).first()[0]
    write_table(daily_item_counts(events), cfg, "item_daily_counts")
    steps_t.done("item_daily_counts")
    ids = catalog_ids(spark, cfg, catalog, previous)
    items = assemble_item_profiles(ids, read_table(spark, cfg, "item_daily_counts"), item_user_counts(events), as_of)
    write_table(items, cfg, "item_profiles")
    items = read_table(spark, cfg, "item_profiles")
    steps_t.done("item_profiles")

    steps = build_steps(events, items).localCheckpoint()  # read four times below
    profiles = build_user_profiles(user_event_counts(events), steps, users, items)
    write_table(profiles, cfg, "user_profiles", properties=MERGED_BY_USER)
    profiles = read_table(spark, cfg, "user_profiles")
    steps_t.done("user_profiles")
    write_table(build_training_examples(cfg, profiles), cfg, "training_examples", partition_by=["split"],
                properties=MERGED_BY_USER)
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
    from delta.tables import DeltaTable

    changes, affected_users = _changes(spark, cfg, last, now)
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
    current = _gold(spark, cfg, last, "item_profiles").localCheckpoint()

    old = _gold(spark, cfg, last, "user_profiles").join(F.broadcast(affected_users), "user_id", "left_semi") \
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
        deltas.append(_user_count_delta(rebuilt_ev, _events_before(rebuilt_ev, changes.join(
            F.broadcast(rebuilt), "user_id", "left_semi"), cols)))
    steps_t.done("change_feed")

    # 1. Daily item counts: recompute the touched (item, day) cells from those days' partitions.
    if n_pairs:
        days = [r[0] for r in pairs.select("event_date").distinct().collect()]
        fresh = daily_item_counts(events.where(F.col("event_date").isin(days))
                                  .join(F.broadcast(pairs), ["item_id", "event_date"], "left_semi"))
        source = pairs.join(fresh, ["item_id", "event_date"], "left").fillna(0, list(COUNT_KINDS))
        empty = " AND ".join(f"s.{c} = 0" for c in COUNT_KINDS)
        DeltaTable.forPath(spark, cfg.table_path("item_daily_counts")).alias("t").merge(
            source.alias("s"), "t.item_id = s.item_id AND t.event_date = s.event_date"
        ).whenMatchedDelete(empty).whenMatchedUpdateAll().whenNotMatchedInsertAll(f"NOT ({empty})").execute()
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
            _merge(spark, cfg, "item_profiles", changed, ["item_id"])
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
            merges = [pool.submit(_merge, spark, cfg, "user_profiles", profiles, ["user_id"], gone_users),
                      pool.submit(_merge, spark, cfg, "training_examples", build_training_examples(cfg, profiles),
                                  ["user_id", "split"], gone_examples)]
            moves = pool.submit(_count_moves, cfg, profiles, old_rows) if last.get("counts") else None
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
        require_table(cfg, name)  # a clear error if ingest has not run
    t0 = time.time()
    steps_t = StepTimer()
    with ThreadPoolExecutor(3) as pool:  # three small driver-bound jobs each: overlap them
        states = dict(zip(BRONZE_INPUTS, pool.map(lambda name: _delta_state(spark, cfg, name), BRONZE_INPUTS)))
    # Read bronze at the versions this build records: rows an ingest appends meanwhile are the
    # next build's change feed, not counted twice.
    events, catalog, users = (_read_version(spark, cfg, name, states[name]["version"]) if states[name] else None
                              for name in BRONZE_INPUTS)
    now = {"fingerprint": _fingerprint(cfg), "tables": states}
    last = _last_log(spark, cfg)
    reason = "asked for a full build" if full else _why_full(spark, cfg, last, now)
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
    _write_log(spark, cfg, mode, now)  # last: a run killed before this point is simply redone
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
