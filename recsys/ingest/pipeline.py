"""Raw landing files → bronze Delta tables ``events``, ``catalog``, ``users``, ``quarantine``.

Incremental and exactly-once: a Delta manifest (``<root>/_ingest_log``) records every file
(path, size, modification time) a run has committed; the next run reads only files not in
it. Every bronze write is idempotent: events are appended only when their ``event_id`` is not
in the table at its pre-run version (checked by a join, so a re-read event is a duplicate, not
a second row), catalog and users are upserted by id, quarantine is insert-only by row
identity; the manifest is written last, so a run killed midway and rerun leaves ``events``,
``catalog`` and ``users`` exactly as one clean run would.

Each row is read as text (so nothing is lost), parsed against a fixed schema (never
inferred), checked against :mod:`recsys.ingest.rules`, and lands either in its bronze table
or in ``quarantine`` with the rule it broke, its source file and its raw text. A repeated id
(within a run, or an event already in bronze from an earlier run) is dropped from bronze and
kept in quarantine as ``duplicate_*``; the report counts those as duplicates, so
``read = accepted + quarantined + duplicates`` for every source.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import storage
from recsys.config import Config
from recsys.errors import MissingInputError
from recsys.ingest import files as landing_files
from recsys.ingest import rules
from recsys.privacy import pseudonymise_col, resolve_key
from recsys.tables import (CATALOG_CONSTRAINTS, CATALOG_DDL, EVENT_CONSTRAINTS, EVENTS_DDL, EVENTS_PROPERTIES,
                           MANIFEST_DDL, QUARANTINE_DDL, RAW_CATALOG_SCHEMA, RAW_EVENT_SCHEMA, RAW_USER_SCHEMA, USERS_DDL,
                           read_pinned, upsert)
from recsys.reports import StepTimer, write_report

SOURCES = ("catalog", "users", "events")
RAW_SCHEMAS = {"catalog": RAW_CATALOG_SCHEMA, "users": RAW_USER_SCHEMA, "events": RAW_EVENT_SCHEMA}
DUP_RULE = {"catalog": "duplicate_item_id", "users": "duplicate_user_id", "events": "duplicate_event_id"}
# Rows of a user who asked to be forgotten: dropped and counted, never stored (not even in quarantine).
FORGOTTEN = "forgotten_user"
KEY = {"catalog": "item_id", "users": "user_id", "events": "event_id"}
# Up to this many new event ids are broadcast to find which are already stored (a few tens of
# MB); above it the stored ids and the new ones are joined by a shuffle.
BROADCAST_IDS = 1_000_000

def check_landing(cfg: Config, spark: SparkSession | None = None) -> str:
    """The landing folder's URI, after checking it has ``events/`` and ``catalog/``. Without
    ``spark`` only a local landing folder is checked (so a mistake shows before Spark starts).

    Raises:
        MissingInputError: one of them is missing.
    """
    landing = cfg.lakehouse.landing_uri
    if spark is None and storage.local_path(landing) is None:
        return landing
    for sub in ("events", "catalog"):
        if not storage.exists(storage.join(landing, sub), spark):
            raise MissingInputError(
                f"input folder {storage.join(landing, sub)} does not exist: put raw files there or run "
                f"`recsys generate` first"
            )
    return landing


def user_id_expr(cfg: Config) -> Column:
    """The stored user id: HMAC-SHA256 pseudonym of the raw id (or the raw id if disabled)."""
    raw = F.trim(F.col("p.user_id"))
    if not cfg.privacy.pseudonymise:
        return raw
    return F.when(rules.blank(raw), F.lit(None).cast("string")).otherwise(pseudonymise_col(raw, resolve_key(cfg)))


# --- tables ------------------------------------------------------------------------------------

def _ensure_table(spark: SparkSession, path: str, ddl: str, *, partition_by: str | None = None,
                  cdf: bool = False, constraints: dict[str, str] | None = None,
                  properties: dict[str, str] | None = None) -> None:
    """Create the Delta table at ``path`` if absent, with its properties and constraints.

    CHECK constraints go into the creating commit as ``delta.constraints.<name>`` table
    properties (where ``ALTER TABLE … ADD CONSTRAINT`` stores them too; Delta enforces both
    alike), so a new table costs one commit instead of one per constraint."""
    if storage.is_delta_table(path, spark):
        return
    props = {"delta.enableChangeDataFeed": "true"} if cdf else {}
    props.update(properties or {})
    props.update({f"delta.constraints.{name}": expr for name, expr in (constraints or {}).items()})
    quoted = ", ".join(f"'{k}' = '{v.replace(chr(39), chr(92) + chr(39))}'" for k, v in props.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS delta.`{path}` ({ddl}) USING DELTA"
        + (f" PARTITIONED BY ({partition_by})" if partition_by else "")
        + (f" TBLPROPERTIES ({quoted})" if quoted else "")
    )


def ensure_bronze(spark: SparkSession, cfg: Config) -> None:
    """Create the bronze tables and the manifest where absent (in parallel: each is one commit
    that mostly waits on the driver, and five of them in a row took ~10 s on a fresh lakehouse)."""
    from concurrent.futures import ThreadPoolExecutor

    tables = [
        (cfg.table_path("events"), EVENTS_DDL, {"partition_by": "event_date", "cdf": True,
                                                "constraints": EVENT_CONSTRAINTS,
                                                "properties": EVENTS_PROPERTIES}),
        (cfg.table_path("catalog"), CATALOG_DDL, {"cdf": True, "constraints": CATALOG_CONSTRAINTS}),
        (cfg.table_path("users"), USERS_DDL, {"cdf": True}),
        (cfg.table_path("quarantine"), QUARANTINE_DDL, {}),
        (manifest_path(cfg), MANIFEST_DDL, {}),
    ]
    with ThreadPoolExecutor(len(tables)) as pool:
        for done in [pool.submit(_ensure_table, spark, path, ddl, **kw) for path, ddl, kw in tables]:
            done.result()


def manifest_path(cfg: Config) -> str:
    return storage.join(cfg.lakehouse.root_uri, "_ingest_log")


def reset_bronze(spark: SparkSession, cfg: Config) -> None:
    """Forget everything ingested (tables and manifest), for a full rebuild; on any storage."""
    for location in [cfg.table_path(n) for n in ("events", "catalog", "users", "quarantine")] + [manifest_path(cfg)]:
        storage.delete(location, spark)
        if storage.exists(location, spark):  # never go on appending to what should be gone
            raise RuntimeError(f"could not delete {location} for a full refresh")


# --- classification ----------------------------------------------------------------------------

def _classify(df: DataFrame, rule_list: list, source: str, order_by: list[Column]) -> DataFrame:
    """Add ``rule``: the first broken rule, or the duplicate rule for a repeated key in this batch."""
    df = df.withColumn("rule", rules.first_broken(rule_list))
    w = Window.partitionBy(F.trim(F.col(f"p.{KEY[source]}"))).orderBy(*order_by)
    return df.withColumn(
        "rule",
        F.when(F.col("rule").isNotNull(), F.col("rule")).when(F.row_number().over(w) > 1, F.lit(DUP_RULE[source])),
    )


def _counts(df: DataFrame, source: str) -> dict[str, Any]:
    """What became of the classified rows. The rows *read* are counted apart, from storage
    (:func:`recsys.ingest.files.line_counts`), so that ``read = accepted + quarantined +
    duplicates + forgotten`` is a check that can fail."""
    rows = df.groupBy("rule").count().collect()
    by_rule = {r["rule"]: r["count"] for r in rows if r["rule"] is not None}
    accepted = sum(r["count"] for r in rows if r["rule"] is None)
    duplicates = by_rule.pop(DUP_RULE[source], 0)
    forgotten = by_rule.pop(FORGOTTEN, 0)
    return {
        "accepted": accepted,
        "quarantined": sum(by_rule.values()),
        "duplicates": duplicates,
        "forgotten": forgotten,
        "quarantined_by_rule": dict(sorted(by_rule.items())),
    }


def _quarantine_rows(df: DataFrame, source: str, now: Column, user_key: Column, run_id: str) -> DataFrame:
    """Rejected rows. ``row_key`` identifies a row across reruns (file, text, occurrence), so
    re-processing a file after a crash cannot quarantine a row twice; ``user_key`` (the
    pseudonymous user id, when the row has one) lets ``forget-user`` find it."""
    occurrence = F.row_number().over(Window.partitionBy("source_file", "raw", "rule").orderBy(F.lit(1)))
    return df.where(F.col("rule").isNotNull() & (F.col("rule") != FORGOTTEN)).select(
        F.lit(source).alias("source"),
        "source_file",
        "rule",
        "raw",
        user_key.alias("user_key"),
        F.sha2(F.concat_ws("\u0001", F.lit(source), "source_file", "rule", "raw", occurrence.cast("string")), 256).alias("row_key"),
        F.lit(run_id).alias("run_id"),
        now.alias("ingested_at"),
    )


def _file_rows(spark: SparkSession, source: str, bad: list[tuple[landing_files.LandingFile, str, str]],
               now: Column, run_id: str) -> DataFrame:
    """One quarantine row per unreadable file (empty, truncated gzip)."""
    data = [(source, f.uri, rule, text, None, f"file:{f.uri}:{f.size}:{f.mtime_ns}", run_id) for f, rule, text in bad]
    df = spark.createDataFrame(data, "source string, source_file string, rule string, raw string, user_key string, "
                                     "row_key string, run_id string")
    return df.withColumn("ingested_at", now)


# --- the run -----------------------------------------------------------------------------------

def ingested_files(spark: SparkSession, cfg: Config) -> set[tuple[str, str, int, int]]:
    """(source, path, size, mtime_ns) of every file a committed run has ingested."""
    return {
        (r["source"], r["path"], r["size"], r["mtime_ns"])
        for r in spark.read.format("delta").load(manifest_path(cfg)).select("source", "path", "size", "mtime_ns").collect()
    }


def new_files(spark: SparkSession, cfg: Config, source: str,
              done: set[tuple[str, str, int, int]] | None = None) -> list[landing_files.LandingFile]:
    """Files of ``source`` in the landing folder that no committed run has ingested
    (``done``: :func:`ingested_files`, read here when not given)."""
    found = landing_files.list_files(spark, storage.join(cfg.lakehouse.landing_uri, source))
    if done is None:
        done = ingested_files(spark, cfg)
    return [f for f in found if (source, f.path, f.size, f.mtime_ns) not in done]


def ingest(spark: SparkSession, cfg: Config, *, full: bool | None = None) -> dict[str, Any]:
    """Ingest the landing files not ingested before (all of them with ``full=True``; default:
    ``ingest.full_refresh``).

    Returns the run report (also written to ``<root>/_reports/ingest-<timestamp>.json``).

    Raises:
        MissingInputError: the landing folder or its ``events``/``catalog`` sub-folder is missing.
    """
    landing = check_landing(cfg, spark)
    full = cfg.ingest.full_refresh if full is None else full
    timer = StepTimer()
    if full:
        reset_bronze(spark, cfg)
    ensure_bronze(spark, cfg)
    run_id = uuid.uuid4().hex
    started = dt.datetime.now(dt.timezone.utc)
    now = F.lit(started.replace(microsecond=0, tzinfo=None)).cast("timestamp")
    user_id = user_id_expr(cfg)
    report: dict[str, Any] = {"run_id": run_id, "landing": str(landing), "mode": "full" if full else "incremental",
                              "started_at": started.isoformat()}
    manifest_rows: list[tuple] = []

    done = ingested_files(spark, cfg)
    timer.done("prepare")
    for source in SOURCES:
        files = new_files(spark, cfg, source, done)
        bad = [(f, *problem) for f in files if (problem := landing_files.precheck(spark, f)) is not None]
        good = [f for f in files if f not in {b[0] for b in bad}]
        # Rows read, counted from storage apart from the classification (see _counts).
        lines = landing_files.line_counts(spark, good)
        records = landing_files.record_counts(spark, good)
        blank_files = [f for f in good if f.fmt != "parquet" and lines[f.uri]["lines"] == lines[f.uri]["blank"]]
        bad += [(f, "empty_file", "") for f in blank_files]
        good = [f for f in good if f not in blank_files]
        text = [lines[f.uri] for f in good if f.fmt != "parquet"]
        headers = sum(1 for f in good if f.fmt == "csv")
        counts: dict[str, Any] = {
            "files": len(files),
            "lines": sum(t["lines"] for t in text) + sum(records.values()),
            "blank_lines": sum(t["blank"] for t in text),
            "header_lines": headers,
            "read": sum(t["lines"] - t["blank"] for t in text) - headers + sum(records.values()),
            "accepted": 0, "quarantined": 0, "duplicates": 0, "forgotten": 0, "quarantined_by_rule": {},
        }
        if bad:
            q = _file_rows(spark, source, bad, now, run_id)
            _insert_quarantine(cfg, q)
            counts["files_quarantined"] = {}
            for _, rule, _ in bad:
                counts["files_quarantined"][rule] = counts["files_quarantined"].get(rule, 0) + 1
        rows = landing_files.read_rows(spark, good, RAW_SCHEMAS[source]) if good else None
        timer.done(f"{source}.files")
        if rows is not None:
            counts = _merge_counts(counts, _ingest_rows(spark, cfg, source, rows, now, user_id, run_id, fresh=full,
                                                        timer=timer))
        counts["reconciles"] = counts["read"] == (counts["accepted"] + counts["quarantined"] + counts["duplicates"]
                                                  + counts["forgotten"])
        report[source] = counts
        manifest_rows += [(f.path, f.size, f.mtime_ns, source, run_id) for f in files]
        timer.done(source)

    # The manifest goes last: until it is written, a rerun re-reads these files, and the
    # idempotent writes above make that harmless.
    if manifest_rows:
        spark.createDataFrame(manifest_rows, "path string, size long, mtime_ns long, source string, run_id string") \
            .withColumn("ingested_at", now).write.format("delta").mode("append").save(manifest_path(cfg))
    timer.done("manifest")
    report["files_read"] = len(manifest_rows)
    report["step_seconds"] = timer.seconds
    report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    report["report_path"] = write_report(cfg, "ingest", report)
    print(json.dumps({s: {k: report[s][k] for k in ("files", "read", "accepted", "quarantined", "duplicates")}
                      for s in SOURCES}, default=str))
    return report


def _merge_counts(base: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k in ("accepted", "quarantined", "duplicates", "forgotten"):
        out[k] = base.get(k, 0) + got[k]
    out["quarantined_by_rule"] = got["quarantined_by_rule"]
    return out


def forgotten_users(spark: SparkSession, cfg: Config) -> DataFrame | None:
    """Pseudonyms of the users ``forget-user`` erased (None when nobody was): their rows in
    landing files are never stored again, not even by a full refresh."""
    path = cfg.table_path("forget_audit")
    if not storage.is_delta_table(path, spark):
        return None
    return spark.read.format("delta").load(path).select(F.col("user_key").alias("_forgotten")).distinct()


def _insert_quarantine(cfg: Config, rows: DataFrame) -> None:
    """Append the ``rows`` whose ``row_key`` is not in ``quarantine`` yet (a rerun after a crash
    meets its own rows again): the rows an insert-only MERGE on ``row_key`` would insert, with
    one anti-join instead of a MERGE's two passes (7.9 s against 2.2 s to 3.4 s at 1M events)."""
    path = cfg.table_path("quarantine")
    known = read_pinned(rows.sparkSession, path).select("row_key")
    rows.join(known, "row_key", "left_anti").write.format("delta").mode("append").save(path)


def _ingest_rows(spark: SparkSession, cfg: Config, source: str, rows: DataFrame, now: Column, user_id: Column,
                 run_id: str, *, fresh: bool = False, timer: StepTimer | None = None) -> dict[str, Any]:
    """Classify ``rows`` of ``source`` and write them. ``fresh``: the tables were just reset
    (a full refresh), so plain appends replace the MERGEs and the cross-run duplicate check.
    ``timer`` gets the seconds of each part as ``<source>.<part>``."""
    timer = timer or StepTimer()

    max_id = cfg.ingest.max_id_length
    forgotten = forgotten_users(spark, cfg) if source in ("users", "events") else None
    if forgotten is not None:
        rows = rows.join(F.broadcast(forgotten), user_id == F.col("_forgotten"), "left")
    # First of all rules: a forgotten user's row is dropped whatever else is wrong with it.
    forget_rule = [(FORGOTTEN, F.col("_forgotten").isNotNull())] if forgotten is not None else []
    if source == "catalog":
        rule_list = rules.catalog_rules(max_id)
        order = [F.col("source_file"), F.col("raw")]
    elif source == "users":
        rule_list = forget_rule + rules.user_rules(max_id)
        order = [F.col("source_file"), F.col("raw")]
    else:
        known = spark.read.format("delta").load(cfg.table_path("catalog")).select(F.col("item_id").alias("_known_item"))
        rows = rows.join(F.broadcast(known), F.trim(F.col("p.item_id")) == F.col("_known_item"), "left")
        if fresh:
            rows = rows.withColumn("_seen_id", F.lit(None).cast("string"))
        else:
            # Pinned to the version before this run's write: the classified rows are recomputed
            # when Spark evicts them, and must not then see their own inserts as duplicates.
            seen = read_pinned(spark, cfg.table_path("events")).select(F.col("event_id").alias("_seen_id"))
            incoming = rows.select(F.trim(F.col("p.event_id")).alias("_seen_id")).where(F.col("_seen_id").isNotNull()) \
                .distinct().localCheckpoint()
            if incoming.count() <= BROADCAST_IDS:
                # Look the new ids up while scanning the table's ids, instead of shuffling them all.
                seen = seen.join(F.broadcast(incoming), "_seen_id", "left_semi")
            rows = rows.join(seen, F.trim(F.col("p.event_id")) == F.col("_seen_id"), "left")
        rule_list = forget_rule + rules.event_rules(max_id) + [
            ("unknown_item", (F.col("p.event_type") != "search") & F.col("_known_item").isNull()),
            # delivered again after an earlier run already stored it
            ("duplicate_event_id", F.col("_seen_id").isNotNull()),
        ]
        order = [F.col("source_file"), rules.parse_ts(F.col("p.ts")), F.col("raw")]
    df = _classify(rows, rule_list, source, order).persist()
    try:
        # Counting first computes and caches the classified rows, and tells whether any row
        # was rejected at all: a clean batch makes no (empty) quarantine commit.
        counts = _counts(df, source)
        timer.done(f"{source}.counts")
        ok = df.where(F.col("rule").isNull())
        if source == "catalog":
            new = ok.select(
                F.trim("p.item_id").alias("item_id"),
                F.col("p.title").alias("title"),
                F.coalesce(F.col("p.description"), F.lit("")).alias("description"),
                F.coalesce(F.col("p.category"), F.lit("unknown")).alias("category"),
                F.coalesce(F.col("p.brand"), F.lit("unknown")).alias("brand"),
                F.col("p.price").try_cast("double").alias("price"),
                F.coalesce(F.lower(F.col("p.in_stock")).isin("true", "1", "yes"), F.lit(True)).alias("in_stock"),
                now.alias("ingested_at"),
            )
            if fresh:
                new.write.format("delta").mode("append").save(cfg.table_path(source))
            else:
                upsert(spark, cfg.table_path(source), new, ["item_id"])
            qkey = F.lit(None).cast("string")
        elif source == "users":
            new = ok.select(user_id.alias("user_id"), F.col("p.age").try_cast("int").alias("age"),
                            F.col("p.gender").alias("gender"), F.col("p.location").alias("location"),
                            now.alias("ingested_at"))
            if fresh:
                new.write.format("delta").mode("append").save(cfg.table_path(source))
            else:
                upsert(spark, cfg.table_path(source), new, ["user_id"])
            qkey = user_id
        else:
            ts = rules.parse_ts(F.col("p.ts"))
            new = ok.select(
                F.trim("p.event_id").alias("event_id"),
                ts.alias("ts"),
                F.to_date(ts).alias("event_date"),
                user_id.alias("user_id"),
                F.col("p.session_id").alias("session_id"),
                F.col("p.event_type").alias("event_type"),
                F.trim("p.item_id").alias("item_id"),
                F.col("p.query").alias("query"),
                F.col("p.price").try_cast("double").alias("price"),
                F.col("p.quantity").try_cast("double").cast("int").alias("quantity"),
                "source_file",
                now.alias("ingested_at"),
            )
            # A plain append is exactly-once: an event_id already stored (by an earlier run, or
            # by a run that died before its manifest entry) was classified above as
            # duplicate_event_id against the pinned pre-run version, and repeats within this
            # run were dropped by _classify, so ``new`` holds only ids not in the table. (An
            # insert-only MERGE on event_id would repeat that join for nothing.)
            new.write.format("delta").mode("append").save(cfg.table_path(source))
            qkey = user_id
        timer.done(f"{source}.write")
        if counts["quarantined"] or counts["duplicates"]:  # duplicates are kept in quarantine too
            q = _quarantine_rows(df, source, now, qkey, run_id)
            if fresh:
                q.write.format("delta").mode("append").save(cfg.table_path("quarantine"))
            else:
                _insert_quarantine(cfg, q)
        timer.done(f"{source}.quarantine")
        return counts
    finally:
        df.unpersist()
