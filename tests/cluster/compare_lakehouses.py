"""spark-submit job of `make cluster-test`: compare Delta tables of two lakehouses row for row.

    compare_lakehouses.py OUT.json [--location-dependent] NAME=LAKEHOUSE_A,LAKEHOUSE_B,table[:table...] [...]

Each table is read from both lakehouses (by its default location under the root); columns that
record when or in which run a row was written (VOLATILE) are dropped; maps become sorted entry
arrays. The rows must be the same multiset: the same count and the same two order-independent sums of
row hashes (:func:`fingerprint`; on a mismatch ``exceptAll`` both ways counts the rows that
differ). When they are not, the comparison is repeated with floating-point values rounded to 5 decimals
(``equal`` then says "within 1e-5"), so that float noise is told apart from different rows.
``--location-dependent``: the two runs read their raw files from different places (a local
folder and a bucket), so the columns derived from a file's location (LOCATION) are dropped too.
"""

import json
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

TABLE_DIRS = {
    "events": "bronze/events", "catalog": "bronze/catalog", "users": "bronze/users", "quarantine": "bronze/quarantine",
    "user_profiles": "gold/user_profiles", "item_profiles": "gold/item_profiles",
    "item_daily_counts": "gold/item_daily_counts", "training_examples": "gold/training_examples",
    "item_text_embeddings": "gold/item_text_embeddings", "recommendations": "gold/recommendations",
    "searches": "gold/searches", "query_stats": "gold/query_stats", "query_suggestions": "gold/query_suggestions",
    "search_results": "gold/search_results", "audiences": "gold/audiences",
}
# When and in which run a row was written: differs between any two runs.
VOLATILE = {"run_id", "ingest_run_id", "ingested_at", "updated_at", "created_at", "processed_at", "scored_at",
            "built_at", "source_file", "_metadata"}


# Derived from the landing file's URI: quarantine's source_file (already VOLATILE) and its
# row_key (a hash of the file, the text and the occurrence).
LOCATION = {"row_key"}


def normalise(df: DataFrame, digits: int | None) -> DataFrame:
    cols = []
    for f in df.schema.fields:
        if f.name in VOLATILE:
            continue
        c = F.col(f"`{f.name}`")
        t = f.dataType
        if isinstance(t, T.MapType):
            c = F.array_sort(F.map_entries(c))
        elif digits is not None and isinstance(t, (T.FloatType, T.DoubleType)):
            c = F.round(c, digits)
        elif digits is not None and isinstance(t, T.ArrayType) and isinstance(t.elementType, (T.FloatType, T.DoubleType)):
            c = F.transform(c, lambda x: F.round(x, digits))
        cols.append(c.alias(f.name))
    return df.select(*cols)


def fingerprint(df: DataFrame) -> tuple:
    """The row count and two order-independent sums of row hashes: equal for the same multiset
    of rows (a difference is then looked for with exceptAll, which costs shuffles)."""
    cols = [F.col(f"`{c}`") for c in df.columns]
    row = df.agg(F.count(F.lit(1)), F.sum(F.xxhash64(*cols).cast("decimal(38,0)")),
                 F.sum(F.xxhash64(F.lit("salt"), *cols).cast("decimal(38,0)"))).first()
    return tuple(row)


def compare(spark: SparkSession, a: str, b: str, table: str) -> dict:
    da = spark.read.format("delta").load(f"{a}/{TABLE_DIRS[table]}")
    db = spark.read.format("delta").load(f"{b}/{TABLE_DIRS[table]}")
    out = {"table": table, "rows": da.count(), "rows_b": db.count(),
           "dropped": sorted(set(da.columns) & VOLATILE)}
    if [f.name for f in da.schema.fields] != [f.name for f in db.schema.fields]:
        return {**out, "equal": False, "detail": f"columns differ: {da.columns} vs {db.columns}"}
    for digits, how in ((None, "exact"), (5, "within 1e-5")):
        na, nb = normalise(da, digits), normalise(db, digits)
        if fingerprint(na) == fingerprint(nb):
            return {**out, "equal": True, "detail": how}
        only_a, only_b = na.exceptAll(nb).count(), nb.exceptAll(na).count()
        if only_a == 0 and only_b == 0 and out["rows"] == out["rows_b"]:
            return {**out, "equal": True, "detail": how}
        if digits is None:
            exact = (only_a, only_b)
    return {**out, "equal": False,
            "detail": f"{exact[0]} rows only in the first, {exact[1]} only in the second "
                      f"({only_a}/{only_b} after rounding); rows {out['rows']} vs {out['rows_b']}"}


if __name__ == "__main__":
    spark = (SparkSession.builder.appName("recsys-cluster-compare")
             .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
             .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.databricks.delta.snapshotPartitions", "2")  # as recsys.spark: small tables
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    specs = sys.argv[2:]
    if specs and specs[0] == "--location-dependent":
        VOLATILE |= LOCATION
        specs = specs[1:]
    for spec in specs:
        name, rest = spec.split("=", 1)
        a, b, tables = rest.split(",")
        for t in tables.split(":"):
            r = compare(spark, a, b, t)
            results.append({"pair": name, **r})
            print(json.dumps(results[-1]), flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=2)
    spark.stop()
