"""One test per kind of bad input: each kind sits in its own landing file next to one good
event, one ingest run reads them all, and each test checks its file's outcome: the bad row
(or the whole unreadable file) is in ``quarantine`` with its rule and raw text, and the good
row of the same file reached bronze."""

from __future__ import annotations

import gzip
import json

import pytest

from recsys.ingest.pipeline import ingest
from recsys.tables import read_table

from ..conftest import make_config

pytestmark = pytest.mark.spark

CATALOG = [{"item_id": "i1", "title": "Serum", "category": "Beauty>Skin", "brand": "b", "price": 10.0}]


def ev(eid: str, ascii_only: bool = True, **kw) -> str:
    d = {"event_id": eid, "ts": "2026-10-01T10:00:00Z", "user_id": "u1", "session_id": "s1", "event_type": "view",
         "item_id": "i1", "query": None, "price": 10.0, "quantity": None}
    d.update(kw)
    return json.dumps(d, ensure_ascii=ascii_only)


# kind → (file name, bad line written after a good one)
ROW_KINDS = {
    "broken_json": ("broken.jsonl", '{"event_id": "x1", "ts": "2026-10-01T1'),
    "missing_event_id": ("no_event_id.jsonl", ev("")),
    "missing_user_id": ("no_user.jsonl", ev("x2", user_id="  ")),
    "unknown_event_type": ("hover.jsonl", ev("x3", event_type="hover")),
    "bad_timestamp": ("bad_ts.jsonl", ev("x4", ts="yesterday")),
    "future_timestamp": ("future.jsonl", ev("x5", ts="2099-01-01T00:00:00Z")),
    "bad_price": ("text_price.jsonl", ev("x6", price="cheap")),
    "negative_price": ("negative.jsonl", ev("x7", price=-3.0)),
    "bad_quantity": ("quantity.jsonl", ev("x8", event_type="purchase", quantity=100000)),
    "unknown_item": ("not_in_catalogue.jsonl", ev("x9", event_type="purchase", item_id="i999")),
    "duplicate_event_id": ("duplicate.jsonl", ev("good-duplicate.jsonl")),
    "id_too_long": ("long_id.jsonl", ev("x12", user_id="u" * 100_000)),
}
CSV_HEADER = "event_id,user_id,event_type,item_id,ts,price"
CSV_BAD = "x10,u1,view,i1,2026-10-01T10:00:00Z,1.5,EXTRA"
LATIN1_BAD = ev("x11", ascii_only=False, event_type="search", item_id=None, query="caf\u00e9")


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("bad-input") / "lakehouse")
    root = cfg.lakehouse.landing_path
    (root / "catalog").mkdir(parents=True)
    (root / "events").mkdir()
    (root / "catalog" / "catalog.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CATALOG))
    for name, bad in ROW_KINDS.values():
        (root / "events" / name).write_text(ev(f"good-{name}") + "\n" + bad + "\n")
    (root / "events" / "columns.csv").write_text(f"{CSV_HEADER}\ngood-columns.csv,u1,view,i1,2026-10-01T10:00:00Z,1.5\n{CSV_BAD}\n")
    (root / "events" / "latin1.jsonl").write_bytes(
        (ev("good-latin1.jsonl") + "\n").encode() + LATIN1_BAD.encode("latin-1") + b"\n")
    (root / "events" / "empty.jsonl").write_text("")
    (root / "events" / "only_blank.jsonl").write_text("\n   \n\n")
    (root / "events" / "blank_lines.jsonl").write_text(f"\n{ev('good-blank')}\n  \n")
    whole = gzip.compress((ev("t1") + "\n" + ev("t2") + "\n").encode())
    (root / "events" / "cut.jsonl.gz").write_bytes(whole[:-12])
    report = ingest(spark, cfg)
    quarantine = [r.asDict() for r in read_table(spark, cfg, "quarantine").where("source = 'events'").collect()]
    accepted = {r["event_id"] for r in read_table(spark, cfg, "events").select("event_id").collect()}
    return report, quarantine, accepted


def _rows_of(quarantine: list[dict], file_name: str) -> list[dict]:
    return [r for r in quarantine if r["source_file"].endswith("/" + file_name)]


@pytest.mark.parametrize("kind", sorted(ROW_KINDS))
def test_bad_row_is_quarantined_with_its_rule(ingested, kind):
    _, quarantine, accepted = ingested
    name, bad = ROW_KINDS[kind]
    rows = _rows_of(quarantine, name)
    assert [(r["rule"], r["raw"]) for r in rows] == [(kind, bad)]
    if kind != "duplicate_event_id":  # there the good row *is* the first copy
        assert f"good-{name}" in accepted


def test_wrong_column_count_in_csv(ingested):
    _, quarantine, accepted = ingested
    assert [(r["rule"], r["raw"]) for r in _rows_of(quarantine, "columns.csv")] == [("wrong_column_count", CSV_BAD)]
    assert "good-columns.csv" in accepted


def test_wrong_encoding(ingested):
    _, quarantine, accepted = ingested
    rows = _rows_of(quarantine, "latin1.jsonl")
    assert [r["rule"] for r in rows] == ["bad_encoding"]
    assert "good-latin1.jsonl" in accepted


@pytest.mark.parametrize("name, rule", [("empty.jsonl", "empty_file"), ("only_blank.jsonl", "empty_file"),
                                        ("cut.jsonl.gz", "truncated_gzip")])
def test_unreadable_file_is_quarantined_whole(ingested, name, rule):
    report, quarantine, accepted = ingested
    assert [r["rule"] for r in _rows_of(quarantine, name)] == [rule]
    assert report["events"]["files_quarantined"][rule] == (2 if rule == "empty_file" else 1)
    assert not {"t1", "t2"} & accepted  # nothing half-read from a cut file


def test_the_report_reconciles_over_all_kinds(ingested):
    report, quarantine, accepted = ingested
    e = report["events"]
    assert e["read"] == e["accepted"] + e["quarantined"] + e["duplicates"] and e["reconciles"]
    assert e["accepted"] == len(accepted) == len(ROW_KINDS) + 3  # one good row per file
    assert e["duplicates"] == 1
    # Counted from storage: blank lines are reported as such, the CSV header as a header.
    assert e["blank_lines"] == 2 and e["header_lines"] == 1
    assert e["lines"] == e["read"] + e["blank_lines"] + e["header_lines"]


def test_a_row_lost_between_reading_and_classifying_fails_the_reconciliation(spark, tmp_path):
    """The rows read are counted apart from the classified rows, so a row dropped without a
    rule shows: here a CSV file that repeats its header line mid-file (the reader skips
    header lines as such, the line count expects one per file)."""
    cfg = make_config(tmp_path / "lakehouse")
    root = cfg.lakehouse.landing_path
    (root / "catalog").mkdir(parents=True)
    (root / "events").mkdir()
    (root / "catalog" / "catalog.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CATALOG))
    good = "e1,u1,view,i1,2026-10-01T10:00:00Z,1.5"
    (root / "events" / "twice.csv").write_text(f"{CSV_HEADER}\n{good}\n{CSV_HEADER}\n")
    e = ingest(spark, cfg)["events"]
    assert (e["read"], e["accepted"], e["quarantined"]) == (2, 1, 0)
    assert e["reconciles"] is False
