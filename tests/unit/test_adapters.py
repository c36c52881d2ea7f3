"""Tests for the dataset adapters (recsys.ingest.adapters): public datasets → the raw-log
contract of the landing folder. Pure Python, no Spark."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from recsys.ingest import adapters
from recsys.ingest.adapters import import_csv, import_dataset, import_diginetica, import_sequences

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
if not DATASETS.is_dir():  # the checkout may live elsewhere: fall back to the shared workspace
    DATASETS = Path("/work/shared/datasets")
BEAUTY = DATASETS / "amazon_beauty.txt"
DIGINETICA = DATASETS / "diginetica_sample_item_views.csv"

EVENT_KEYS = {"event_id", "ts", "user_id", "session_id", "event_type", "item_id", "query", "price", "quantity"}
CATALOG_KEYS = {"item_id", "title", "description", "category", "brand", "price", "in_stock"}
SUMMARY_KEYS = {"users", "items", "events", "files"}


# --- helpers -----------------------------------------------------------------------------


def read_jsonl(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return rows


def parse_ts(value: Any) -> dt.datetime:
    if isinstance(value, str) and value.isdigit():
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.timezone.utc)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def user_sequences(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Items per user in (ts, event_id) order: what the profiles job sees."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    return {
        u: [e["item_id"] for e in sorted(evs, key=lambda e: (parse_ts(e["ts"]), e["event_id"]))]
        for u, evs in by_user.items()
    }


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- sequences ---------------------------------------------------------------------------

SEQ_TEXT = """\
1 10 11 12
2 11 11 13 11
3 12

7 10 14 14 14 10
"""


def test_sequences_small_file(tmp_path: Path) -> None:
    src = write(tmp_path / "seq.txt", SEQ_TEXT)
    landing = tmp_path / "landing"
    summary = import_sequences(src, landing)

    events = read_jsonl(landing / "events")
    assert summary["events"] == len(events) == 3 + 4 + 1 + 5
    assert summary["users"] == 4
    assert summary["items"] == 5
    assert summary["files"] == 1
    assert summary["skipped_lines"] == 0
    # 2: 11 11 (1); 7: 14 14 14 (2)
    assert summary["consecutive_repeats"] == 3
    assert SUMMARY_KEYS <= set(summary)

    for e in events:
        assert set(e) == EVENT_KEYS
        assert e["event_type"] == "purchase" and e["quantity"] == 1
        assert e["query"] is None and e["price"] is None
        assert isinstance(e["user_id"], str) and isinstance(e["item_id"], str)
        assert e["ts"].endswith("Z")
    assert len({e["event_id"] for e in events}) == len(events)

    # (ts, event_id) order reproduces the file, repeated items included
    assert user_sequences(events) == {
        "1": ["10", "11", "12"],
        "2": ["11", "11", "13", "11"],
        "3": ["12"],
        "7": ["10", "14", "14", "14", "10"],
    }
    # strictly increasing times within a user, and event ids that sort the same way
    for user in ("2", "7"):
        evs = [e for e in events if e["user_id"] == user]
        times = [parse_ts(e["ts"]) for e in evs]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert [e["event_id"] for e in evs] == sorted(e["event_id"] for e in evs)
        assert times[0] >= dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)

    catalog = read_jsonl(landing / "catalog")
    assert {c["item_id"] for c in catalog} == {"10", "11", "12", "13", "14"}
    for c in catalog:
        assert set(c) == CATALOG_KEYS
        assert c["title"] == f"item {c['item_id']}"
        assert (c["description"], c["category"], c["brand"], c["price"], c["in_stock"]) == (
            "", "unknown", "unknown", None, True
        )
    users = read_jsonl(landing / "users")
    assert {u["user_id"] for u in users} == {"1", "2", "3", "7"}


def test_sequences_start_and_odd_lines(tmp_path: Path) -> None:
    # user 5 has no items (nothing to write, counted); user 1 appears twice (continues its order)
    src = write(tmp_path / "seq.txt", "1 a b\n5\n2 c\n1 b d\n")
    start = dt.datetime(2023, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
    summary = import_sequences(src, tmp_path / "landing", start=start)
    assert summary["skipped_lines"] == 1
    assert summary["duplicate_user_lines"] == 1
    assert summary["consecutive_repeats"] == 1  # a b | b d: b follows b across the two lines
    events = read_jsonl(tmp_path / "landing" / "events")
    assert summary["events"] == len(events) == 5
    assert user_sequences(events) == {"1": ["a", "b", "b", "d"], "2": ["c"]}
    assert min(parse_ts(e["ts"]) for e in events) == start


def test_sequences_split_into_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "LINES_PER_FILE", 4)
    src = write(tmp_path / "seq.txt", SEQ_TEXT)
    summary = import_sequences(src, tmp_path / "landing")
    files = sorted((tmp_path / "landing" / "events").glob("*.jsonl"))
    assert summary["files"] == len(files) == 4  # 13 events, 4 per file
    assert len(read_jsonl(tmp_path / "landing" / "events")) == 13


def test_import_replaces_only_landing_subfolders(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for sub in ("events", "catalog", "users"):
        (landing / sub).mkdir(parents=True)
        (landing / sub / "old.jsonl").write_text("{}\n")
    (landing / "keep").mkdir()
    (landing / "keep" / "x.txt").write_text("x")
    src = write(tmp_path / "seq.txt", "1 a b\n")
    import_sequences(src, landing)
    for sub in ("events", "catalog", "users"):
        assert not (landing / sub / "old.jsonl").exists()
    assert (landing / "keep" / "x.txt").read_text() == "x"
    assert sorted(p.name for p in landing.iterdir()) == ["catalog", "events", "keep", "users"]


def test_sequences_real_beauty(tmp_path: Path) -> None:
    if not BEAUTY.exists():
        pytest.skip(f"shared dataset not present: {BEAUTY}")
    summary = import_sequences(BEAUTY, tmp_path / "landing")
    assert summary["users"] == 22_363
    assert summary["items"] == 12_101
    assert summary["events"] == 198_502
    assert summary["skipped_lines"] == 0
    assert summary["files"] >= 4
    files = sorted((tmp_path / "landing" / "events").glob("*.jsonl"))
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 198_502
    # unique ids without parsing 200k lines: the event id is the first value of each line
    assert len({line.split('"', 4)[3] for line in lines}) == 198_502
    # file order is (ts, event_id) order for every user (users are written in file order, so
    # the first 200 users are in the first events file)
    first = BEAUTY.read_text().splitlines()[:200]
    expected = {line.split()[0]: line.split()[1:] for line in first}
    events = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert user_sequences([e for e in events if e["user_id"] in expected]) == expected
    assert len(read_jsonl(tmp_path / "landing" / "catalog")) == 12_101


# --- diginetica --------------------------------------------------------------------------

DIGI_TEXT = """\
session_id;user_id;item_id;timeframe;eventdate
1;NA;81766;526309;2016-05-09
1;NA;31331;1031018;2016-05-09
1;NA;32118;243569;2016-05-09
48;2;24764;8863;2016-04-09
48;2;24764;496381;2016-04-09
49;2;5;90000000;2016-04-10
50;NA;;100;2016-04-11
51;NA;7;oops;2016-04-11
52;3;7;100
"""


def test_diginetica_small_sample(tmp_path: Path) -> None:
    src = write(tmp_path / "views.csv", DIGI_TEXT)
    landing = tmp_path / "landing"
    summary = import_diginetica(src, landing)
    events = read_jsonl(landing / "events")
    assert summary["events"] == len(events) == 8
    assert summary["skipped_lines"] == 1  # the row with four fields
    assert summary["bad_timestamps"] == 1 and summary["missing_items"] == 1
    assert summary["users"] == 4  # s1, 2, s50, s51
    assert summary["items"] == 6  # the bad-time row's item 7 is still a catalogue item
    assert summary["sessions"] == 5 and summary["anonymous_sessions"] == 3
    assert summary["consecutive_repeats"] == 1  # user 2 views 24764 twice in a row
    assert SUMMARY_KEYS <= set(summary)

    for e in events:
        assert set(e) == EVENT_KEYS
        assert e["event_type"] == "view" and e["quantity"] is None
    by_id = {e["event_id"]: e for e in events}
    assert len(by_id) == len(events)

    s1 = [e for e in events if e["session_id"] == "1"]
    assert {e["user_id"] for e in s1} == {"s1"}
    # ts = date + timeframe ms; order by time, not by file line
    assert user_sequences(s1)["s1"] == ["32118", "81766", "31331"]
    assert {e["ts"] for e in s1} == {
        "2016-05-09T00:08:46.309Z", "2016-05-09T00:17:11.018Z", "2016-05-09T00:04:03.569Z"
    }
    # a timeframe beyond a day rolls over; a known user keeps its id
    late = next(e for e in events if e["session_id"] == "49")
    assert late["user_id"] == "2" and late["ts"] == "2016-04-11T01:00:00Z"
    # bad rows are written through for ingest to quarantine
    no_item = next(e for e in events if e["session_id"] == "50")
    assert no_item["item_id"] is None
    bad_ts = next(e for e in events if e["session_id"] == "51")
    with pytest.raises(ValueError):
        parse_ts(bad_ts["ts"])

    catalog = read_jsonl(landing / "catalog")
    assert {c["item_id"] for c in catalog} == {"81766", "31331", "32118", "24764", "5", "7"}
    assert all(c["title"] == f"item {c['item_id']}" and c["price"] is None for c in catalog)


def test_diginetica_rejects_other_header(tmp_path: Path) -> None:
    src = write(tmp_path / "views.csv", "a;b;c\n1;2;3\n")
    with pytest.raises(ValueError, match="timeframe"):
        import_diginetica(src, tmp_path / "landing")
    assert not (tmp_path / "landing" / "events").exists()


def test_diginetica_real_sample(tmp_path: Path) -> None:
    if not DIGINETICA.exists():
        pytest.skip(f"shared dataset not present: {DIGINETICA}")
    summary = import_diginetica(DIGINETICA, tmp_path / "landing")
    # 12,391 data rows: the README's 12,390 is `wc -l` minus the header, and the file's last
    # line has no newline.
    data_rows = len([l for l in DIGINETICA.read_text().splitlines()[1:] if l.strip()])
    assert summary["events"] == data_rows == 12_391
    assert summary["skipped_lines"] == 0 and summary["bad_timestamps"] == 0
    events = read_jsonl(tmp_path / "landing" / "events")
    assert len(events) == 12_391
    assert all(e["event_type"] == "view" and e["item_id"] for e in events)
    catalog = {c["item_id"] for c in read_jsonl(tmp_path / "landing" / "catalog")}
    assert {e["item_id"] for e in events} == catalog
    assert summary["items"] == len(catalog)


# --- csv ---------------------------------------------------------------------------------

CSV_TEXT = """\
visitorid,itemid,timestamp,event,price
u1,i1,1433221332,view,10.5
u1,i2,1433221332117,purchase,3
u2,i1,2021-03-04T05:06:07Z,click,
u2,,2021-03-04T05:06:08Z,view,1
u3,i3,not-a-time,view,x
u4,i4,2021-03-04T05:06:09Z,search
"""


def test_csv_with_mapping(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", CSV_TEXT)
    mapping = {"user_id": "visitorid", "item_id": "itemid", "ts": "timestamp", "event_type": "event", "price": "price"}
    summary = import_csv(src, tmp_path / "landing", mapping)
    events = read_jsonl(tmp_path / "landing" / "events")
    assert summary["events"] == len(events) == 6
    assert summary["lines"] == 6
    assert summary["users"] == 4
    assert summary["items"] == 4  # i1..i4; the empty item is not a catalogue item
    assert summary["epoch_seconds_converted"] == 1
    assert summary["generated_event_ids"] == 6
    assert summary["ragged_rows"] == 1  # the last row has no price field
    assert summary["bad_rows"] == 2  # missing item, bad time + bad price
    assert SUMMARY_KEYS <= set(summary)
    assert len({e["event_id"] for e in events}) == 6

    for e in events:
        assert set(e) == EVENT_KEYS
    rows = {(e["user_id"], e["event_type"], e["ts"]): e for e in events}
    # epoch seconds → epoch ms; epoch ms and ISO pass through
    assert ("u1", "view", "1433221332000") in rows
    assert ("u1", "purchase", "1433221332117") in rows
    assert rows[("u1", "purchase", "1433221332117")]["quantity"] == 1
    assert rows[("u1", "purchase", "1433221332117")]["price"] == 3.0
    assert rows[("u1", "view", "1433221332000")]["quantity"] is None
    assert ("u2", "click", "2021-03-04T05:06:07Z") in rows
    # the bad rows are written through, not dropped
    missing_item = rows[("u2", "view", "2021-03-04T05:06:08Z")]
    assert missing_item["item_id"] is None
    bad = rows[("u3", "view", "not-a-time")]
    assert bad["price"] == "x"

    catalog = {c["item_id"]: c for c in read_jsonl(tmp_path / "landing" / "catalog")}
    assert set(catalog) == {"i1", "i2", "i3", "i4"}
    assert catalog["i1"]["price"] == 10.5 and catalog["i3"]["price"] is None
    assert all(set(c) == CATALOG_KEYS for c in catalog.values())


def test_csv_default_event_type_and_ids(tmp_path: Path) -> None:
    src = write(tmp_path / "log.tsv", "ev\tuser\titem\twhen\tsess\tqty\n"
                                      "e1\tu1\ti1\t1600000000.5\ts1\t2\n"
                                      "e2\tu1\ti2\t2020-09-13 12:26:40\ts1\t\n")
    mapping = {"event_id": "ev", "user_id": "user", "item_id": "item", "ts": "when",
               "session_id": "sess", "quantity": "qty"}
    summary = import_dataset(src, tmp_path / "landing", "csv", mapping=mapping, delimiter="\t",
                             default_event_type="view")
    events = sorted(read_jsonl(tmp_path / "landing" / "events"), key=lambda e: e["event_id"])
    assert summary["events"] == 2 and summary["generated_event_ids"] == 0 and summary["bad_rows"] == 0
    assert [e["event_id"] for e in events] == ["e1", "e2"]
    assert all(e["event_type"] == "view" and e["session_id"] == "s1" for e in events)
    assert events[0]["ts"] == "1600000000500" and events[0]["quantity"] == 2
    assert events[1]["ts"] == "2020-09-13 12:26:40" and events[1]["quantity"] is None

    src2 = write(tmp_path / "p.csv", "u,i,t\nu1,i1,1600000000\n")
    import_csv(src2, tmp_path / "landing", {"user_id": "u", "item_id": "i", "ts": "t"})
    (e,) = read_jsonl(tmp_path / "landing" / "events")
    assert e["event_type"] == "purchase" and e["quantity"] == 1 and e["ts"] == "1600000000000"


# --- errors ------------------------------------------------------------------------------


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sequences.*diginetica.*csv"):
        import_dataset(tmp_path / "x.txt", tmp_path / "landing", "parquet")


def test_csv_mapping_errors(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", "u,i,t\nu1,i1,1600000000\n")
    with pytest.raises(ValueError, match="allowed keys.*user_id"):
        import_csv(src, tmp_path / "landing", {"user_id": "u", "item_id": "i", "ts": "t", "rating": "r"})
    with pytest.raises(ValueError, match="required"):
        import_csv(src, tmp_path / "landing", {"user_id": "u", "item_id": "i"})
    with pytest.raises(ValueError, match="not in the header"):
        import_csv(src, tmp_path / "landing", {"user_id": "u", "item_id": "item", "ts": "t"})
    with pytest.raises(ValueError, match="default_event_type"):
        import_csv(src, tmp_path / "landing", {"user_id": "u", "item_id": "i", "ts": "t"},
                   default_event_type="hover")
    assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").iterdir())


@pytest.mark.parametrize("fmt,kwargs", [
    ("sequences", {}),
    ("diginetica", {}),
    ("csv", {"mapping": {"user_id": "u", "item_id": "i", "ts": "t"}}),
])
def test_missing_source_file(tmp_path: Path, fmt: str, kwargs: dict[str, Any]) -> None:
    missing = tmp_path / "nope" / "data.txt"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_dataset(missing, tmp_path / "landing", fmt, **kwargs)
