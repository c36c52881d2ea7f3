"""Bronze ``events`` → the search tables: ``searches``, ``query_stats``, ``query_suggestions``.

* ``searches``: one row per logged search with a non-blank normalised query, and what the
  shopper did next in the same session (``engaged``: item → highest funnel step).
* ``query_stats``: per normalised query, counts over windows, engagement, a recency weight
  and the items its searchers engaged with most.
* ``query_suggestions``: per typed prefix, the most popular (recency-weighted) queries.

``build_search`` builds them in full, or, after a first build, from the ``events`` change
data feed: only the sessions whose events changed are recomputed and MERGEd, then only the
queries and prefixes those sessions concern. Both give the same tables.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config
from recsys.events import FUNNEL_RANK
from recsys.features.incremental import delta_state, last_log, write_log
from recsys.features.items import WINDOWS_DAYS
from recsys.reports import write_report
from recsys.search.text import normalise_query, prefixes
from recsys.tables import read_pinned, require_table, table_exists, upsert, write_table
from recsys.timing import StepTimer

SEARCH_TABLES = ("searches", "query_stats", "query_suggestions")
# Bump when normalise_query or these tables' definitions change: the next build is full.
SEARCH_TABLES_VERSION = 1
TOP_ITEMS = 10  # query_stats.top_items: the items most engaged with per query
PURCHASE = FUNNEL_RANK["purchase"]

ENGAGED_TYPE = T.ArrayType(T.StructType([T.StructField("item_id", T.StringType()),
                                         T.StructField("relevance", T.IntegerType())]))


def log_path(cfg: Config) -> str:
    """The search tables' log: one row per build with the ``events`` version it covered."""
    return cfg.lakehouse.uri("_search_log")


def fingerprint(cfg: Config) -> str:
    """The settings the search tables depend on: a build whose fingerprint differs is full."""
    s = cfg.search
    return json.dumps({"version": SEARCH_TABLES_VERSION, "half_life_days": s.half_life_days,
                       "suggest_min_users": s.suggest_min_users, "max_prefix_len": s.max_prefix_len,
                       "suggestions": s.suggestions}, sort_keys=True)


# --- the rows -----------------------------------------------------------------------------------

@F.pandas_udf(T.StringType())
def normalise_udf(queries: pd.Series) -> pd.Series:
    """``recsys.search.text.normalise_query`` over a column ("" for null)."""
    return pd.Series([normalise_query(q) if isinstance(q, str) else "" for q in queries], dtype=object)


def prefixes_udf(max_len: int):
    """A pandas UDF: normalised query → ``recsys.search.text.prefixes(query, max_len)``."""

    @F.pandas_udf(T.ArrayType(T.StringType()))
    def prefixes_of(queries: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for batch in queries:
            yield pd.Series([prefixes(q, max_len) for q in batch], dtype=object)

    return prefixes_of


def normalised_searches(events: DataFrame) -> DataFrame:
    """The search events of ``events`` with ``query_norm`` ("" where nothing searchable is
    left: those are not ``searches`` rows, but still end the engagement of the search before)."""
    return events.where(F.col("event_type") == "search").select(
        F.col("event_id").alias("search_id"), "user_id", "session_id", "ts", "event_date", "query",
        normalise_udf("query").alias("query_norm"))


def search_rows(events: DataFrame, searches: DataFrame) -> DataFrame:
    """``searches`` rows for the searches ``searches`` (``normalised_searches`` of ``events``,
    non-empty ones only) from ``events``, which must hold every event of their sessions.

    ``engaged`` (array<struct<item_id, relevance>>): the item events (view, click, add_to_cart,
    purchase) of the same user and session after the search by (ts, event_id) and before the
    session's next search event (any search, even one whose query normalises to ""); per item
    the highest ``FUNNEL_RANK``, ordered by the item's first engagement, then item_id. A search
    without a session has none: nothing can be attributed to it.
    """
    rank = F.create_map(*[x for t, r in FUNNEL_RANK.items() for x in (F.lit(t), F.lit(r))])[F.col("event_type")]
    in_session = events.where(F.col("session_id").isNotNull()
                              & (F.col("event_type").isin(*FUNNEL_RANK) | (F.col("event_type") == "search")))
    sessions = searches.where(F.col("session_id").isNotNull()).select("user_id", "session_id").distinct()
    by_time = Window.partitionBy("user_id", "session_id").orderBy("ts", "event_id") \
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    owner = F.last(F.when(F.col("event_type") == "search", F.col("event_id")), ignorenulls=True).over(by_time)
    engaged = (
        in_session.join(sessions, ["user_id", "session_id"], "left_semi")
        .select("ts", "event_type", "item_id", owner.alias("search_id"))
        .where((F.col("event_type") != "search") & F.col("search_id").isNotNull() & F.col("item_id").isNotNull())
        .groupBy("search_id", "item_id").agg(F.max(rank).cast("int").alias("relevance"), F.min("ts").alias("first"))
        .groupBy("search_id")
        .agg(F.array_sort(F.collect_list(F.struct("first", "item_id", "relevance"))).alias("engaged"))
        .select("search_id", F.transform("engaged", lambda x: F.struct(x["item_id"].alias("item_id"),
                                                                         x["relevance"].alias("relevance")))
                .alias("engaged"))
    )
    return (
        searches.join(engaged, "search_id", "left")
        .withColumn("engaged", F.coalesce("engaged", F.array().cast(ENGAGED_TYPE)))
        .select("search_id", "user_id", "session_id", "ts", "event_date", "query", "query_norm", "engaged",
                F.size("engaged").cast("int").alias("n_engaged"),
                F.coalesce(F.array_max(F.transform("engaged", lambda x: x["relevance"])), F.lit(0))
                .cast("int").alias("max_relevance"))
    )


def query_stats_rows(cfg: Config, searches: DataFrame, as_of: dt.date | None) -> DataFrame:
    """One ``query_stats`` row per ``query_norm`` of ``searches`` (all of that query's rows).

    Windows cover the last 1/7/30 calendar days up to ``as_of`` (``event_date > as_of - d``);
    ``weight`` = Σ 0.5 ** (days before ``as_of`` / ``search.half_life_days``), summed day by
    day in date order so that it is the same double however the rows are partitioned.
    """
    as_of_col = F.lit(as_of).cast("date")
    half_life = float(cfg.search.half_life_days)
    daily = searches.groupBy("query_norm", "event_date").agg(F.count("*").alias("n"))
    by_day = daily.groupBy("query_norm").agg(
        *[F.sum(F.when(F.col("event_date") > F.date_sub(as_of_col, d), F.col("n")).otherwise(0)).cast("long")
          .alias(f"searches_{d}d") for d in WINDOWS_DAYS],
        F.aggregate(F.array_sort(F.collect_list(F.struct("event_date", "n"))), F.lit(0.0).cast("double"),
                    lambda acc, x: acc + x["n"] * F.pow(F.lit(0.5), F.datediff(as_of_col, x["event_date"]) / half_life))
        .alias("weight"),
    )
    totals = searches.groupBy("query_norm").agg(
        F.count("*").alias("searches"),
        F.countDistinct("user_id").alias("users"),
        F.sum((F.col("n_engaged") > 0).cast("long")).alias("engaged_searches"),
        F.sum((F.col("max_relevance") == PURCHASE).cast("long")).alias("purchase_searches"),
        F.max("ts").alias("last_ts"),
    )
    best = Window.partitionBy("query_norm").orderBy(F.desc("score"), "item_id")
    top = (
        searches.select("query_norm", F.explode("engaged").alias("e"))
        .groupBy("query_norm", F.col("e.item_id").alias("item_id"))
        .agg(F.sum("e.relevance").cast("double").alias("score"), F.count("*").alias("searches"))
        .withColumn("_rank", F.row_number().over(best)).where(F.col("_rank") <= TOP_ITEMS)
        .groupBy("query_norm")
        .agg(F.array_sort(F.collect_list(F.struct("_rank", "item_id", "score", "searches"))).alias("top_items"))
        .select("query_norm", F.transform("top_items", lambda x: F.struct(
            x["item_id"].alias("item_id"), x["score"].alias("score"), x["searches"].alias("searches")))
            .alias("top_items"))
    )
    top_type = T.ArrayType(T.StructType([T.StructField("item_id", T.StringType()),
                                         T.StructField("score", T.DoubleType()),
                                         T.StructField("searches", T.LongType())]))
    return (
        totals.join(by_day, "query_norm").join(top, "query_norm", "left")
        .select(
            "query_norm", F.col("searches").cast("long").alias("searches"),
            *[f"searches_{d}d" for d in WINDOWS_DAYS],
            F.col("users").cast("long").alias("users"), "engaged_searches", "purchase_searches",
            (F.col("engaged_searches") / F.col("searches")).alias("engagement_rate"),
            (F.col("purchase_searches") / F.col("searches")).alias("conversion_rate"),
            "weight", "last_ts",
            F.coalesce("top_items", F.array().cast(top_type)).alias("top_items"),
            as_of_col.alias("as_of_date"),
        )
    )


def suggestion_rows(cfg: Config, stats: DataFrame) -> DataFrame:
    """``query_suggestions`` rows from ``query_stats`` rows: every prefix (1 to
    ``search.max_prefix_len`` characters) of each query typed by at least
    ``search.suggest_min_users`` users, with its top ``search.suggestions`` completions by
    weight desc, searches desc, query asc (``completions`` in that order)."""
    s = cfg.search
    best = Window.partitionBy("prefix").orderBy(F.desc("weight"), F.desc("searches"), "query")
    return (
        stats.where(F.col("users") >= s.suggest_min_users)
        .select(F.explode(prefixes_udf(s.max_prefix_len)("query_norm")).alias("prefix"),
                F.col("query_norm").alias("query"), "weight", "searches", "users")
        .withColumn("_rank", F.row_number().over(best)).where(F.col("_rank") <= s.suggestions)
        .groupBy("prefix")
        .agg(F.array_sort(F.collect_list(F.struct("_rank", "query", "weight", "searches", "users"))).alias("c"))
        .select("prefix", F.transform("c", lambda x: F.struct(
            x["query"].alias("query"), x["weight"].alias("weight"), x["searches"].alias("searches"),
            x["users"].alias("users"))).alias("completions"))
    )


# --- the build -----------------------------------------------------------------------------------

def build_search(spark: SparkSession, cfg: Config, *, full: bool = False) -> dict[str, Any]:
    """Build ``searches``, ``query_stats`` and ``query_suggestions`` from bronze ``events``.

    After a first (full) build, each run reads the ``events`` change data feed since the
    version the last build covered and recomputes only the affected sessions' searches (the
    sessions of changed events; a changed search without a session alone), the queries of
    their old and new rows, and those queries' prefixes (``mode: incremental``). When the
    newest search day (``as_of_date``) moved, every query's windows and weight moved with it:
    ``query_stats`` and ``query_suggestions`` are then recomputed in full
    (``query_stats_write: overwrite``). A full build happens when asked (``full=True`` or
    ``search.full_rebuild``), on the first run, when the search settings or table definitions
    changed, when a search table is missing, when ``events`` was recreated, or when its change
    feed since the last build can no longer be read (vacuumed, e.g. by forget-user).

    Returns the report (also written as ``search_tables-*.json``): ``mode``, ``reason`` (why
    full; None when incremental), row counts ``searches``, ``queries``, ``prefixes``,
    ``affected_sessions`` (None when full), ``empty_queries`` (search events whose query
    normalised to "", among those this run recomputed), ``as_of_date``, ``query_stats_write``.

    Raises:
        MissingTableError: ``events`` has not been ingested.
    """
    require_table(cfg, "events", spark)
    t0 = time.time()
    steps = StepTimer()
    events_state = delta_state(spark, cfg, "events")
    events = read_pinned(spark, cfg.table_path("events"), events_state["version"])
    now = {"fingerprint": fingerprint(cfg), "events": events_state}
    last = last_log(spark, cfg, log_path(cfg))
    reason = "asked for a full build" if full or cfg.search.full_rebuild else _why_full(spark, cfg, last, now)
    changes = None
    if reason is None:
        try:
            changes = _read_changes(spark, cfg, last["events"]["version"], now["events"]["version"])
        except Exception as e:  # noqa: BLE001 - its files vacuumed away (forget-user with vacuum): rebuild
            reason = (f"the events change feed since version {last['events']['version']} is no longer readable "
                      f"({type(e).__name__})")
    steps.done("plan")
    if reason is None:
        mode, detail = "incremental", _incremental(spark, cfg, events, changes, last, steps)
    else:
        mode, detail = "full", _full(spark, cfg, events, steps)
    now["as_of_date"] = detail["as_of_date"]
    with ThreadPoolExecutor(3) as pool:  # three small driver-bound jobs: overlap them
        counts = dict(zip(("searches", "queries", "prefixes"),
                          pool.map(lambda t: read_pinned(spark, cfg.table_path(t)).count(), SEARCH_TABLES)))
    write_log(spark, cfg, mode, now, log_path(cfg))  # last: a run killed before it is simply redone
    steps.done("counts_and_log")
    report = {
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "mode": mode,
        "reason": reason,
        "seconds": round(time.time() - t0, 2),
        "step_seconds": steps.seconds,
        **counts,
        **detail,
    }
    write_report(cfg, "search_tables", report)
    return report


def _why_full(spark: SparkSession, cfg: Config, last: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    if last is None:
        return "no earlier build"
    if last.get("fingerprint") != now["fingerprint"]:
        return "search settings or table definitions changed"
    if any(not table_exists(cfg, t, spark) for t in SEARCH_TABLES):
        return "a search table is missing"
    before, after = last["events"], now["events"]
    if before["id"] != after["id"] or before["version"] > after["version"]:
        return "bronze table events was recreated"
    return None


def _as_of(searches: DataFrame) -> dt.date | None:
    return searches.agg(F.max("event_date")).first()[0]


def _full(spark: SparkSession, cfg: Config, events: DataFrame, steps: StepTimer) -> dict[str, Any]:
    """Overwrite the three tables from all of ``events``."""
    normal = normalised_searches(events).localCheckpoint()
    empty = normal.where(F.col("query_norm") == "").count()
    write_table(search_rows(events, normal.where(F.col("query_norm") != "")), cfg, "searches")
    searches = read_pinned(spark, cfg.table_path("searches"))
    as_of = _as_of(searches)
    steps.done("searches")
    write_table(query_stats_rows(cfg, searches, as_of), cfg, "query_stats")
    steps.done("query_stats")
    write_table(suggestion_rows(cfg, read_pinned(spark, cfg.table_path("query_stats"))), cfg, "query_suggestions")
    steps.done("query_suggestions")
    return {"affected_sessions": None, "empty_queries": empty, "affected_queries": None, "affected_prefixes": None,
            "as_of_date": str(as_of) if as_of else None, "query_stats_write": "overwrite"}


def _read_changes(spark: SparkSession, cfg: Config, ev_from: int, ev_to: int) -> DataFrame | None:
    """The ``events`` rows changed after version ``ev_from`` up to ``ev_to`` (read now, so a
    vacuumed change feed fails here, before anything is written); None when there are none."""
    if ev_to == ev_from:
        return None
    return (
        spark.read.format("delta").option("readChangeFeed", "true")
        .option("startingVersion", ev_from + 1).option("endingVersion", ev_to)
        .load(cfg.table_path("events")).select("event_id", "user_id", "session_id", "event_type", "query")
    ).localCheckpoint()


def _incremental(spark: SparkSession, cfg: Config, events: DataFrame, changes: DataFrame | None,
                 last: dict[str, Any], steps: StepTimer) -> dict[str, Any]:
    """Recompute and MERGE only what the ``changes`` (``_read_changes``) concern; gives the same
    tables as ``_full``. Idempotent: a run killed before its log is redone from the same changes."""
    if changes is None:
        return {"affected_sessions": 0, "empty_queries": 0, "affected_queries": 0, "affected_prefixes": 0,
                "as_of_date": last.get("as_of_date"), "query_stats_write": "none"}
    # The affected sessions (user_id, session_id), and changed searches without one (lone).
    lone_id = F.when(F.col("session_id").isNull(), F.col("event_id"))
    affected = changes.where(F.col("session_id").isNotNull() | (F.col("event_type") == "search")) \
        .select("user_id", "session_id", lone_id.alias("lone")).distinct().localCheckpoint()
    n_sessions = affected.count()
    sessions = affected.where(F.col("session_id").isNotNull()).select("user_id", "session_id")
    lone = affected.where(F.col("lone").isNotNull()).select("lone")

    def of_affected(df: DataFrame, id_col: str) -> DataFrame:
        """The rows of ``df`` in an affected session, or affected searches without a session."""
        in_sessions = df.join(F.broadcast(sessions), ["user_id", "session_id"], "left_semi")
        alone = df.where(F.col("session_id").isNull()).join(F.broadcast(lone.withColumnRenamed("lone", id_col)),
                                                            id_col, "left_semi")
        return in_sessions.unionByName(alone)

    # 1. searches: the affected sessions' rows, from all their current events.
    session_events = of_affected(events, "event_id").localCheckpoint()
    normal = normalised_searches(session_events).localCheckpoint()
    empty = normal.where(F.col("query_norm") == "").count()
    fresh = search_rows(session_events, normal.where(F.col("query_norm") != "")).localCheckpoint()
    old = of_affected(read_pinned(spark, cfg.table_path("searches")), "search_id") \
        .select("search_id", "query_norm").localCheckpoint()
    upsert(spark, cfg.table_path("searches"), fresh, ["search_id"], delete_missing=old)
    searches = read_pinned(spark, cfg.table_path("searches"))
    as_of = _as_of(searches)
    steps.done("searches")

    before = dt.date.fromisoformat(last["as_of_date"]) if last.get("as_of_date") else None
    # The table's own day too: a run killed after overwriting query_stats may have left another.
    held = read_pinned(spark, cfg.table_path("query_stats")).select("as_of_date").limit(1).collect()
    if as_of != before or (held and held[0][0] != as_of):
        # Every query's windows and weight moved with the newest day: recompute them all.
        write_table(query_stats_rows(cfg, searches, as_of), cfg, "query_stats")
        write_table(suggestion_rows(cfg, read_pinned(spark, cfg.table_path("query_stats"))), cfg, "query_suggestions")
        steps.done("query_stats_and_suggestions")
        return {"affected_sessions": n_sessions, "empty_queries": empty, "affected_queries": None,
                "affected_prefixes": None, "as_of_date": str(as_of) if as_of else None,
                "query_stats_write": f"overwrite: as_of_date moved from {before} to {as_of}"}

    # 2. query_stats: the queries of the old and new rows (and of changed search events: after a
    #    run killed past the MERGE, the old rows are already gone from the table).
    changed_queries = changes.where(F.col("event_type") == "search").select(normalise_udf("query").alias("query_norm"))
    queries = (
        fresh.select("query_norm").unionByName(old.select("query_norm")).unionByName(changed_queries)
        .where(F.col("query_norm") != "").distinct().localCheckpoint()
    )
    n_queries, n_prefixes = queries.count(), 0
    if n_queries:
        stats = query_stats_rows(cfg, searches.join(F.broadcast(queries), "query_norm", "left_semi"), as_of)
        upsert(spark, cfg.table_path("query_stats"), stats, ["query_norm"], delete_missing=queries)
        steps.done("query_stats")
        # 3. query_suggestions: every prefix of an affected query, from all queries.
        touched = queries.select(F.explode(prefixes_udf(cfg.search.max_prefix_len)("query_norm")).alias("prefix")) \
            .distinct().localCheckpoint()
        n_prefixes = touched.count()
        rows = suggestion_rows(cfg, read_pinned(spark, cfg.table_path("query_stats"))) \
            .join(F.broadcast(touched), "prefix", "left_semi")
        upsert(spark, cfg.table_path("query_suggestions"), rows, ["prefix"], delete_missing=touched)
        steps.done("query_suggestions")
    return {"affected_sessions": n_sessions, "empty_queries": empty, "affected_queries": n_queries,
            "affected_prefixes": n_prefixes, "as_of_date": str(as_of) if as_of else None,
            "query_stats_write": "merge" if n_queries else "none"}
