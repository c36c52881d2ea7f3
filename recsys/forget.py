"""``recsys forget-user``: erase one user from every table, and record that it was done.

The raw id is pseudonymised with the same key as at ingestion, then every row of that
pseudonym is deleted from bronze (``events``, ``users``, ``quarantine`` by ``user_key``),
gold (``user_profiles``, ``training_examples``, ``recommendations``) and, for quarantine rows
whose raw text could not be parsed into a user id, rows whose raw text holds the raw id.
The deletion is recorded in the ``forget_audit`` table with the pseudonym only, and that
table is also the tombstone list ingest honours: the user's rows still sitting in landing
files (or delivered again later) are dropped and counted as ``forgotten`` by every later
ingest, a full refresh included, never stored again. Lines too broken to parse a user id
from cannot be matched by pseudonym; they stay in quarantine only until the next
``forget-user`` of that id (which searches quarantine's raw text for it).

Delta keeps the deleted rows in older files for time travel until they are vacuumed. On a
table with deletion vectors (the default for new tables on Databricks, and on by default here
for ``user_profiles`` and ``training_examples``) a DELETE does not even
rewrite the file: it only marks the rows deleted, and the file stays part of the current
version, so VACUUM alone cannot remove it. To purge the rows physically run, after the
retention period (or with a shorter one),
``REORG TABLE delta.`<table path>` APPLY (PURGE)`` (rewrites the files that carry deletion
vectors; a no-op on tables without them) and then
``VACUUM delta.`<table path>` RETAIN 0 HOURS`` with
``spark.databricks.delta.retentionDurationCheck.enabled=false``, or set
``privacy.vacuum_after_forget=true`` to have this job do both.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Any, Iterator

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.errors import UsageError
from recsys.reports import write_report
from recsys.privacy import pseudonymise, resolve_key
from recsys.tables import table_exists

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


@contextmanager
def _retention_check_off(spark: SparkSession) -> Iterator[None]:
    """Delta's retention check off for one VACUUM RETAIN 0 HOURS, then as it was: the session
    is shared, and every other VACUUM must keep the check."""
    before = spark.conf.get(RETENTION_CHECK, None)
    spark.conf.set(RETENTION_CHECK, "false")
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(RETENTION_CHECK)
        else:
            spark.conf.set(RETENTION_CHECK, before)


# table → the column holding the pseudonymous user id
USER_COLUMNS = {
    "events": "user_id",
    "users": "user_id",
    "quarantine": "user_key",
    "user_profiles": "user_id",
    "training_examples": "user_id",
    "recommendations": "user_id",
    "searches": "user_id",
    "search_results": "user_id",
    "audiences": "user_id",
}


def forget_user(spark: SparkSession, cfg: Config, raw_user_id: str | None = None) -> dict[str, Any]:
    """Delete ``raw_user_id`` (default: ``privacy.user``) everywhere; returns rows deleted per table.

    Raises:
        UsageError: the id is empty.
    """
    from delta.tables import DeltaTable

    raw_user_id = cfg.privacy.user if raw_user_id is None else raw_user_id
    if not raw_user_id or not raw_user_id.strip():
        raise UsageError("forget-user needs a non-empty user id: recsys forget-user --user <id> "
                         "(or privacy.user=<id>)")
    raw_user_id = raw_user_id.strip()
    key = resolve_key(cfg)
    pid = pseudonymise(raw_user_id, key) if cfg.privacy.pseudonymise else raw_user_id
    deleted: dict[str, int] = {}
    refreshed = None
    for name, col in USER_COLUMNS.items():
        if not table_exists(cfg, name):
            continue
        table = DeltaTable.forPath(spark, cfg.table_path(name))
        cond = F.col(col) == F.lit(pid)
        if name == "quarantine":
            # unparseable lines have no user_key: find the raw id as a JSON string value
            cond = cond | F.col("raw").contains(f'"{raw_user_id}"')
        before = table.toDF().count()
        if name == "searches":
            # The search tables follow events through their change feed: the user's searches go,
            # and the query stats and suggestions they counted in are recomputed without them.
            from recsys.search.tables import build_search

            refreshed = build_search(spark, cfg).get("mode")
        table.delete(cond)
        deleted[name] = before - table.toDF().count()
        if cfg.privacy.vacuum_after_forget:
            # Deletion vectors only mark rows deleted: rewrite those files first, so that the
            # VACUUM removes every file that still holds the user's rows.
            spark.sql(f"REORG TABLE delta.`{cfg.table_path(name)}` APPLY (PURGE)")
            with _retention_check_off(spark):
                table.vacuum(0)
    audit = spark.createDataFrame(
        [(pid, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), sum(deleted.values()),
          ",".join(f"{k}={v}" for k, v in deleted.items()))],
        "user_key string, forgotten_at timestamp, rows_deleted long, detail string",
    )
    audit.write.format("delta").mode("append").save(cfg.table_path("forget_audit"))
    report = {"user_key": pid, "deleted": deleted, "vacuumed": cfg.privacy.vacuum_after_forget,
              "search_tables": refreshed}
    write_report(cfg, "forget-user", report)
    return report
