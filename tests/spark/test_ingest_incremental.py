"""Incremental, exactly-once ingestion: formats, unreadable files, reruns, table properties."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.ingest.pipeline import ingest, manifest_path
from recsys.tables import read_table

pytestmark = pytest.mark.spark

CAT = [{"item_id": f"i{k}", "title": f"Item {k}", "category": "A>B", "brand": "b", "price": 1.0 + k} for k in range(1, 4)]


def ev(eid, ts="2026-10-01T10:00:00Z", et="view", item="i1", user="u1", **kw):
    d = {"event_id": eid, "ts": ts, "user_id": user, "session_id": "s", "event_type": et, "item_id": item,
         "query": None, "price": 1.0, "quantity": None}
    d.update(kw)
    return d


def lines(*events) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def landing(cfg) -> Path:
    root = cfg.lakehouse.landing_path
    (root / "catalog").mkdir(parents=True, exist_ok=True)
    (root / "events").mkdir(parents=True, exist_ok=True)
    (root / "catalog" / "c.jsonl").write_text(lines(*CAT))
    return root


def events(spark, cfg):
    return sorted(r["event_id"] for r in read_table(spark, cfg, "events").select("event_id").collect())


def test_each_run_reads_only_new_files_and_drops_redelivered_events(spark, cfg):
    root = landing(cfg)
    (root / "events" / "h1.jsonl").write_text(lines(ev("e1"), ev("e2")))
    r1 = ingest(spark, cfg)
    assert r1["events"]["accepted"] == 2 and r1["events"]["files"] == 1
    # an hour later: a new file, re-delivering e2, plus a late (earlier-dated) event
    (root / "events" / "h2.jsonl").write_text(lines(ev("e2"), ev("e3"), ev("e0", ts="2026-09-20T08:00:00Z")))
    r2 = ingest(spark, cfg)
    assert r2["events"]["files"] == 1 and r2["events"]["read"] == 3
    assert (r2["events"]["accepted"], r2["events"]["duplicates"]) == (2, 1)
    assert r2["catalog"]["files"] == 0  # the catalogue file was not read again
    # the report says where the run spent its time
    assert {"prepare", "events.write", "events.quarantine", "events.counts", "manifest"} <= set(r2["step_seconds"])
    assert events(spark, cfg) == ["e0", "e1", "e2", "e3"]
    # the late event lands in its own date partition
    late = read_table(spark, cfg, "events").where("event_id = 'e0'").first()
    assert str(late["event_date"]) == "2026-09-20"
    # nothing new: nothing read
    r3 = ingest(spark, cfg)
    assert r3["events"]["read"] == 0 and r3["files_read"] == 0
    assert events(spark, cfg) == ["e0", "e1", "e2", "e3"]


def test_rerun_after_a_crash_before_the_manifest_is_exactly_once(spark, cfg):
    from delta.tables import DeltaTable

    root = landing(cfg)
    (root / "events" / "h1.jsonl").write_text(lines(ev("e1"), ev("e2"), ev("bad", et="hover")))
    ingest(spark, cfg)
    # simulate a run killed after its table writes but before its manifest entry
    DeltaTable.forPath(spark, manifest_path(cfg)).delete("source = 'events'")
    ingest(spark, cfg)
    assert events(spark, cfg) == ["e1", "e2"]
    q = read_table(spark, cfg, "quarantine").where("rule = 'unknown_event_type'")
    assert q.count() == 1
    # the rerun saw the killed run's events in the table: kept once, their re-reads quarantined
    dup = read_table(spark, cfg, "quarantine").where("rule = 'duplicate_event_id'")
    assert sorted(json.loads(r.raw)["event_id"] for r in dup.collect()) == ["e1", "e2"]


def test_csv_parquet_and_gzip_inputs(spark, cfg, tmp_path):
    root = landing(cfg)
    (root / "events" / "a.csv").write_text(
        "event_id,user_id,event_type,item_id,ts,price\n"
        "c1,u1,view,i1,2026-10-01T10:00:00Z,1.5\n"
        "c2,u1,click,i1,1790848800000,\"1.5\"\n"
        "c3,u1,view,i2,2026-10-01T10:00:00Z,1.5,EXTRA\n"     # wrong column count
    )
    with gzip.open(root / "events" / "b.jsonl.gz", "wt") as fh:
        fh.write(lines(ev("g1"), ev("g2")))
    pd.DataFrame([ev("p1"), ev("p2", et="purchase", quantity=2)]).assign(price=1.0).to_parquet(root / "events" / "c.parquet")
    r = ingest(spark, cfg)
    assert events(spark, cfg) == ["c1", "c2", "g1", "g2", "p1", "p2"]
    assert r["events"]["quarantined_by_rule"] == {"wrong_column_count": 1}
    assert r["events"]["files"] == 3 and r["events"]["reconciles"]
    p2 = read_table(spark, cfg, "events").where("event_id = 'p2'").first()
    assert p2["quantity"] == 2 and p2["event_type"] == "purchase"


def test_unreadable_files_are_quarantined_not_fatal(spark, cfg):
    root = landing(cfg)
    (root / "events" / "empty.jsonl").write_text("")
    good = gzip.compress(lines(ev("t1"), ev("t2")).encode())
    (root / "events" / "cut.jsonl.gz").write_bytes(good[: len(good) - 12])  # truncated gzip
    (root / "events" / "latin1.jsonl").write_bytes(json.dumps(ev("x1", query="caf\u00e9", et="search", item=None), ensure_ascii=False).encode("latin-1") + b"\n")
    (root / "events" / "ok.jsonl").write_text(lines(ev("o1")))
    r = ingest(spark, cfg)
    assert events(spark, cfg) == ["o1"]
    assert r["events"]["files_quarantined"] == {"empty_file": 1, "truncated_gzip": 1}
    assert r["events"]["quarantined_by_rule"] == {"bad_encoding": 1}
    q = {r["rule"]: r for r in read_table(spark, cfg, "quarantine").collect()}
    assert q["truncated_gzip"]["source_file"].endswith("cut.jsonl.gz")
    assert q["empty_file"]["source_file"].endswith("empty.jsonl")


def test_table_properties(spark, cfg):
    root = landing(cfg)
    (root / "events" / "h1.jsonl").write_text(lines(ev("e1")))
    ingest(spark, cfg)
    path = cfg.table_path("events")
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()}
    assert props.get("delta.enableChangeDataFeed") == "true"
    assert "delta.constraints.valid_event_type" in props
    assert props.get("delta.autoOptimize.optimizeWrite") == "true"
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail["partitionColumns"] == ["event_date"]
    # the constraint is enforced by Delta itself
    from pyspark.sql import functions as F

    bad = read_table(spark, cfg, "events").withColumn("event_type", F.lit("hover")).withColumn("event_id", F.lit("zz"))
    with pytest.raises(Exception, match="(?i)constraint|CHECK"):
        bad.write.format("delta").mode("append").save(path)


def test_optimized_writes_leave_one_file_per_event_date(spark, cfg):
    """Two landing files, each with events of two days, read and classified by several tasks:
    the append writes one file per date folder, not one per date and task."""
    root = landing(cfg)
    days = ["2026-10-01", "2026-10-02"]
    for f in ("a", "b"):
        (root / "events" / f"{f}.jsonl").write_text(
            lines(*[ev(f"{f}{n}", ts=f"{days[n % 2]}T10:{n:02d}:00Z", user=f"u{n}") for n in range(20)]))
    r = ingest(spark, cfg)
    assert r["events"]["accepted"] == 40
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table_path('events')}`").first()
    assert detail["numFiles"] == len(days)
