"""Table names, schemas and Delta read/write helpers.

Catalog tables (``lakehouse.catalog`` and ``lakehouse.schema`` set, e.g. Unity Catalog's
``main.recsys``): every table stays where it is, at its location under the lakehouse root,
and is *also registered* in the catalog as an external table ``catalog.schema.<name>``
(``CREATE TABLE … USING DELTA LOCATION``) by :func:`register_table`, right after
:func:`write_table` writes it and after every stage for the tables the stage writes
(:func:`recsys.stages.run_stage`); :func:`read_table` then reads it by that name. Writes
(``write_table``, ``upsert``'s MERGE, ingest's appends, ``DeltaTable.forPath``) and the change
data feed keep going through the location: one code path for both modes, the ~50 places that
reach a table through ``cfg.table_path`` unchanged, and path mode (no catalog, the default)
exactly as before. Unity Catalog supports external Delta tables on an external location, and
path access to them; managed tables (``saveAsTable`` without a location) would have needed
every writer and reader to switch to names, and a catalog in every test.
"""

from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import storage
from recsys.config import Config
from recsys.errors import MissingTableError
from recsys.events import EVENT_TYPES

# Raw files are read against these schemas, never inferred per file.
RAW_EVENT_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("ts", T.StringType()),  # ISO-8601 or epoch milliseconds
        T.StructField("user_id", T.StringType()),
        T.StructField("session_id", T.StringType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("query", T.StringType()),
        T.StructField("price", T.StringType()),
        T.StructField("quantity", T.StringType()),
    ]
)

RAW_CATALOG_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType()),
        T.StructField("title", T.StringType()),
        T.StructField("description", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("brand", T.StringType()),
        T.StructField("price", T.StringType()),
        T.StructField("in_stock", T.StringType()),
    ]
)

RAW_USER_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("age", T.StringType()),
        T.StructField("gender", T.StringType()),
        T.StructField("location", T.StringType()),
    ]
)

# --- bronze tables: DDL, constraints and properties (created by ingest) ---------------------

# The most units one event may carry (also a validation rule of ingest).
MAX_QUANTITY = 1000

EVENTS_DDL = (
    "event_id STRING NOT NULL, ts TIMESTAMP NOT NULL, event_date DATE NOT NULL, user_id STRING NOT NULL, "
    "session_id STRING, event_type STRING NOT NULL, item_id STRING, query STRING, price DOUBLE, quantity INT, "
    "source_file STRING, ingested_at TIMESTAMP"
)
CATALOG_DDL = (
    "item_id STRING NOT NULL, title STRING, description STRING, category STRING, brand STRING, price DOUBLE, "
    "in_stock BOOLEAN, ingested_at TIMESTAMP"
)
USERS_DDL = "user_id STRING NOT NULL, age INT, gender STRING, location STRING, ingested_at TIMESTAMP"
QUARANTINE_DDL = (
    "source STRING NOT NULL, source_file STRING, rule STRING NOT NULL, raw STRING, user_key STRING, "
    "row_key STRING NOT NULL, run_id STRING, ingested_at TIMESTAMP"
)
MANIFEST_DDL = "path STRING, size BIGINT, mtime_ns BIGINT, source STRING, run_id STRING, ingested_at TIMESTAMP"

# Absolute rules become table constraints: no writer, not even a buggy one, can break them.
EVENT_CONSTRAINTS = {
    "valid_event_type": "event_type IN ({})".format(", ".join(f"'{t}'" for t in EVENT_TYPES)),
    "non_negative_price": "price IS NULL OR price >= 0",
    "sane_quantity": f"quantity IS NULL OR (quantity >= 1 AND quantity <= {MAX_QUANTITY})",
    "item_event_has_item": "event_type = 'search' OR item_id IS NOT NULL",
}
CATALOG_CONSTRAINTS = {"non_negative_price": "price IS NULL OR price >= 0"}


# Optimized writes (Delta's own shuffle before a write, binned by partition): an append
# writes one file per event date instead of one per date and task. The full ingest of 5M
# events left 396 files in 101 date folders without it; every later scan of the table (the
# duplicate check of each incremental ingest, the profiles' daily counts) opens them all.
EVENTS_PROPERTIES = {"delta.autoOptimize.optimizeWrite": "true"}


def read_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    """Read the Delta table ``name`` (a TablesConfig field): by its catalog name when
    ``lakehouse.catalog`` is set (registering it first if it is not yet), else by location.

    Raises:
        MissingTableError: the table has not been written yet, naming the job that writes it.
    """
    path = require_table(cfg, name, spark)
    if cfg.table_name(name):
        register_table(spark, cfg, name)
        return spark.read.table(cfg.table_name(name))
    return spark.read.format("delta").load(path)


def register_table(spark: SparkSession, cfg: Config, name: str) -> bool:
    """Register the Delta table ``name`` in ``lakehouse.catalog``.``lakehouse.schema`` as an
    external table at its location (creating the schema if needed); True when it is (now)
    registered, False in path mode or when the table has not been written yet."""
    qualified = cfg.table_name(name)
    path = cfg.table_path(name)
    if not qualified or not storage.is_delta_table(path, spark):
        return False
    if not spark.catalog.tableExists(qualified):
        lh = cfg.lakehouse
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS `{lh.catalog}`.`{lh.schema}`")
        location = path.replace("\\", "\\\\").replace("'", "\\'")
        spark.sql(f"CREATE TABLE IF NOT EXISTS {qualified} USING DELTA LOCATION '{location}'")
    return True


def require_table(cfg: Config, name: str, spark: SparkSession | None = None) -> str:
    """The location of the Delta table ``name``, after checking it exists (without reading it).

    Raises:
        MissingTableError: the table has not been written yet, naming the job that writes it.
    """
    path = cfg.table_path(name)
    if not storage.is_delta_table(path, spark):
        raise MissingTableError(
            f"Delta table '{name}' not found at {path}: run the job that writes it first "
            f"({written_by(name)})"
        )
    return path


def table_version(spark: SparkSession, path: str) -> int:
    """The latest version of the Delta table at ``path``."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).first()["version"])


def read_pinned(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The Delta table at ``path`` as of ``version`` (default: its current one), pinned: the
    rows it gives do not change when the table is written to before Spark (re)computes them."""
    v = table_version(spark, path) if version is None else version
    return spark.read.format("delta").option("versionAsOf", v).load(path)


def write_table(df: DataFrame, cfg: Config, name: str, *, partition_by: list[str] | None = None,
                replace_where: str | None = None, properties: dict[str, str] | None = None,
                merge_schema: bool = False) -> None:
    """Overwrite the Delta table ``name`` (or only the rows matching ``replace_where``;
    ``merge_schema``: new columns of ``df`` are added to the table, older rows read null).

    ``properties`` are table properties (``delta.…``): set when the write creates the table,
    and added with ``ALTER TABLE`` to an existing table that lacks them."""
    from delta.tables import DeltaTable

    path = cfg.table_path(name)
    existed = bool(properties) and DeltaTable.isDeltaTable(df.sparkSession, path)
    writer = df.write.format("delta").mode("overwrite")
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
        if merge_schema:
            writer = writer.option("mergeSchema", "true")
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    writer.save(path)
    if existed:
        have = DeltaTable.forPath(df.sparkSession, path).detail().first()["properties"]
        missing = {k: v for k, v in properties.items() if have.get(k) != v}
        if missing:
            props = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
            df.sparkSession.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({props})")
    register_table(df.sparkSession, cfg, name)


_DELETE = "_upsert_delete"  # upsert's marker column: this source row deletes its keys' target row


def upsert(spark: SparkSession, path: str, source: DataFrame, keys: Sequence[str], *,
           delete_when: Column | None = None, delete_missing: DataFrame | None = None) -> None:
    """MERGE ``source`` into the existing Delta table at ``path`` by ``keys``.

    A source row whose keys match a target row replaces it (every column); one with new keys
    is inserted. Target rows that no source row matches are kept, except:

    * ``delete_when``: a boolean expression over ``source``'s columns. A source row for which
      it is true is a tombstone: it deletes the target row with its keys and is never
      inserted (where it is null, a matched row is updated and nothing is inserted).
    * ``delete_missing``: rows holding (at least) the ``keys`` columns. A target row whose keys
      are among them but not in ``source`` is deleted: "these keys' rows are now ``source``'s".

    ``source`` must have the target's columns and at most one row per key (Delta raises
    otherwise). Keys compare with ``=``, so a null key never matches and is inserted.

    Example (ingest's users): ``upsert(spark, cfg.table_path("users"), new, ["user_id"])``.

    Raises:
        ValueError: no keys, or a key missing from ``source`` or ``delete_missing``, or
            ``source`` has a column named like the helper's marker column.
    """
    from delta.tables import DeltaTable

    keys = list(keys)
    if not keys:
        raise ValueError("upsert needs at least one key column")
    for name, df in (("source", source), ("delete_missing", delete_missing)):
        missing = [k for k in keys if df is not None and k not in df.columns]
        if missing:
            raise ValueError(f"upsert: key column(s) {missing} not in {name} (columns: {df.columns})")
    if _DELETE in source.columns:
        raise ValueError(f"upsert: source must not have a column named {_DELETE}")

    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    target = DeltaTable.forPath(spark, path).alias("t")
    if delete_when is None and delete_missing is None:
        target.merge(source.alias("s"), cond).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        return
    # One source row per key, marked: delete the target row, or update / insert it.
    marked = source.withColumn(_DELETE, F.lit(False) if delete_when is None else delete_when)
    if delete_missing is not None:
        gone = delete_missing.select(*keys).join(source.select(*keys), keys, "left_anti")
        marked = marked.unionByName(gone.withColumn(_DELETE, F.lit(True)), allowMissingColumns=True)
    values = {c: f"s.`{c}`" for c in source.columns}
    target.merge(marked.alias("s"), cond).whenMatchedDelete(f"s.{_DELETE}").whenMatchedUpdate(set=values) \
        .whenNotMatchedInsert(f"NOT s.{_DELETE}", values=values).execute()


def table_exists(cfg: Config, name: str, spark: SparkSession | None = None) -> bool:
    """True when the Delta table ``name`` has been written (checked on its storage, any URI)."""
    return storage.is_delta_table(cfg.table_path(name), spark)


def written_by(name: str) -> str:
    """The command that writes the table ``name``, from the stage registry."""
    from recsys.stages import STAGES

    return next((f"recsys {s.name}" for s in STAGES if name in s.writes and s.pipeline), "recsys demo")
