"""Landing files: which are new, which are unreadable, and how each format becomes raw rows.

Every format ends up as the same shape: ``raw`` (the row as text, kept verbatim for
quarantine), ``source_file``, ``_format``, ``_parsed`` (false when the row is not a JSON
object / has the wrong CSV field count) and ``p`` (a struct of string fields named after
the contract). Rules then apply uniformly.

* JSON Lines (``.jsonl``, ``.json``, ``.ndjson``): one object per line.
* CSV (``.csv``): a header line naming contract columns (any order); a row whose field count
  differs from the header's is ``wrong_column_count``.
* Parquet (``.parquet``): typed columns, cast to text; ``raw`` is the row as JSON.
* Any of the text formats may be gzip-compressed (``.gz``).

A file that is empty or a gzip stream that ends early is recorded as one quarantine row
(``empty_file`` / ``truncated_gzip``, with whatever text could be decompressed) instead of
failing the run.

Files are listed and read through Spark and Hadoop's FileSystem (:mod:`recsys.storage`), so
the landing folder may be on any storage Spark reaches.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import storage

TEXT_FORMATS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv"}
FORMATS = {**TEXT_FORMATS, ".parquet": "parquet"}
# A comma outside double quotes: splits a CSV line into its fields.
CSV_SPLIT = r',(?=(?:[^"]*"[^"]*")*[^"]*$)'


@dataclass(frozen=True)
class LandingFile:
    path: str  # the file's URI as Hadoop names it (file:/…, s3a://…)
    size: int
    mtime_ns: int  # Hadoop's modification time (milliseconds) in nanoseconds
    fmt: str  # json | csv | parquet
    gzip: bool

    @property
    def uri(self) -> str:
        return self.path


def file_format(name: str) -> tuple[str, bool] | None:
    """``(format, gzipped)`` from the file name, or None for files that are not data."""
    name = name.rsplit("/", 1)[-1].lower()
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    ext = os.path.splitext(stem)[1]
    fmt = FORMATS.get(ext)
    if fmt is None or (gz and fmt == "parquet"):
        return None
    return fmt, gz


def list_files(spark: SparkSession, folder: str) -> list[LandingFile]:
    """Data files under ``folder`` (any URI, recursively), hidden and temporary files skipped, sorted."""
    out = []
    for f in storage.list_files(folder, spark):
        ff = file_format(f.name)
        if ff is not None:
            out.append(LandingFile(f.uri, f.size, f.mtime_ms * 1_000_000, ff[0], ff[1]))
    return out


def precheck(spark: SparkSession, f: LandingFile) -> tuple[str, str] | None:
    """``(rule, readable text)`` when the file cannot be read as a whole, else None.

    Only gzip files are read here (a truncated stream is found by decompressing it whole);
    emptiness of a plain text file is known from its listed size, or after the line count."""
    if f.size == 0:
        return "empty_file", ""
    if f.gzip:
        data = storage.read_bytes(f.path, spark)
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            text = d.decompress(data)
        except zlib.error:
            return "truncated_gzip", ""
        if not d.eof:
            return "truncated_gzip", text.decode("utf-8", errors="replace")
        if not text.strip():
            return "empty_file", ""
    return None


def line_counts(spark: SparkSession, files: list[LandingFile]) -> dict[str, dict[str, int]]:
    """Per text file (by its ``uri``), counted straight from storage and apart from the rows
    that are then classified (so the reconciliation of a run can fail): ``lines`` and
    ``blank`` lines. A file Spark read no line of counts zero of each."""
    text = [f.uri for f in files if f.fmt != "parquet"]
    if not text:
        return {}
    rows = (
        spark.read.text(text)
        .select(F.col("_metadata.file_path").alias("f"), F.col("value"))
        .groupBy("f")
        .agg(F.count("*").alias("lines"), F.sum((F.trim("value") == "").cast("int")).alias("blank"))
        .collect()
    )
    by_key = {_key(r["f"]): {"lines": int(r["lines"]), "blank": int(r["blank"] or 0)} for r in rows}
    return {f.uri: by_key.get(_key(f.uri), {"lines": 0, "blank": 0}) for f in files if f.fmt != "parquet"}


def record_counts(spark: SparkSession, files: list[LandingFile]) -> dict[str, int]:
    """Records per Parquet file (by its ``uri``), from the files' own metadata."""
    return {f.uri: spark.read.parquet(f.uri).count() for f in files if f.fmt == "parquet"}


def _key(uri: str) -> str:
    """One spelling of a file URI (Spark writes ``file:///x``, Hadoop lists ``file:/x``)."""
    from urllib.parse import unquote

    uri = unquote(uri)
    return "file:" + uri[len("file://"):] if uri.startswith("file:///") else uri


def _csv_header(spark: SparkSession, f: LandingFile) -> str:
    first = spark.read.text(f.uri).first()
    return first["value"].rstrip("\r\n") if first is not None else ""


def read_text_rows(spark: SparkSession, files: list[LandingFile], schema: T.StructType) -> DataFrame | None:
    """JSON Lines and CSV files → (raw, source_file, _format, _parsed, p)."""
    frames: list[DataFrame] = []
    json_files = [f.uri for f in files if f.fmt == "json"]
    if json_files:
        df = (
            spark.read.text(json_files)
            .select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source_file"))
            .where(F.trim("raw") != "")
        )
        parsed = F.expr("try_parse_json(raw)").isNotNull() & F.ltrim("raw").startswith("{")
        frames.append(df.select("raw", "source_file", F.lit("json").alias("_format"), parsed.alias("_parsed"),
                                F.from_json("raw", schema).alias("p")))
    # CSV: one read per distinct header, so columns may come in any order.
    by_header: dict[str, list[LandingFile]] = {}
    for f in files:
        if f.fmt == "csv":
            by_header.setdefault(_csv_header(spark, f), []).append(f)
    names = [fld.name for fld in schema.fields]
    for header, group in by_header.items():
        cols = [c.strip().strip('"') for c in header.split(",")]
        csv_schema = ", ".join(f"`{c}` string" for c in cols)
        df = (
            spark.read.text([f.uri for f in group])
            .select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source_file"))
            .where((F.trim("raw") != "") & (F.col("raw") != header))
        )
        parsed = F.from_csv("raw", csv_schema)
        p = F.struct(*[(parsed[c] if c in cols else F.lit(None).cast("string")).alias(c) for c in names])
        ok = F.size(F.split("raw", CSV_SPLIT)) == len(cols)
        frames.append(df.select("raw", "source_file", F.lit("csv").alias("_format"), ok.alias("_parsed"), p.alias("p")))
    return _union(frames)


def read_parquet_rows(spark: SparkSession, files: list[LandingFile], schema: T.StructType) -> DataFrame | None:
    frames = []
    for f in files:  # one read per file: schemas may differ between deliveries
        df = spark.read.parquet(f.uri)
        have = set(df.columns)
        floats = {f.name for f in df.schema.fields if isinstance(f.dataType, (T.FloatType, T.DoubleType))}

        def text(name: str) -> Column:
            if name not in have:
                return F.lit(None).cast("string")
            c = F.col(name)
            return F.when(F.isnan(c), F.lit(None)).otherwise(c.cast("string")) if name in floats else c.cast("string")

        p = F.struct(*[text(fld.name).alias(fld.name) for fld in schema.fields])
        frames.append(df.select(
            F.to_json(F.struct(*[F.col(c) for c in df.columns])).alias("raw"),
            F.col("_metadata.file_path").alias("source_file"),
            F.lit("parquet").alias("_format"),
            F.lit(True).alias("_parsed"),
            p.alias("p"),
        ))
    return _union(frames)


def read_rows(spark: SparkSession, files: list[LandingFile], schema: T.StructType) -> DataFrame | None:
    """All rows of ``files`` (readable ones only) in the common raw shape, or None if no rows."""
    return _union([x for x in (read_text_rows(spark, [f for f in files if f.fmt != "parquet"], schema),
                               read_parquet_rows(spark, [f for f in files if f.fmt == "parquet"], schema))
                   if x is not None])


def _union(frames: list[DataFrame]) -> DataFrame | None:
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out
