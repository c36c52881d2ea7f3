"""Ingestion on a real local Spark session with Delta: rules, quarantine, reconciliation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.ingest.pipeline import ingest
from recsys.tables import read_table

pytestmark = pytest.mark.spark

CATALOG = [
    {"item_id": "i1", "title": "Lumina Serum", "description": "d", "category": "Beauty>Skin>Serum", "brand": "Lumina", "price": 10.0, "in_stock": True},
    {"item_id": "i2", "title": "Acme Phone Case", "description": "d", "category": "Tech>Phone>Case", "brand": "Acme", "price": 5.5, "in_stock": False},
    {"item_id": "i3", "title": "Acme Headphones", "description": "d", "category": "Tech>Audio>Headphones", "brand": "Acme", "price": 99.0, "in_stock": True},
]


def ev(eid, et="view", item="i1", ts="2026-10-01T10:00:00Z", **kw):
    d = {"event_id": eid, "ts": ts, "user_id": "u1", "session_id": "s1", "event_type": et, "item_id": item,
         "query": None, "price": 10.0, "quantity": None}
    d.update(kw)
    return json.dumps(d)


# (raw line, the rule it must break; None = accepted, "dup" = duplicate dropped)
EVENT_LINES = [
    (ev("e1"), None),
    (ev("e2", "click", ts=1790848800000), None),  # epoch milliseconds
    (ev("e3", "search", item=None, query="serum", price=None), None),
    (ev("e4", "purchase", quantity=2), None),
    ('{"event_id": "e5", "ts": "2026-10-01T1', "broken_json"),
    ("[1, 2, 3]", "broken_json"),
    (ev(""), "missing_event_id"),
    (ev("e6", user_id=None), "missing_user_id"),
    (ev("e7", "hover"), "unknown_event_type"),
    (ev("e8", "view", item=None), "missing_item_id"),
    (ev("e9", ts="yesterday"), "bad_timestamp"),
    (ev("e10", ts="2099-01-01T00:00:00Z"), "future_timestamp"),
    (ev("e11", price="cheap"), "bad_price"),
    (ev("e12", price=-3.0), "negative_price"),
    (ev("e13", "purchase", quantity=100000), "bad_quantity"),
    (ev("e14", item="i999"), "unknown_item"),
    (ev("e1"), "dup"),
]


def write_landing(root: Path) -> None:
    (root / "catalog").mkdir(parents=True)
    (root / "events").mkdir()
    (root / "users").mkdir()
    lines = [json.dumps(c) for c in CATALOG] + ['{"item_id": "", "title": "x"}', json.dumps(CATALOG[0]), "{oops"]
    (root / "catalog" / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    (root / "users" / "users.jsonl").write_text(
        json.dumps({"user_id": "u1", "age": 30, "gender": "f", "location": "Lyon"}) + "\n"
        + json.dumps({"user_id": "u2", "age": 300}) + "\n"
    )
    (root / "events" / "day1.jsonl").write_text("\n".join(l for l, _ in EVENT_LINES[:9]) + "\n\n")
    (root / "events" / "day2.jsonl").write_text("\n".join(l for l, _ in EVENT_LINES[9:]) + "\n")


def test_every_bad_line_is_quarantined_with_its_rule(spark, cfg):
    write_landing(cfg.lakehouse.landing_path)
    report = ingest(spark, cfg)

    events = read_table(spark, cfg, "events")
    assert sorted(r["event_id"] for r in events.collect()) == ["e1", "e2", "e3", "e4"]
    q = read_table(spark, cfg, "quarantine")
    got = sorted((r["raw"], r["rule"]) for r in q.where("source = 'events'").collect())
    want = sorted((l, "duplicate_event_id" if r == "dup" else r) for l, r in EVENT_LINES if r is not None)
    assert got == want
    # every quarantined row keeps its source file
    assert all(r["source_file"].endswith((".jsonl",)) for r in q.collect())

    e = report["events"]
    assert (e["read"], e["accepted"], e["duplicates"]) == (len(EVENT_LINES), 4, 1)
    assert e["quarantined"] == len(EVENT_LINES) - 5
    assert e["read"] == e["accepted"] + e["quarantined"] + e["duplicates"] and e["reconciles"]
    assert e["files"] == 2

    c = report["catalog"]
    assert (c["read"], c["accepted"], c["quarantined"], c["duplicates"]) == (6, 3, 2, 1)
    assert report["users"]["quarantined_by_rule"] == {"bad_age": 1}
    # the report is also on disk
    assert list(cfg.lakehouse.reports_path.glob("ingest-*.json"))


def test_typed_columns(spark, cfg):
    write_landing(cfg.lakehouse.landing_path)
    ingest(spark, cfg)
    rows = {r["event_id"]: r for r in read_table(spark, cfg, "events").collect()}
    assert str(rows["e2"]["ts"]) == "2026-10-01 10:00:00"  # epoch ms parsed in UTC
    assert rows["e4"]["quantity"] == 2 and rows["e1"]["price"] == 10.0
    assert str(rows["e1"]["event_date"]) == "2026-10-01"
    cat = {r["item_id"]: r for r in read_table(spark, cfg, "catalog").collect()}
    assert cat["i2"]["in_stock"] is False and cat["i3"]["price"] == 99.0


def test_missing_input_folder_is_a_clear_error(spark, cfg):
    with pytest.raises(FileNotFoundError, match="input folder .*events does not exist"):
        ingest(spark, cfg)
