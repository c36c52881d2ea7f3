"""The search tables from bronze events: engagement after a search, query statistics,
prefix suggestions, and an incremental build that equals a full rebuild."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from recsys.datagen import generate_shop
from recsys.ingest.pipeline import ingest
from recsys.search.tables import SEARCH_TABLES, build_search
from recsys.tables import read_table

pytestmark = pytest.mark.spark

DAY = dt.datetime(2026, 10, 10, 12, 0, 0)
SCHEMA = ("event_id string, ts timestamp, user_id string, session_id string, event_type string, item_id string, "
          "query string, price double, quantity int")


def write_events(spark, cfg, spec) -> None:
    """``spec``: (event_id, minutes after DAY, user, session, type, item, query) rows, as the
    bronze table (change data feed on, as ingest creates it)."""
    rows = [(eid, DAY + dt.timedelta(minutes=m), u, s, et, item, q, None, None) for eid, m, u, s, et, item, q in spec]
    spark.createDataFrame(rows, SCHEMA).withColumn("event_date", F.to_date("ts")).write.format("delta") \
        .option("delta.enableChangeDataFeed", "true").save(cfg.table_path("events"))


def test_engagement_stats_and_suggestions(spark, tmp_path):
    from ..conftest import make_config

    cfg = make_config(tmp_path / "lakehouse", "search.suggestions=2")
    days = 24 * 60
    write_events(spark, cfg, [
        ("e00", -1, "u1", "s1", "view", "Z", None),            # before the session's first search: nobody's
        ("e01", 0, "u1", "s1", "search", None, "  Eye CREAMS!"),
        ("e02", 1, "u1", "s1", "view", "A", None),
        ("e03", 2, "u1", "s1", "click", "A", None),
        ("e04", 3, "u1", "s1", "view", "B", None),
        ("e05", 4, "u1", "s1", "search", None, "eye cream"),
        ("e06", 5, "u1", "s1", "view", "C", None),
        ("e07", 6, "u1", "s1", "purchase", "C", None),
        ("e08", 7, "u1", None, "search", None, "lipstick"),    # no session: nothing attributed
        ("e09", 8, "u1", None, "view", "D", None),
        ("e10", 0, "u2", "s2", "search", None, "Lipstick"),
        ("e11", 1, "u2", "s2", "view", "D", None),
        ("e12", 2, "u2", "s2", "search", None, " ?! "),        # not searchable: no row, but ends e10's engagement
        ("e13", 3, "u2", "s2", "view", "E", None),
        ("e14", 1, "u2", "s9", "view", "F", None),             # another session of the same user
        ("e15", -9 * days, "u3", "s3", "search", None, "lipsticks"),
        ("e16", -9 * days + 1, "u3", "s3", "add_to_cart", "D", None),
        ("e17", -days, "u4", None, "search", None, "eye cream"),
        ("e18", 0, "u5", None, "search", None, "eyeliner"),    # one user only: not suggested
        ("e19", 0, "u6", None, "search", None, "eye gel"),
        ("e20", 0, "u7", None, "search", None, "eye gel"),
        ("e21", 0, "u6", None, "search", None, "eye shadow"),
        ("e22", 0, "u7", None, "search", None, "eye shadow"),
    ])
    rep = build_search(spark, cfg)
    assert (rep["mode"], rep["reason"], rep["empty_queries"]) == ("full", "no earlier build", 1)
    assert rep["as_of_date"] == "2026-10-10" and rep["searches"] == 11

    rows = {r["search_id"]: r for r in read_table(spark, cfg, "searches").collect()}
    assert "e12" not in rows
    assert rows["e01"]["query"] == "  Eye CREAMS!" and rows["e01"]["query_norm"] == "eye cream"
    engaged = {k: [(e["item_id"], e["relevance"]) for e in r["engaged"]] for k, r in rows.items()}
    assert engaged["e01"] == [("A", 2), ("B", 1)]
    assert engaged["e05"] == [("C", 4)]
    assert engaged["e08"] == [] and engaged["e10"] == [("D", 1)] and engaged["e15"] == [("D", 3)]
    assert (rows["e01"]["n_engaged"], rows["e01"]["max_relevance"]) == (2, 2)
    assert (rows["e08"]["n_engaged"], rows["e08"]["max_relevance"]) == (0, 0)
    assert str(rows["e15"]["event_date"]) == "2026-10-01"

    stats = {r["query_norm"]: r for r in read_table(spark, cfg, "query_stats").collect()}
    assert set(stats) == {"eye cream", "lipstick", "eyeliner", "eye gel", "eye shadow"}
    eye = stats["eye cream"]
    assert (eye["searches"], eye["searches_1d"], eye["searches_7d"], eye["searches_30d"]) == (3, 2, 3, 3)
    assert (eye["users"], eye["engaged_searches"], eye["purchase_searches"]) == (2, 2, 1)
    assert eye["engagement_rate"] == pytest.approx(2 / 3) and eye["conversion_rate"] == pytest.approx(1 / 3)
    assert eye["weight"] == pytest.approx(2 + 0.5 ** (1 / 7))
    assert [(t["item_id"], t["score"], t["searches"]) for t in eye["top_items"]] == [
        ("C", 4.0, 1), ("A", 2.0, 1), ("B", 1.0, 1)]
    assert str(eye["as_of_date"]) == "2026-10-10" and eye["last_ts"] == DAY + dt.timedelta(minutes=4)
    lip = stats["lipstick"]
    assert (lip["searches"], lip["searches_1d"], lip["searches_7d"], lip["searches_30d"]) == (3, 2, 2, 3)
    assert lip["users"] == 3
    assert (lip["engaged_searches"], lip["purchase_searches"]) == (2, 0)
    assert lip["weight"] == pytest.approx(2 + 0.5 ** (9 / 7))
    assert [(t["item_id"], t["score"], t["searches"]) for t in lip["top_items"]] == [("D", 4.0, 2)]
    assert stats["eyeliner"]["top_items"] == []

    sugg = {r["prefix"]: [c["query"] for c in r["completions"]]
            for r in read_table(spark, cfg, "query_suggestions").collect()}
    # eye cream (weight 2.9) first; eye gel and eye shadow tie on weight and searches: by query
    assert sugg["e"] == sugg["eye"] == ["eye cream", "eye gel"]  # search.suggestions=2
    assert sugg["eye s"] == ["eye shadow"] and sugg["lipstick"] == ["lipstick"]
    assert "eye " not in sugg and "eyel" not in sugg  # no trailing space; eyeliner has one user
    assert max(len(p) for p in sugg) == cfg.search.max_prefix_len
    # e..eye, eye c..eye crea, eye g..eye gel, eye s..eye shad, l..lipstick
    assert rep["prefixes"] == len(sugg) == 3 + 4 + 3 + 4 + 8
    first = read_table(spark, cfg, "query_suggestions").where("prefix = 'eye'").first()["completions"][0]
    assert (first["weight"], first["searches"], first["users"]) == (pytest.approx(2 + 0.5 ** (1 / 7)), 3, 2)

    rep = build_search(spark, make_config(tmp_path / "lakehouse", "search.suggestions=3"))
    assert (rep["mode"], rep["reason"]) == ("full", "search settings or table definitions changed")

    # A change feed vacuumed away (as forget-user with privacy.vacuum_after_forget does): full.
    from delta.tables import DeltaTable

    events = DeltaTable.forPath(spark, cfg.table_path("events"))
    events.delete("event_id = 'e05'")
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        events.vacuum(0)
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    rep = build_search(spark, make_config(tmp_path / "lakehouse", "search.suggestions=3"))
    assert rep["mode"] == "full" and "change feed" in rep["reason"], rep["reason"]
    assert rep["searches"] == 10


def _assert_equals_full_rebuild(spark, cfg) -> None:
    incremental = {t: read_table(spark, cfg, t).localCheckpoint() for t in SEARCH_TABLES}
    assert build_search(spark, cfg, full=True)["mode"] == "full"
    for t in SEARCH_TABLES:
        assertDataFrameEqual(incremental[t], read_table(spark, cfg, t))


def test_incremental_builds_equal_a_full_rebuild(spark, cfg):
    from delta.tables import DeltaTable

    landing = cfg.lakehouse.landing_path
    generate_shop(landing, users=120, items=50, days=6, seed=5, malformed_rate=0.0)
    files = sorted((landing / "events").glob("*.jsonl"))
    held = landing.parent / "held"
    held.mkdir()
    newest, middle = files[-1], files[-3]
    for f in (newest, middle):
        shutil.move(str(f), held / f.name)
    ingest(spark, cfg)
    first = build_search(spark, cfg)
    assert first["mode"] == "full" and first["searches"] > 20
    assert build_search(spark, cfg)["affected_sessions"] == 0  # nothing new: nothing touched

    # 1. A new day (as_of moves), a deleted session and a search whose query became blank.
    shutil.move(str(held / newest.name), newest)
    ingest(spark, cfg)
    events = DeltaTable.forPath(spark, cfg.table_path("events"))
    searches = read_table(spark, cfg, "searches").orderBy("search_id").collect()
    gone, blank = searches[0], searches[1]
    events.delete((F.col("user_id") == gone["user_id"]) & (F.col("session_id") == gone["session_id"]))
    events.update(F.col("event_id") == blank["search_id"], {"query": F.lit("!!")})
    rep = build_search(spark, cfg)
    assert rep["mode"] == "incremental" and rep["reason"] is None
    assert rep["query_stats_write"].startswith("overwrite: as_of_date moved")
    assert 0 < rep["affected_sessions"] and rep["empty_queries"] >= 1
    ids = {r["search_id"] for r in read_table(spark, cfg, "searches").select("search_id").collect()}
    assert gone["search_id"] not in ids and blank["search_id"] not in ids
    _assert_equals_full_rebuild(spark, cfg)

    # 2. A late day (as_of stays), deleted search events and an item event turned purchase:
    #    only the affected queries and prefixes are MERGEd.
    shutil.move(str(held / middle.name), middle)
    ingest(spark, cfg)
    events = DeltaTable.forPath(spark, cfg.table_path("events"))
    engaged = read_table(spark, cfg, "searches").where("n_engaged > 0 AND max_relevance < 4") \
        .orderBy("search_id").first()
    item = engaged["engaged"][0]["item_id"]
    events.update((F.col("user_id") == engaged["user_id"]) & (F.col("session_id") == engaged["session_id"])
                  & (F.col("item_id") == item), {"event_type": F.lit("purchase"), "quantity": F.lit(1)})
    lone = read_table(spark, cfg, "searches").where("session_id IS NULL").select("search_id").limit(2)
    doomed = [r[0] for r in read_table(spark, cfg, "searches").orderBy(F.desc("search_id")).select("search_id")
              .limit(3).collect()] + [r[0] for r in lone.collect()]
    events.delete(F.col("event_id").isin(doomed))
    rep = build_search(spark, cfg)
    assert rep["mode"] == "incremental" and rep["query_stats_write"] == "merge"
    assert 0 < rep["affected_queries"] < rep["queries"] and rep["affected_prefixes"] > 0
    ids = {r["search_id"] for r in read_table(spark, cfg, "searches").select("search_id").collect()}
    assert not ids & set(doomed)
    after = read_table(spark, cfg, "searches").where(F.col("search_id") == engaged["search_id"]).first()
    assert dict((e["item_id"], e["relevance"]) for e in after["engaged"])[item] == 4
    _assert_equals_full_rebuild(spark, cfg)

