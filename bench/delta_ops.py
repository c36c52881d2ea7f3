"""What a single small Delta Lake operation costs on this machine, warm, with almost no data.

    python bench/delta_ops.py [--masters 'local[1]' 'local[2]'] [--repeats 7] [--warmup 3]
                              [--target-rows 40000] [--root /tmp/recsys-bench-delta-ops]
                              [--out bench/results/delta-ops.json]

Why: an incremental data-layer run (``bench/pipeline.py``'s floor and 1% runs) cannot do
fewer Delta operations than the tables it keeps up to date, however few events it brings.
This measures each kind of operation alone, on tiny data, after warm-up, so that the sum for
the operations an incremental run cannot skip is a lower bound on its time that no change to
recsys' own code can beat on this machine (only fewer tables, or a faster Delta or machine).

The operations (medians of --repeats timed runs after --warmup untimed ones, in one Spark
session per master, in rotation so that none is measured only when the JVM is warmest):

* ``append``: append 100 rows to a date-partitioned table with the change data feed on (as
  ingest appends to ``events``, ``_ingest_log`` and the profiles log);
* ``state``: a table's id and latest version (``DeltaTable.detail()``, as build_profiles reads
  the bronze tables' states);
* ``change_feed``: read and count the change data feed of one commit;
* ``merge``: upsert 40 rows by key into a --target-rows-row table with deletion vectors (as
  the profile MERGEs do: 40 users is a floor run's share at 5M events);
* ``merge_no_dv``: the same into a copy of the table without deletion vectors;
* ``overwrite``: overwrite a 14,000-row table (as item_profiles is rewritten when a day passes).

The minimal incremental run: ingest appends to ``events`` and to its log (2 appends);
build_profiles reads three bronze states and one change feed, MERGEs ``item_daily_counts``,
``user_profiles`` and ``training_examples``, overwrites ``item_profiles`` and appends to its
log (3 states, 1 change feed, 3 MERGEs, 1 overwrite, 1 append). The output gives that sum,
and the same sum with the two user MERGEs fully overlapped (what recsys' two threads can at
best achieve). Reading files, validating rows and computing profiles come on top.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _machine  # bench/ is on sys.path when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent
MINIMAL_RUN = {"append": 3, "state": 3, "change_feed": 1, "merge": 3, "overwrite": 1}


def measure(master: str, root: Path, repeats: int, warmup: int, target_rows: int) -> dict[str, Any]:
    """Time each operation in a Spark session on ``master`` (this process: one master only)."""
    sys.path.insert(0, str(REPO))
    from recsys.cli import configure_logging

    configure_logging()
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from recsys.config import load_config
    from recsys.spark import get_spark

    shutil.rmtree(root, ignore_errors=True)
    cfg = load_config(str(REPO / "conf" / "local.yaml"), [f"lakehouse.root={root}", f"spark.master={master}"])
    t0 = time.time()
    spark = get_spark(cfg)
    start_s = time.time() - t0

    def rows(n: int, salt: int) -> Any:
        return spark.range(n).select(
            F.format_string("u%07d", "id").alias("user_id"),
            F.transform(F.sequence(F.lit(1), F.lit(50)), lambda x: (x * (F.col("id") + salt)).cast("int")).alias("seq"),
            (F.col("id") + salt).alias("n"))

    events, items = str(root / "events"), str(root / "items")
    targets = {"merge": str(root / "target_dv"), "merge_no_dv": str(root / "target")}
    rows(target_rows, 0).repartition(4).write.format("delta").option("delta.enableDeletionVectors", "true") \
        .save(targets["merge"])
    rows(target_rows, 0).repartition(4).write.format("delta").option("delta.enableDeletionVectors", "false") \
        .save(targets["merge_no_dv"])
    spark.range(1000).select(F.col("id").cast("string").alias("event_id"), F.lit(dt.date(2026, 1, 1)).alias("event_date")) \
        .write.format("delta").partitionBy("event_date").option("delta.enableChangeDataFeed", "true").save(events)
    salt = iter(range(1, 10**6))
    appended = [0]  # the events table's latest version: one commit per append (recsys knows it from its log)

    def append() -> None:
        spark.range(100).select(F.expr("uuid()").alias("event_id"), F.current_date().alias("event_date")) \
            .write.format("delta").mode("append").save(events)
        appended[0] += 1

    def state() -> None:
        DeltaTable.forPath(spark, events).detail().first()

    def change_feed() -> None:
        spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", appended[0]) \
            .load(events).count()

    def merge_into(path: str) -> None:
        s = next(salt)
        source = rows(40, s).withColumn("user_id", F.format_string("u%07d", (F.col("n") * 997) % target_rows))
        DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), "t.user_id = s.user_id") \
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()

    def overwrite() -> None:
        spark.range(14_000).select("id", (F.col("id") * 2).alias("v")).write.format("delta").mode("overwrite").save(items)

    ops = {"append": append, "state": state, "change_feed": change_feed,
           "merge": lambda: merge_into(targets["merge"]), "merge_no_dv": lambda: merge_into(targets["merge_no_dv"]),
           "overwrite": overwrite}
    for _ in range(warmup):
        for op in ops.values():
            op()
    seconds: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeats):
        for name, op in ops.items():
            t = time.perf_counter()
            op()
            seconds[name].append(round(time.perf_counter() - t, 4))
    spark.stop()
    shutil.rmtree(root, ignore_errors=True)
    median = {name: round(statistics.median(v), 3) for name, v in seconds.items()}
    minimal = sum(median[name] * n for name, n in MINIMAL_RUN.items())
    return {"master": master, "spark_start_seconds": round(start_s, 1), "median_seconds": median,
            "min_seconds": {name: min(v) for name, v in seconds.items()}, "seconds": seconds,
            "minimal_incremental_seconds": round(minimal, 2),
            "minimal_incremental_overlapped_seconds": round(minimal - median["merge"], 2)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/delta_ops.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--masters", nargs="+", default=["local[1]", "local[2]"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--target-rows", type=int, default=40_000)
    p.add_argument("--root", type=Path, default=Path("/tmp/recsys-bench-delta-ops"))
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one master, in a fresh process
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.target_rows < 100:
        p.error("--repeats must be >= 1, --warmup >= 0 and --target-rows >= 100")
    if args.child:
        print(json.dumps(measure(args.child, args.root / "lake", args.repeats, args.warmup, args.target_rows)))
        return 0
    runs = []
    for master in args.masters:  # a fresh JVM per master: the master cannot change inside one
        cmd = [sys.executable, __file__, "--child", master, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--target-rows", str(args.target_rows), "--root", str(args.root)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            print(f"[delta_ops] the run on {master} failed (exit {done.returncode})", file=sys.stderr)
            return 1
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {"benchmark": "delta_ops", "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
              "command": " ".join([sys.executable, "bench/delta_ops.py", *argv]),
              "settings": {"repeats": args.repeats, "warmup": args.warmup, "target_rows": args.target_rows,
                           "minimal_incremental_run": MINIMAL_RUN},
              "runs": runs, "machine": {"cores_usable": _machine.usable_cores(), "cpu_model": _machine.cpu_model()}}
    names = list(runs[0]["median_seconds"])
    print("Median seconds per operation (warm, tiny data):")
    print(f"  {'master':<10} " + " ".join(f"{n:>12}" for n in names) + f" {'minimal run':>12} {'overlapped':>11}")
    for r in runs:
        print(f"  {r['master']:<10} " + " ".join(f"{r['median_seconds'][n]:>12.3f}" for n in names)
              + f" {r['minimal_incremental_seconds']:>12.2f} {r['minimal_incremental_overlapped_seconds']:>11.2f}")
    print("minimal run: " + " + ".join(f"{name} x {n}" for name, n in MINIMAL_RUN.items())
          + "; overlapped: the two user MERGEs side by side")
    print(f"machine: {result['machine']['cores_usable']} usable cores, {result['machine']['cpu_model']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"[delta_ops] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
