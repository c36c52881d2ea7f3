"""recsys.tables.upsert on small Delta tables in a temp dir."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from recsys.tables import upsert

pytestmark = pytest.mark.spark

SCHEMA = "user_id string, split string, n long"


def _table(spark, tmp_path, rows) -> str:
    path = str(tmp_path / "t")
    spark.createDataFrame(rows, SCHEMA).write.format("delta").save(path)
    return path


def _read(spark, path):
    return spark.read.format("delta").load(path)


def test_upsert_updates_matched_rows_inserts_new_keys_and_keeps_the_rest(spark, tmp_path):
    path = _table(spark, tmp_path, [("u1", "train", 1), ("u2", "train", 2)])
    source = spark.createDataFrame([("u2", "test", 20), ("u3", "train", 3)], SCHEMA)
    upsert(spark, path, source, ["user_id"])
    assertDataFrameEqual(_read(spark, path), spark.createDataFrame(
        [("u1", "train", 1), ("u2", "test", 20), ("u3", "train", 3)], SCHEMA))


def test_upsert_on_two_keys_deletes_tombstones_and_missing_keys(spark, tmp_path):
    path = _table(spark, tmp_path, [("u1", "train", 1), ("u1", "test", 1), ("u2", "train", 2), ("u2", "test", 2),
                                    ("u3", "train", 3)])
    source = spark.createDataFrame([("u1", "train", 10), ("u2", "train", 0), ("u4", "train", 0), ("u4", "test", 4)],
                                   SCHEMA)
    # u1 keeps only its train row (its test row is missing from source); u2's train row is a
    # tombstone (n = 0), its test row is not u1's and stays; u4's tombstone is not inserted.
    upsert(spark, path, source, ["user_id", "split"], delete_when=F.col("n") == 0,
           delete_missing=spark.createDataFrame([("u1", "train"), ("u1", "test")], "user_id string, split string"))
    assertDataFrameEqual(_read(spark, path), spark.createDataFrame(
        [("u1", "train", 10), ("u2", "test", 2), ("u3", "train", 3), ("u4", "test", 4)], SCHEMA))


def test_upsert_rejects_bad_keys_before_touching_the_table(spark, tmp_path):
    path = _table(spark, tmp_path, [("u1", "train", 1)])
    source = spark.createDataFrame([("u1", "train", 5)], SCHEMA)
    with pytest.raises(ValueError, match="at least one key"):
        upsert(spark, path, source, [])
    with pytest.raises(ValueError, match="not in source"):
        upsert(spark, path, source, ["item_id"])
    with pytest.raises(ValueError, match="not in delete_missing"):
        upsert(spark, path, source, ["user_id", "split"], delete_missing=source.select("user_id"))
    assertDataFrameEqual(_read(spark, path), spark.createDataFrame([("u1", "train", 1)], SCHEMA))
