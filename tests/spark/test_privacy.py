"""Pseudonymous user ids: the Spark HMAC equals Python's, keys are handled safely."""

from __future__ import annotations

import json

import pytest

from recsys.config import load_config
from recsys.ingest.pipeline import ingest
from recsys.privacy import DEV_KEY, PrivacyError, pseudonymise, pseudonymise_col, resolve_key
from recsys.tables import read_table

from ..conftest import ROOT, make_config

pytestmark = pytest.mark.spark


def write_landing(cfg, users: list[str], events: list[tuple[str, str, str]]) -> None:
    """One catalogue item, ``users`` and view ``events`` (event id, user, ts) as landing files."""
    land = cfg.lakehouse.landing_path
    for sub in ("events", "catalog", "users"):
        (land / sub).mkdir(parents=True)
    (land / "catalog" / "c.jsonl").write_text(json.dumps({"item_id": "i1", "title": "t", "price": 1}) + "\n")
    (land / "users" / "u.jsonl").write_text("".join(json.dumps({"user_id": u, "age": 30}) + "\n" for u in users))
    (land / "events" / "e.jsonl").write_text("".join(
        json.dumps({"event_id": e, "ts": ts, "user_id": u, "event_type": "view", "item_id": "i1"}) + "\n"
        for e, u, ts in events))


@pytest.mark.parametrize("key", [b"k", b"a-longer-secret-key", b"x" * 100])
def test_spark_hmac_equals_python_hmac(spark, key):
    from pyspark.sql import functions as F

    values = ["u1", "user-00042", "Zoë@example.com", " padded "]
    df = spark.createDataFrame([(v,) for v in values] + [(None,)], "v string")
    got = [r[0] for r in df.select(pseudonymise_col(F.col("v"), key)).collect()]
    assert got == [pseudonymise(v, key) for v in values] + [None]
    assert all(len(g) == 64 for g in got[:-1])


def test_key_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
    local = load_config(ROOT / "conf" / "local.yaml")
    assert resolve_key(local) == DEV_KEY
    cluster = load_config(ROOT / "conf" / "cluster.yaml")
    with pytest.raises(PrivacyError, match="RECSYS_PSEUDONYM_KEY"):
        resolve_key(cluster)
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", DEV_KEY.decode())
    with pytest.raises(PrivacyError, match="development key is refused"):
        resolve_key(cluster)
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", "s3cret")
    assert resolve_key(cluster) == b"s3cret"
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    filed = load_config(ROOT / "conf" / "cluster.yaml", [f"privacy.key_file={secret}"])
    assert resolve_key(filed) == b"from-file"
    with pytest.raises(PrivacyError, match="does not exist"):
        resolve_key(load_config(ROOT / "conf" / "cluster.yaml", [f"privacy.key_file={tmp_path / 'nope'}"]))


def test_raw_ids_never_reach_bronze(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", "test-key")
    cfg = make_config(tmp_path / "lh")
    write_landing(cfg, ["alice"], [("e1", "alice", "2026-10-01T10:00:00Z"), ("e2", "alice", "bad")])
    ingest(spark, cfg)
    want = pseudonymise("alice", b"test-key")
    assert [r["user_id"] for r in read_table(spark, cfg, "events").collect()] == [want]
    assert [r["user_id"] for r in read_table(spark, cfg, "users").collect()] == [want]
    assert [r["user_key"] for r in read_table(spark, cfg, "quarantine").collect()] == [want]


def test_forget_user_purges_files_of_a_table_with_deletion_vectors(spark, tmp_path):
    """With deletion vectors a DELETE only marks rows; forget-user's vacuum must still leave
    no file on disk, current or old, that holds the user's rows."""
    import glob

    from recsys.forget import forget_user

    cfg = make_config(tmp_path / "lh", "privacy.vacuum_after_forget=true")
    key = resolve_key(cfg)
    victim, other = pseudonymise("victim", key), pseudonymise("other", key)
    path = cfg.table_path("events")
    spark.sql(f"CREATE TABLE delta.`{path}` (event_id STRING, user_id STRING) USING delta "
              "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    rows = [(f"e{i}", victim if i % 3 == 0 else other) for i in range(30)]
    spark.createDataFrame(rows, "event_id string, user_id string").coalesce(1) \
        .write.format("delta").mode("append").save(path)
    report = forget_user(spark, cfg, "victim")
    assert report["deleted"] == {"events": 10}
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("operation", "operationMetrics").collect()
    delete = [h for h in history if h["operation"] == "DELETE"][0]
    assert int(delete["operationMetrics"]["numDeletionVectorsAdded"]) == 1  # the delete did use one
    on_disk = spark.read.parquet(*glob.glob(f"{path}/*.parquet"))  # every file left, bypassing the log
    assert on_disk.where(f"user_id = '{victim}'").count() == 0
    assert on_disk.where(f"user_id = '{other}'").count() == 20


def test_forget_user_restores_the_retention_check(spark, tmp_path):
    """The VACUUM RETAIN 0 HOURS of forget-user must not leave Delta's safety check off for
    every later VACUUM of the shared session."""
    from recsys.forget import RETENTION_CHECK, forget_user

    cfg = make_config(tmp_path / "lh", "privacy.vacuum_after_forget=true")
    spark.createDataFrame([("e1", "x")], "event_id string, user_id string").write.format("delta") \
        .save(cfg.table_path("events"))
    assert spark.conf.get(RETENTION_CHECK, None) is None
    forget_user(spark, cfg, "victim")
    assert spark.conf.get(RETENTION_CHECK, None) is None
    with pytest.raises(Exception, match="retention"):  # the check is on again
        spark.sql(f"VACUUM delta.`{cfg.table_path('events')}` RETAIN 0 HOURS")


def test_a_forgotten_user_stays_forgotten_after_a_full_refresh(spark, tmp_path):
    """The landing files still hold the user's events: a later full re-ingest drops and
    counts them (never stores them, not even in quarantine), and the run still reconciles."""
    from recsys.config import replace
    from recsys.forget import forget_user

    cfg = make_config(tmp_path / "lh")
    t = "2026-10-01T10:00:00Z"
    write_landing(cfg, ["alice", "bob"], [("e1", "alice", t), ("e2", "bob", t), ("e3", "alice", "bad")])
    ingest(spark, cfg)
    alice = pseudonymise("alice", resolve_key(cfg))
    assert read_table(spark, cfg, "events").where(f"user_id = '{alice}'").count() == 1
    forget_user(spark, cfg, "alice")
    report = ingest(spark, replace(cfg, "ingest.full_refresh=true"), full=True)
    for name in ("events", "users", "quarantine"):
        col = "user_key" if name == "quarantine" else "user_id"
        assert read_table(spark, cfg, name).where(f"{col} = '{alice}'").count() == 0, name
    assert read_table(spark, cfg, "events").count() == 1  # bob's
    assert report["events"]["forgotten"] == 2 and report["users"]["forgotten"] == 1
    assert report["events"]["reconciles"] and report["users"]["reconciles"]
