"""Storage locations are opaque URIs handed to Spark and Hadoop: a ``file:///`` root gets
every table, report and landing file under it, and a full refresh really empties bronze."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys import stages, storage
from recsys.config import load_config
from recsys.tables import read_table

from ..conftest import ROOT

pytestmark = pytest.mark.spark

SMALL = ["generator.users=60", "generator.items=30", "generator.days=5", "generator.malformed_rate=0.02",
         "spark.shuffle_partitions=2", "features.text_embeddings=false", "features.deletion_vectors=false"]


def test_storage_helpers_through_hadoop(spark, tmp_path):
    base = tmp_path.as_uri()  # file:///…
    storage.write_text(storage.join(base, "a", "x.jsonl"), "{}\n", spark)
    storage.write_text(storage.join(base, "a", "sub", "y.csv"), "h\n", spark)
    storage.write_text(storage.join(base, "a", "_tmp", "z.jsonl"), "{}\n", spark)
    storage.write_text(storage.join(base, "a", ".hidden.jsonl"), "{}\n", spark)
    listed = storage.list_files(storage.join(base, "a"), spark)
    assert sorted(f.name for f in listed) == ["x.jsonl", "y.csv"]  # hidden and temporary skipped
    assert [f.uri for f in listed] == sorted(f.uri for f in listed)
    sizes = {f.name: f.size for f in listed}
    assert sizes == {"x.jsonl": 3, "y.csv": 2} and all(f.uri.startswith("file:") for f in listed)
    assert storage.read_text(storage.join(base, "a", "x.jsonl"), spark) == "{}\n"
    assert storage.delete(storage.join(base, "a"), spark) and not (tmp_path / "a").exists()
    assert not storage.delete(storage.join(base, "a"), spark)
    assert storage.list_files(storage.join(base, "a"), spark) == []


def test_pipeline_on_a_file_uri_root(spark, tmp_path):
    root = tmp_path / "lake"
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"lakehouse.root={root.as_uri()}", *SMALL])
    assert cfg.table_path("events") == f"{root.as_uri()}/bronze/events"
    stages.run_stage("generate", cfg, spark)
    first = stages.run_stage("ingest", cfg, spark)
    profiles = stages.run_stage("build-profiles", cfg, spark)
    for table in ("bronze/events", "bronze/catalog", "bronze/quarantine", "gold/user_profiles",
                  "gold/item_profiles", "gold/training_examples"):
        assert (root / table / "_delta_log").is_dir(), table
    assert list((root / "_reports").glob("ingest-*.json")) and list((root / "_reports").glob("profiles-*.json"))
    assert not Path(os.getcwd(), "file:").exists()  # nothing landed under the working directory
    assert first["events"]["reconciles"] and profiles["mode"] == "full"
    # features.deletion_vectors=false: no table needs a reader with deletion-vector support.
    for table in ("user_profiles", "training_examples"):
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table_path(table)}`").first()
        assert "deletionVectors" not in (detail["tableFeatures"] or []), table
    events = read_table(spark, cfg, "events").count()
    assert events == first["events"]["accepted"] > 0
    # A full refresh deletes bronze through Hadoop's FileSystem: the events are not appended twice.
    again = stages.run_stage("ingest", load_config(ROOT / "conf" / "local.yaml",
                                                   [f"lakehouse.root={root.as_uri()}", *SMALL,
                                                    "ingest.full_refresh=true"]), spark)
    assert again["mode"] == "full" and read_table(spark, cfg, "events").count() == events
