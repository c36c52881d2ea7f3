"""Raw landing files → bronze Delta tables ``events``, ``catalog``, ``users``, ``quarantine``.

Each raw line is read as text (so nothing is lost), parsed against a fixed schema, checked
against the rules in :mod:`recsys.ingest.rules`, and lands either in its bronze table or in
``quarantine`` with the rule it broke, its source file and its raw text. Duplicate ids are
dropped from the bronze table and kept in ``quarantine`` under ``duplicate_event_id`` /
``duplicate_item_id`` / ``duplicate_user_id``; the report counts them as duplicates, so
``read = accepted + quarantined + duplicates`` holds for every source.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config
from recsys.ingest import rules
from recsys.privacy import pseudonymise_col, resolve_key
from recsys.tables import RAW_CATALOG_SCHEMA, RAW_EVENT_SCHEMA, RAW_USER_SCHEMA, write_table

SOURCES = ("catalog", "users", "events")


def _read_raw(spark: SparkSession, folder: Path, schema: T.StructType) -> DataFrame:
    """Every non-blank line of every file under ``folder`` (plain or .gz), parsed against ``schema``."""
    df = (
        spark.read.option("recursiveFileLookup", "true")
        .text(str(folder))
        .select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source_file"))
        .where(F.trim(F.col("raw")) != "")
    )
    return df.select(
        "raw",
        "source_file",
        F.expr("try_parse_json(raw)").alias("_json"),
        F.from_json("raw", schema).alias("p"),
    )


def _classify(df: DataFrame, rule_list: list, key: str, dup_rule: str, order_by: list[str]) -> DataFrame:
    """Add ``rule``: the first broken rule, or the duplicate rule for a repeated ``key``."""
    df = df.withColumn("rule", rules.first_broken(rule_list))
    w = Window.partitionBy(F.col(f"p.{key}")).orderBy(*order_by)
    return df.withColumn(
        "rule",
        F.when(F.col("rule").isNotNull(), F.col("rule"))
        .when(F.row_number().over(w) > 1, F.lit(dup_rule)),
    )


def _quarantine_rows(df: DataFrame, source: str, now: Column, user_key: Column) -> DataFrame:
    """Rejected rows; ``user_key`` (the pseudonymous user id, when the row has one) lets
    ``forget-user`` find them."""
    return df.where(F.col("rule").isNotNull()).select(
        F.lit(source).alias("source"),
        "source_file",
        "rule",
        "raw",
        user_key.alias("user_key"),
        now.alias("ingested_at"),
    )


def _counts(df: DataFrame, dup_rule: str) -> dict[str, Any]:
    rows = df.groupBy("rule").count().collect()
    by_rule = {r["rule"]: r["count"] for r in rows if r["rule"] is not None}
    accepted = sum(r["count"] for r in rows if r["rule"] is None)
    duplicates = by_rule.pop(dup_rule, 0)
    quarantined = sum(by_rule.values())
    read = df.count()  # counted on its own, so the reconciliation below can fail
    files = df.select("source_file").distinct().count()
    return {
        "files": files,
        "read": read,
        "accepted": accepted,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "quarantined_by_rule": dict(sorted(by_rule.items())),
    }


def user_id_expr(cfg: Config) -> Column:
    """The stored user id: HMAC-SHA256 pseudonym of the raw id (or the raw id if disabled)."""
    raw = F.trim(F.col("p.user_id"))
    if not cfg.privacy.pseudonymise:
        return raw
    return F.when(rules.blank(raw), F.lit(None).cast("string")).otherwise(pseudonymise_col(raw, resolve_key(cfg)))


def check_landing(cfg: Config) -> Path:
    """The landing folder, after checking it has ``events/`` and ``catalog/`` (before Spark starts).

    Raises:
        FileNotFoundError: one of them is missing.
    """
    landing = cfg.lakehouse.landing_path
    for sub in ("events", "catalog"):
        if not (landing / sub).is_dir():
            raise FileNotFoundError(
                f"input folder {landing / sub} does not exist: put raw files there or run `recsys generate` first"
            )
    return landing


def ingest(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Validate the landing folder into the bronze tables and return the run report.

    Raises:
        FileNotFoundError: the landing folder or its ``events``/``catalog`` sub-folder is missing.
    """
    landing = check_landing(cfg)
    now = F.lit(dt.datetime.now(dt.timezone.utc).replace(microsecond=0)).cast("timestamp")
    user_id = user_id_expr(cfg)
    report: dict[str, Any] = {"landing": str(landing), "started_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    quarantine: list[DataFrame] = []

    # --- catalog --------------------------------------------------------------------------
    cat = _classify(
        _read_raw(spark, landing / "catalog", RAW_CATALOG_SCHEMA),
        rules.catalog_rules(),
        "item_id",
        "duplicate_item_id",
        ["source_file", "raw"],
    ).persist()
    catalog = cat.where(F.col("rule").isNull()).select(
        F.trim("p.item_id").alias("item_id"),
        F.col("p.title").alias("title"),
        F.coalesce(F.col("p.description"), F.lit("")).alias("description"),
        F.coalesce(F.col("p.category"), F.lit("unknown")).alias("category"),
        F.coalesce(F.col("p.brand"), F.lit("unknown")).alias("brand"),
        F.col("p.price").try_cast("double").alias("price"),
        F.coalesce(F.lower(F.col("p.in_stock")).isin("true", "1", "yes"), F.lit(True)).alias("in_stock"),
        now.alias("ingested_at"),
    )
    write_table(catalog, cfg, "catalog")
    report["catalog"] = _counts(cat, "duplicate_item_id")
    quarantine.append(_quarantine_rows(cat, "catalog", now, F.lit(None).cast("string")))

    # --- users (optional) -----------------------------------------------------------------
    if (landing / "users").is_dir():
        usr = _classify(
            _read_raw(spark, landing / "users", RAW_USER_SCHEMA),
            rules.user_rules(),
            "user_id",
            "duplicate_user_id",
            ["source_file", "raw"],
        ).persist()
        users = usr.where(F.col("rule").isNull()).select(
            user_id.alias("user_id"),
            F.col("p.age").try_cast("int").alias("age"),
            F.col("p.gender").alias("gender"),
            F.col("p.location").alias("location"),
            now.alias("ingested_at"),
        )
        write_table(users, cfg, "users")
        report["users"] = _counts(usr, "duplicate_user_id")
        quarantine.append(_quarantine_rows(usr, "users", now, user_id))

    # --- events ---------------------------------------------------------------------------
    known_items = spark.read.format("delta").load(cfg.table_path("catalog")).select(
        F.col("item_id").alias("_known_item")
    )
    raw = _read_raw(spark, landing / "events", RAW_EVENT_SCHEMA)
    raw = raw.join(F.broadcast(known_items), F.trim(F.col("p.item_id")) == F.col("_known_item"), "left")
    event_rule_list = rules.event_rules() + [
        ("unknown_item", (F.col("p.event_type") != "search") & F.col("_known_item").isNull()),
    ]
    ev = _classify(raw, event_rule_list, "event_id", "duplicate_event_id", ["source_file", "raw"]).persist()
    ts = rules.parse_ts(F.col("p.ts"))
    events = ev.where(F.col("rule").isNull()).select(
        F.trim("p.event_id").alias("event_id"),
        ts.alias("ts"),
        F.to_date(ts).alias("event_date"),
        user_id.alias("user_id"),
        F.col("p.session_id").alias("session_id"),
        F.col("p.event_type").alias("event_type"),
        F.trim("p.item_id").alias("item_id"),
        F.col("p.query").alias("query"),
        F.col("p.price").try_cast("double").alias("price"),
        F.col("p.quantity").try_cast("int").alias("quantity"),
        "source_file",
        now.alias("ingested_at"),
    )
    write_table(events, cfg, "events", partition_by=["event_date"])
    report["events"] = _counts(ev, "duplicate_event_id")
    quarantine.append(_quarantine_rows(ev, "events", now, user_id))

    q = quarantine[0]
    for other in quarantine[1:]:
        q = q.unionByName(other)
    write_table(q, cfg, "quarantine")
    for df in (cat, ev):
        df.unpersist()

    report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    for source in SOURCES:
        if source in report:
            c = report[source]
            c["reconciles"] = c["read"] == c["accepted"] + c["quarantined"] + c["duplicates"]
    write_report(cfg, "ingest", report)
    return report


def write_report(cfg: Config, name: str, report: dict[str, Any]) -> Path:
    """Write ``report`` as ``<root>/_reports/<name>-<UTC timestamp>.json`` and return the path."""
    out = cfg.lakehouse.reports_path
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = out / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path
