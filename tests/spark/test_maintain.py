"""recsys maintain on small Delta tables made of many small appends: OPTIMIZE compacts them,
VACUUM removes the replaced files, the report tells the sizes before and after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from recsys.config import ConfigError, load_config, replace
from recsys.errors import UsageError
from recsys.maintain import maintain, render_maintain, zorder_columns

pytestmark = pytest.mark.spark

SCHEMA = "user_id string, n long, run_date string"


def _append_small_files(spark, path: str, appends: int = 4, partition_by: str | None = None) -> None:
    for i in range(appends):
        df = spark.createDataFrame([(f"u{j}", i, f"2026-11-0{1 + j % 2}") for j in range(12)], SCHEMA).repartition(2)
        writer = df.write.format("delta").mode("append")
        (writer.partitionBy(partition_by) if partition_by else writer).save(path)


def _data_files(path: str) -> list[Path]:
    return [p for p in Path(path).rglob("*.parquet") if "_delta_log" not in p.parts]


def test_maintain_compacts_vacuums_and_reports_sizes(spark, cfg):
    cfg = replace(cfg, "maintenance.retain_hours=0")
    profiles, recs = cfg.table_path("user_profiles"), cfg.table_path("recommendations")
    _append_small_files(spark, profiles)
    _append_small_files(spark, recs, partition_by="run_date")
    rows = {p: spark.read.format("delta").load(p).collect() for p in (profiles, recs)}
    files_before = len(_data_files(profiles))

    report = maintain(spark, cfg)

    assert set(report["tables"]) == {"user_profiles", "recommendations"}
    assert "events" in report["missing"] and "audiences" in report["missing"]
    up, rec = report["tables"]["user_profiles"], report["tables"]["recommendations"]
    assert up["before"]["files"] == files_before == 8 and up["before"]["bytes"] > 0
    assert up["after"]["files"] < up["before"]["files"] and up["after"]["files"] == 1
    assert up["zorder_by"] == ["user_id"] and up["optimize"] == {"files_removed": 8, "files_added": 1}
    # partitioned by run_date: Z-ordered by user_id only, one file per partition left
    assert rec["zorder_by"] == ["user_id"] and rec["after"]["files"] == 2
    for p in (profiles, recs):
        assertDataFrameEqual(spark.read.format("delta").load(p), rows[p])
    # RETAIN 0 HOURS: the replaced small files are gone from storage, and the report says so
    assert up["vacuum"]["files"] == 8 and up["vacuum"]["bytes"] > 0
    assert len(_data_files(profiles)) == up["after"]["files"]
    assert len(_data_files(recs)) == rec["after"]["files"]
    # the check Delta applies below 168 h is back on afterwards (the session is shared)
    assert spark.conf.get("spark.databricks.delta.retentionDurationCheck.enabled", "true") != "false"
    written = sorted(cfg.lakehouse.reports_path.glob("maintain-*.json"))
    assert json.loads(written[-1].read_text())["tables"]["user_profiles"]["after"]["files"] == 1
    text = render_maintain(report)
    assert "user_profiles" in text and "8 -> 1" in text and "not written yet: events" in text

    # Nothing written since: the Z-ordered table is not rewritten again.
    again = maintain(spark, cfg, table="user_profiles", skip_vacuum=True)
    assert again["tables"]["user_profiles"]["optimize"].startswith("skipped")
    assert "vacuum" not in again["tables"]["user_profiles"] and list(again["tables"]) == ["user_profiles"]


def test_maintain_of_one_missing_table_and_an_unknown_one(spark, cfg):
    assert maintain(spark, cfg, table="events")["missing"] == ["events"]
    with pytest.raises(UsageError, match="unknown table 'event'; tables: events, catalog, users"):
        maintain(spark, cfg, table="event")


def test_zorder_keys_leave_out_partition_columns_and_absent_columns():
    assert zorder_columns("events", ["event_id", "user_id", "event_date"], ["event_date"]) == ["user_id"]
    assert zorder_columns("audiences", ["target", "user_id", "run_date"], ["run_date"]) == ["target"]
    assert zorder_columns("user_profiles", ["n"], []) == []


def test_retention_is_checked():
    with pytest.raises(ConfigError, match="maintenance.retain_hours must be >= 0"):
        load_config(None, ["maintenance.retain_hours=-1"])
    with pytest.raises(ConfigError, match="'maintenance.retain_hours': expected an integer"):
        load_config(None, ["maintenance.retain_hours=a week"])
    assert load_config(None).maintenance.retain_hours == 168
