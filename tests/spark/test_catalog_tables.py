"""Catalog tables: with lakehouse.catalog and lakehouse.schema set, every table a stage writes is
registered as catalog.schema.<name> (here in Spark's session catalog) and read by that name."""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from recsys.config import ConfigError, load_config
from recsys.stages import run_stage
from recsys.tables import read_table, register_table

from ..conftest import make_config

pytestmark = pytest.mark.spark

SCHEMA = "recsys_test"
SMALL = ["generator.users=60", "generator.items=30", "generator.days=5", "generator.malformed_rate=0.02",
         "features.max_seq_len=10", "features.text_embeddings=false"]


@pytest.fixture
def catalog_cfg(spark, tmp_path):
    # The schema's own folder in the test's temp dir (not ./spark-warehouse); the in-memory
    # session catalog forgets it when the session ends.
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS spark_catalog.{SCHEMA} LOCATION '{tmp_path / 'schema'}'")
    yield make_config(tmp_path / "lakehouse", "lakehouse.catalog=spark_catalog", f"lakehouse.schema={SCHEMA}",
                      *SMALL)
    spark.sql(f"DROP SCHEMA IF EXISTS spark_catalog.{SCHEMA} CASCADE")  # external tables: the files stay


def test_stages_register_their_tables_and_read_them_by_name(spark, catalog_cfg):
    cfg = catalog_cfg
    for stage in ("generate", "ingest", "build-profiles"):
        run_stage(stage, cfg, spark)

    names = {t.name for t in spark.catalog.listTables(f"spark_catalog.{SCHEMA}")}
    assert {"events", "catalog", "users", "quarantine", "user_profiles", "item_profiles", "item_daily_counts",
            "training_examples"} <= names
    assert "recommendations" not in names  # not written yet
    for name in ("events", "user_profiles", "training_examples"):
        assert spark.catalog.tableExists(f"spark_catalog.{SCHEMA}.{name}")
        detail = spark.sql(f"DESCRIBE DETAIL spark_catalog.{SCHEMA}.{name}").first()
        assert detail["location"].rstrip("/").endswith(cfg.table_path(name).split("/", 1)[1])  # at its location
        by_name = spark.table(f"spark_catalog.{SCHEMA}.{name}")
        assertDataFrameEqual(by_name, spark.read.format("delta").load(cfg.table_path(name)))
    assert spark.table(f"spark_catalog.{SCHEMA}.user_profiles").count() > 0

    # read_table goes through the catalog: under another name, it reads what that name points at.
    profiles = read_table(spark, cfg, "user_profiles")
    assert "spark_catalog.recsys_test.user_profiles" in profiles._jdf.queryExecution().analyzed().toString()
    spark.sql(f"DROP TABLE spark_catalog.{SCHEMA}.item_profiles")  # an external table: its files stay
    assert not spark.catalog.tableExists(f"spark_catalog.{SCHEMA}.item_profiles")
    assert read_table(spark, cfg, "item_profiles").count() > 0  # registered again, on demand
    assert spark.catalog.tableExists(f"spark_catalog.{SCHEMA}.item_profiles")

    # A second run (incremental, MERGEs by location) keeps the registered tables current.
    run_stage("build-profiles", cfg, spark)
    assertDataFrameEqual(spark.table(f"spark_catalog.{SCHEMA}.user_profiles"),
                         spark.read.format("delta").load(cfg.table_path("user_profiles")))


def test_path_mode_registers_nothing(spark, cfg):
    assert cfg.table_name("events") == "" and not register_table(spark, cfg, "events")


def test_catalog_and_schema_go_together_and_names_are_three_level():
    with pytest.raises(ConfigError, match="lakehouse.catalog and lakehouse.schema go together"):
        load_config(None, ["lakehouse.schema=recsys"])
    with pytest.raises(ConfigError, match="lakehouse.catalog and lakehouse.schema go together"):
        load_config(None, ["lakehouse.catalog=main"])
    with pytest.raises(ConfigError, match="'lakehouse.schema': 'a.b' is not a catalog identifier"):
        load_config(None, ["lakehouse.catalog=main", "lakehouse.schema=a.b"])
    cfg = load_config(None, ["lakehouse.catalog=main", "lakehouse.schema=recsys"])
    assert cfg.table_name("user_profiles") == "`main`.`recsys`.`user_profiles`"
    assert cfg.table_path("user_profiles").endswith("gold/user_profiles")  # still stored at its location


def test_the_model_name_may_be_a_unity_catalog_three_level_name():
    cfg = load_config(None, ["tracking.model_name=main.recsys.sasrec",
                             "search.ranker_model_name=main.recsys.search_ranker"])
    assert cfg.tracking.model_name == "main.recsys.sasrec"
    assert cfg.search.ranker_model_name == "main.recsys.search_ranker"
    # On Databricks a three-level name goes to Unity Catalog's registry; anything else stays put.
    from recsys.tracking import registry_uri

    assert registry_uri("databricks", "main.recsys.sasrec") == "databricks-uc"
    assert registry_uri("databricks://prod", "main.recsys.sasrec") == "databricks-uc://prod"
    assert registry_uri("databricks", "recsys-sasrec") == "databricks"
    assert registry_uri("sqlite:///x/mlflow.db", "main.recsys.sasrec") == "sqlite:///x/mlflow.db"
