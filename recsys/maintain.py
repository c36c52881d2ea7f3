"""``recsys maintain``: compact and cluster every Delta table, then VACUUM it, and report the
sizes before and after.

For each table of the lakehouse (the fields of TablesConfig) that exists:

1. its size: files and bytes of the current version (``DESCRIBE DETAIL``);
2. ``OPTIMIZE … ZORDER BY`` the keys the jobs read it by (:data:`ZORDER_KEYS`): small files
   are merged, and rows of one user (one item, one query …) end up in few files, so the
   per-user reads and MERGEs of the incremental jobs skip most files by their min/max stats.
   A partition column is never a Z-order key (partitions already separate it), and a key the
   table does not have is left out; with none left, or ``maintenance.zorder=false``, it is a
   plain compaction (bin-packing of the small files only);
3. ``VACUUM … RETAIN maintenance.retain_hours HOURS``: the files no version of the last
   ``retain_hours`` needs are deleted (OPTIMIZE's replaced files among them, once old enough);
4. its size again.

Why Z-ORDER and not liquid clustering (``CLUSTER BY``, Delta 3.1+): the tables exist already,
several are partitioned (events by ``event_date``, recommendations by ``run_date`` …) and a
partitioned table cannot be clustered; clustering an existing table changes its protocol
(the ``clustering`` table feature), which older readers (delta-rs: DuckDB, Polars) may not
support. Z-ORDER changes only the data layout. Its cost: open-source Delta's Z-ORDER rewrites
every file of the table (of each partition) on every run, not only the new ones, so a table
whose last commit is an OPTIMIZE with the same keys (nothing written since) is skipped.

Retention: Delta refuses a VACUUM shorter than its 7 days (168 h) while its safety check
(``spark.databricks.delta.retentionDurationCheck.enabled``) is on, because a job reading or
writing an older version at that moment would lose its files. A shorter ``retain_hours`` is
an explicit choice in the config, so maintain turns the check off for its own VACUUM only
(and back as it was; the session is shared) and logs a warning: run it then only while no
job writes the tables.

VACUUM's figures (files and bytes deleted) come from the table's history (the ``VACUUM
START`` / ``VACUUM END`` commits Delta writes), so no second listing of the storage is needed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from recsys.config import DELTA_RETENTION_HOURS, Config, TablesConfig
from recsys.errors import UsageError
from recsys.reports import write_report

log = logging.getLogger(__name__)

# The columns the jobs look rows up or MERGE by, per table (see each table's readers).
ZORDER_KEYS: dict[str, tuple[str, ...]] = {
    "events": ("user_id",),  # partitioned by event_date; profiles and forget-user read by user
    "catalog": ("item_id",),
    "users": ("user_id",),
    "quarantine": ("user_key",),  # forget-user deletes by it
    "user_profiles": ("user_id",),
    "item_profiles": ("item_id",),
    "item_daily_counts": ("item_id",),
    "training_examples": ("user_id",),  # partitioned by split
    "item_text_embeddings": ("item_id",),
    "recommendations": ("user_id",),  # partitioned by run_date
    "searches": ("user_id",),
    "query_stats": ("query_norm",),
    "query_suggestions": ("prefix",),
    "search_results": ("user_id",),  # partitioned by run_date
    "audiences": ("target",),  # partitioned by run_date
    "forget_audit": ("user_key",),
}

TABLES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TablesConfig))
_VACUUM_OPS = ("VACUUM START", "VACUUM END")


def zorder_columns(name: str, columns: list[str], partition_columns: list[str]) -> list[str]:
    """The Z-order keys of table ``name`` that it has and that are not partition columns."""
    return [c for c in ZORDER_KEYS.get(name, ()) if c in columns and c not in partition_columns]


def _size(table: Any) -> dict[str, int]:
    d = table.detail().select("numFiles", "sizeInBytes").first()
    return {"files": int(d["numFiles"] or 0), "bytes": int(d["sizeInBytes"] or 0)}


def _last_optimized_by(table: Any) -> list[str] | None:
    """The Z-order keys of the table's last commit when that is an OPTIMIZE (VACUUM commits
    aside); None when something else was written since."""
    for row in table.history(20).select("operation", "operationParameters").collect():
        if row["operation"] in _VACUUM_OPS:
            continue
        if row["operation"] != "OPTIMIZE":
            return None
        try:
            return list(json.loads((row["operationParameters"] or {}).get("zOrderBy") or "[]"))
        except ValueError:
            return None
    return None


def _vacuum_figures(table: Any, since_version: int) -> dict[str, int]:
    """Files and bytes the VACUUM after ``since_version`` deleted, from the table's history."""
    start: dict[str, str] = {}
    end: dict[str, str] = {}
    for row in table.history(5).select("version", "operation", "operationMetrics").collect():
        if row["version"] <= since_version:
            break
        if row["operation"] == "VACUUM END":
            end = row["operationMetrics"] or {}
        elif row["operation"] == "VACUUM START":
            start = row["operationMetrics"] or {}
    return {"files": int(end.get("numDeletedFiles", start.get("numFilesToDelete", 0))),
            "bytes": int(start.get("sizeOfDataToDelete", 0))}


def maintain(spark: SparkSession, cfg: Config, table: str | None = None,
             skip_vacuum: bool = False) -> dict[str, Any]:
    """OPTIMIZE (Z-ordered by :data:`ZORDER_KEYS`) and VACUUM every existing table, or only
    ``table``; return (and write to the reports folder) the sizes before and after.

    The report: ``tables`` (per table: ``before`` and ``after`` {files, bytes} of the current
    version, ``zorder_by``, ``optimize`` {files_removed, files_added} or ``skipped``,
    ``vacuum`` {files, bytes} deleted, ``seconds``), ``missing`` (tables not written yet),
    ``retain_hours``, ``vacuum``.

    Raises:
        UsageError: ``table`` is not one of the lakehouse's tables (naming them).
    """
    from delta.tables import DeltaTable

    from recsys.forget import _retention_check_off
    from recsys.tables import table_exists

    if table is not None and table not in TABLES:
        raise UsageError(f"maintain: unknown table {table!r}; tables: {', '.join(TABLES)}")
    retain = cfg.maintenance.retain_hours
    if not skip_vacuum and retain < DELTA_RETENTION_HOURS:
        log.warning("VACUUM with maintenance.retain_hours=%s, below Delta's %s h: Delta's retention check is off "
                    "for it; no job may read or write the tables meanwhile", retain, DELTA_RETENTION_HOURS)
    report: dict[str, Any] = {"retain_hours": retain, "zorder": cfg.maintenance.zorder, "vacuum": not skip_vacuum,
                              "tables": {}, "missing": []}
    for name in [table] if table else TABLES:
        if not table_exists(cfg, name, spark):
            report["missing"].append(name)
            continue
        t0 = time.time()
        path = cfg.table_path(name)
        dt = DeltaTable.forPath(spark, path)
        detail = dt.detail().select("partitionColumns").first()
        keys = zorder_columns(name, dt.toDF().columns, list(detail["partitionColumns"] or [])) \
            if cfg.maintenance.zorder else []
        entry: dict[str, Any] = {"path": path, "before": _size(dt), "zorder_by": keys}
        if _last_optimized_by(dt) == keys:
            entry["optimize"] = "skipped: unchanged since its last OPTIMIZE"
        else:
            builder = dt.optimize()
            result = builder.executeZOrderBy(*keys) if keys else builder.executeCompaction()
            metrics = result.first()["metrics"]
            entry["optimize"] = {"files_removed": int(metrics["numFilesRemoved"]),
                                 "files_added": int(metrics["numFilesAdded"])}
        entry["optimized"] = _size(dt)
        if not skip_vacuum:
            version = int(dt.history(1).first()["version"])
            if retain < DELTA_RETENTION_HOURS:
                with _retention_check_off(spark):
                    dt.vacuum(float(retain))
            else:
                dt.vacuum(float(retain))
            entry["vacuum"] = _vacuum_figures(dt, version)
        entry["after"] = _size(dt)
        entry["seconds"] = round(time.time() - t0, 2)
        report["tables"][name] = entry
        log.info("maintain %s: %s", name, entry)
    write_report(cfg, "maintain", report)
    return report


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def render_maintain(report: dict[str, Any]) -> str:
    """The command line's view: one line per table, files and bytes before → after."""
    lines = [f"maintain: OPTIMIZE{' ZORDER' if report['zorder'] else ''}"
             + (f", VACUUM RETAIN {report['retain_hours']} HOURS" if report["vacuum"] else ", no VACUUM"),
             f"  {'table':<22} {'files':>15} {'size':>23} {'vacuumed':>9} {'seconds':>8}"]
    for name, e in report["tables"].items():
        b, a = e["before"], e["after"]
        vac = str(e["vacuum"]["files"]) if "vacuum" in e else "-"
        lines.append(f"  {name:<22} {b['files']:>6} -> {a['files']:<6} {_mb(b['bytes']):>10} -> {_mb(a['bytes']):<10} "
                     f"{vac:>9} {e['seconds']:>8}")
    if report["missing"]:
        lines.append(f"  not written yet: {', '.join(report['missing'])}")
    return "\n".join(lines)
