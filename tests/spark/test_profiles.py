"""Gold tables from hand-made bronze events: steps, profiles, the leave-one-out split."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.sql import functions as F

from recsys.datagen import generate_shop
from recsys.features.profiles import GOLD_TABLES, build_profiles
from recsys.ingest.pipeline import ingest
from recsys.tables import read_table, upsert, write_table

pytestmark = pytest.mark.spark


def bronze(spark, cfg, events):
    cat = spark.createDataFrame(
        [(f"i{k}", f"Item {k}", "", "A>B" if k % 2 else "C>D", "b", float(k), True) for k in range(1, 9)],
        "item_id string, title string, description string, category string, brand string, price double, in_stock boolean",
    )
    write_table(cat, cfg, "catalog")
    t0 = dt.datetime(2026, 10, 1, 10, 0, 0)
    rows = [(f"e{n}", t0 + dt.timedelta(minutes=n), u, "s", et, item, None, 1.0, None)
            for n, (u, et, item) in enumerate(events)]
    df = spark.createDataFrame(
        rows, "event_id string, ts timestamp, user_id string, session_id string, event_type string, item_id string, "
              "query string, price double, quantity int")
    write_table(df.withColumn("event_date", F.to_date("ts")), cfg, "events")


def test_steps_and_leave_one_out(spark, tmp_path):
    from ..conftest import make_config

    cfg = make_config(tmp_path / "lakehouse", "features.validation_share=1.0")  # the classic split
    events = [
        ("u1", "view", "i1"), ("u1", "click", "i1"), ("u1", "add_to_cart", "i1"),  # step 1: i1, add_to_cart
        ("u1", "view", "i2"),                                                      # step 2
        ("u1", "search", None),
        ("u1", "view", "i3"), ("u1", "click", "i3"), ("u1", "purchase", "i3"),     # step 3: purchase
        ("u1", "view", "i4"),                                                      # step 4
        ("u1", "view", "i5"),                                                      # step 5
        ("u2", "view", "i6"), ("u2", "view", "i7"),                                # too short: 2 steps
    ]
    bronze(spark, cfg, events)
    report = build_profiles(spark, cfg)
    assert report["training_examples"] == {"train": 1, "validation": 1, "test": 1}

    items = {r["item_id"]: r["item_idx"] for r in read_table(spark, cfg, "item_profiles").collect()}
    idx = [items[f"i{k}"] for k in range(1, 6)]
    prof = {r["user_id"]: r for r in read_table(spark, cfg, "user_profiles").collect()}
    u1 = prof["u1"]
    assert u1["seq_item_idx"] == idx
    assert [h["event_type"] for h in u1["history"]] == ["add_to_cart", "view", "purchase", "view", "view"]
    assert u1["n_view"] == 5 and u1["n_search"] == 1 and u1["n_purchase"] == 1
    assert u1["purchased_item_idx"] == [items["i3"]]
    assert prof["u2"]["n_steps"] == 2
    # u1's 5 steps: i1, i3, i5 are in "A" (odd ids), i2, i4 in "C"
    assert [(c["category"], c["share"]) for c in u1["top_categories"]] == [("A", 0.6), ("C", 0.4)]
    assert u1["top_brands"][0]["brand"] == "b" and u1["top_brands"][0]["share"] == 1.0
    assert u1["price_level"] is not None

    ex = {r["split"]: r for r in read_table(spark, cfg, "training_examples").collect()}
    L = cfg.features.max_seq_len
    pad = lambda xs: [0] * (L - len(xs)) + xs  # noqa: E731
    assert ex["test"]["target"] == idx[4] and ex["test"]["input_items"] == pad(idx[:4])
    assert ex["validation"]["target"] == idx[3] and ex["validation"]["input_items"] == pad(idx[:3])
    assert ex["train"]["input_items"] == pad(idx[:2]) and ex["train"]["target_items"] == pad(idx[1:3])
    assert sorted(ex["test"]["history_items"]) == sorted(idx[:4])
    assert len(ex["train"]["input_types"]) == L


def test_item_profiles_rates_and_indices(spark, cfg):
    bronze(spark, cfg, [("u1", "view", "i1"), ("u1", "click", "i1"), ("u2", "view", "i1"), ("u2", "view", "i2"),
                        ("u2", "view", "i3"), ("u2", "view", "i4")])
    build_profiles(spark, cfg)
    items = {r["item_id"]: r for r in read_table(spark, cfg, "item_profiles").collect()}
    assert sorted(r["item_idx"] for r in items.values()) == list(range(1, 9))
    i1 = items["i1"]
    assert (i1["views"], i1["clicks"], i1["users"]) == (2, 1, 2)
    assert i1["ctr"] == pytest.approx((1 + 1) / (2 + 2))
    assert i1["popularity_rank"] == 1
    assert items["i8"]["views"] == 0 and items["i8"]["ctr"] == pytest.approx(0.5)
    assert {r["price_bucket"] for r in items.values()} <= set(range(1, cfg.features.price_buckets + 1))
    # every event is within the last day of the newest one: windowed counts equal totals
    assert (i1["views_1d"], i1["clicks_7d"], i1["views_30d"]) == (2, 1, 2)


def _same_rows(a, b) -> bool:
    return a.exceptAll(b).limit(1).count() == 0 and b.exceptAll(a).limit(1).count() == 0


def _reports_true_counts(spark, cfg, rep) -> None:
    """An incremental report's row counts (moved from the last build's by the affected users'
    rows, not read back) are the tables' real ones."""
    examples = read_table(spark, cfg, "training_examples").groupBy("split").count().collect()
    assert rep["item_profiles"] == read_table(spark, cfg, "item_profiles").count()
    assert rep["user_profiles"] == read_table(spark, cfg, "user_profiles").count()
    assert rep["training_examples"] == {r["split"]: r["count"] for r in examples}


def test_incremental_build_touches_only_new_users_and_equals_a_full_rebuild(spark, cfg):
    landing = cfg.lakehouse.landing_path
    generate_shop(landing, users=120, items=50, days=6, seed=3, malformed_rate=0.0)
    files = sorted((landing / "events").glob("*.jsonl"))
    held = landing.parent / "held"
    held.mkdir()
    late = [files[-1], files[-3]]  # the newest day, and a day behind one already built (late events)
    for f in late:
        shutil.move(str(f), held / f.name)
    ingest(spark, cfg)
    first = build_profiles(spark, cfg)
    assert first["mode"] == "full" and first["reason"] == "no earlier build"
    ids_before = {r["item_id"]: r["item_idx"] for r in read_table(spark, cfg, "item_profiles").collect()}

    assert build_profiles(spark, cfg)["affected_users"] == 0  # nothing new: nothing touched

    for f in late:
        shutil.move(str(held / f.name), f)
    ingest(spark, cfg)
    days = [f.stem[-10:] for f in late]
    new_users = read_table(spark, cfg, "events").where(F.col("event_date").isin(days)).select("user_id").distinct().count()
    rep = build_profiles(spark, cfg)
    assert rep["mode"] == "incremental"
    assert rep["affected_users"] == new_users < rep["user_profiles"]
    _reports_true_counts(spark, cfg, rep)
    # Both kinds of affected user occur: those with late events are rebuilt from all their
    # events, the others continued from their profile rows.
    assert 0 < rep["rebuilt_users"] < rep["affected_users"]
    assert {r["item_id"]: r["item_idx"] for r in read_table(spark, cfg, "item_profiles").collect()} == ids_before

    incremental = {t: spark.read.format("delta").load(cfg.table_path(t)).localCheckpoint() for t in GOLD_TABLES}
    assert build_profiles(spark, cfg, full=True)["mode"] == "full"
    for t in GOLD_TABLES:
        assert _same_rows(incremental[t], read_table(spark, cfg, t)), f"{t} differs from a full rebuild"


def test_continued_profiles_equal_a_full_rebuild(spark, cfg):
    """New events after a profile's last event continue it: the visit of the last session
    goes on, an event on the last step's item joins that step, purchase values add exactly."""
    cat = spark.createDataFrame(
        [(f"i{k}", f"Item {k}", "", "A>B" if k % 2 else "C>D", "b", 0.1 * k + 0.2, True) for k in range(1, 6)],
        "item_id string, title string, description string, category string, brand string, price double, in_stock boolean",
    )
    write_table(cat, cfg, "catalog")
    t0 = dt.datetime(2026, 10, 1, 10, 0, 0)
    schema = ("event_id string, ts timestamp, user_id string, session_id string, event_type string, item_id string, "
              "query string, price double, quantity int")

    def rows(first, spec):
        return spark.createDataFrame(
            [(f"e{first + n:03d}", t0 + dt.timedelta(hours=first + n), u, s, et, item, None, price, qty)
             for n, (u, s, et, item, price, qty) in enumerate(spec)], schema,
        ).withColumn("event_date", F.to_date("ts"))

    day1 = [("u1", "s1", "view", "i1", 0.3, None), ("u1", "s1", "purchase", "i1", 0.3, 3),
            ("u1", "s2", "view", "i2", 0.4, None), ("u1", None, "search", None, None, None),
            ("u1", "s3", "view", "i3", 0.5, None),
            ("u2", "s9", "view", "i4", 0.6, None), ("u2", "s9", "view", "i5", 0.7, None)]
    day2 = [("u1", "s3", "add_to_cart", "i3", 0.5, None),   # same session, same item as the last step
            ("u1", "s3", "purchase", "i3", 0.1 + 0.2, 7),     # a price with a binary rounding error
            ("u1", "s4", "view", "i1", 0.3, None),
            ("u3", None, "view", "i2", 0.4, None), ("u3", "s5", "view", "i2", 0.4, None),  # a new user
            ("u2", None, "search", None, None, None), ("u2", "s9", "view", "i4", 0.6, None)]  # s9 goes on
    rows(0, day1).write.format("delta").option("delta.enableChangeDataFeed", "true").save(cfg.table_path("events"))
    assert build_profiles(spark, cfg)["mode"] == "full"
    rows(len(day1), day2).write.format("delta").mode("append").save(cfg.table_path("events"))
    rep = build_profiles(spark, cfg)
    assert rep["mode"] == "incremental"
    assert (rep["affected_users"], rep["rebuilt_users"]) == (3, 0)
    _reports_true_counts(spark, cfg, rep)

    prof = {r["user_id"]: r for r in read_table(spark, cfg, "user_profiles").collect()}
    u1 = prof["u1"]
    assert [(h["item_id"], h["event_type"]) for h in u1["history"]] == [
        ("i1", "purchase"), ("i2", "view"), ("i3", "purchase"), ("i1", "view")]
    assert u1["n_sessions"] == 4  # s1, s2, s3 (over both days), s4; the search has no session
    assert u1["last_session_id"] == "s4"
    assert u1["monetary"] == 3.0  # 3 x 0.30 + 7 x 0.30, summed in exact cents
    assert (prof["u3"]["n_sessions"], prof["u3"]["n_view"]) == (1, 2)
    assert (prof["u2"]["n_sessions"], prof["u2"]["n_search"]) == (1, 1)  # a sessionless event ends no visit

    incremental = {t: spark.read.format("delta").load(cfg.table_path(t)).localCheckpoint() for t in GOLD_TABLES}
    assert build_profiles(spark, cfg, full=True)["mode"] == "full"
    for t in GOLD_TABLES:
        assert _same_rows(incremental[t], read_table(spark, cfg, t)), f"{t} differs from a full rebuild"
    # the per-user MERGE targets write deletion vectors instead of rewriting every file
    from delta.tables import DeltaTable
    for t in ("user_profiles", "training_examples"):
        props = DeltaTable.forPath(spark, cfg.table_path(t)).detail().first()["properties"]
        assert props.get("delta.enableDeletionVectors") == "true", t


def test_deletions_and_a_crashed_run_still_equal_a_full_rebuild(spark, cfg, monkeypatch):
    """Events inserted and deleted between two builds, a user who lost every event, and a run
    killed after item_profiles was written but before its log: the rerun equals a full build."""
    import recsys.features.profiles as profiles
    from delta.tables import DeltaTable

    cat = spark.createDataFrame([(f"i{k}", f"Item {k}", "", "A>B", "b", 1.0, True) for k in range(1, 5)],
                                "item_id string, title string, description string, category string, brand string, "
                                "price double, in_stock boolean")
    write_table(cat, cfg, "catalog")
    t0 = dt.datetime(2026, 10, 1, 10, 0, 0)
    schema = ("event_id string, ts timestamp, user_id string, session_id string, event_type string, item_id string, "
              "query string, price double, quantity int")

    def rows(first, spec):
        return spark.createDataFrame([(f"e{first + n:03d}", t0 + dt.timedelta(hours=first + n), u, "s", "view", item,
                                       None, 1.0, None) for n, (u, item) in enumerate(spec)], schema) \
            .withColumn("event_date", F.to_date("ts"))

    day1 = [("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u2", "i1"), ("u2", "i2"), ("u2", "i4"), ("u3", "i1")]
    rows(0, day1).write.format("delta").option("delta.enableChangeDataFeed", "true").save(cfg.table_path("events"))
    assert build_profiles(spark, cfg)["mode"] == "full"
    rows(len(day1), [("u1", "i4"), ("uX", "i1"), ("uX", "i3")]).write.format("delta").mode("append") \
        .save(cfg.table_path("events"))
    events = DeltaTable.forPath(spark, cfg.table_path("events"))
    events.delete(F.col("user_id") == "uX")  # inserted and deleted since the last build
    events.delete(F.col("user_id") == "u2")  # every event of a user, without forget-user

    user_tables = {cfg.table_path("user_profiles"), cfg.table_path("training_examples")}

    def crash(session, path, *args, **kwargs):
        if path in user_tables:
            raise RuntimeError("killed")
        return upsert(session, path, *args, **kwargs)

    monkeypatch.setattr(profiles, "upsert", crash)
    with pytest.raises(RuntimeError, match="killed"):
        build_profiles(spark, cfg)  # item_profiles is written, the user tables and the log are not
    monkeypatch.undo()
    rep = build_profiles(spark, cfg)
    assert rep["mode"] == "incremental" and rep["rebuilt_users"] == 2  # uX and u2
    _reports_true_counts(spark, cfg, rep)  # u2 and their examples left the counts too
    assert read_table(spark, cfg, "user_profiles").where(F.col("user_id") == "u2").count() == 0
    assert read_table(spark, cfg, "training_examples").where(F.col("user_id") == "u2").count() == 0
    users = {r["item_id"]: r["users"] for r in read_table(spark, cfg, "item_profiles").collect()}
    assert users == {"i1": 2, "i2": 1, "i3": 1, "i4": 1}  # u1, u3 on i1; u1 on the others

    incremental = {t: spark.read.format("delta").load(cfg.table_path(t)).localCheckpoint() for t in GOLD_TABLES}
    assert build_profiles(spark, cfg, full=True)["mode"] == "full"
    for t in GOLD_TABLES:
        assert _same_rows(incremental[t], read_table(spark, cfg, t)), f"{t} differs from a full rebuild"


def test_validation_share_turns_other_users_validation_step_into_training(spark, tmp_path):
    from recsys.features.splits import validation_user

    from ..conftest import make_config

    cfg = make_config(tmp_path / "lakehouse", "features.validation_share=0.5")
    users = [f"u{k}" for k in range(20)]
    bronze(spark, cfg, [(u, "view", f"i{j}") for u in users for j in range(1, 6)])
    build_profiles(spark, cfg)
    holdout = {r["user_id"]: r["h"] for r in spark.createDataFrame([(u,) for u in users], "user_id string")
               .select("user_id", validation_user(0.5).alias("h")).collect()}
    assert 3 <= sum(holdout.values()) <= 17  # a sample, not all or none
    items = {r["item_id"]: r["item_idx"] for r in read_table(spark, cfg, "item_profiles").collect()}
    idx = [items[f"i{j}"] for j in range(1, 6)]
    ex = read_table(spark, cfg, "training_examples").collect()
    for u in users:
        rows = {r["split"]: r for r in ex if r["user_id"] == u}
        assert ("validation" in rows) == holdout[u]
        last_train_target = [t for t in rows["train"]["target_items"] if t][-1]
        assert last_train_target == (idx[2] if holdout[u] else idx[3])  # step n-1 trains the non-holdout users
        assert rows["test"]["target"] == idx[4]
