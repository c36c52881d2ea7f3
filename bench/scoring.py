"""Batch scoring at catalogue scale: users scored per second for top-100 through the Spark
job (``recsys.scoring.batch.recommend``: mapInPandas, the shop's rules, Delta write) against
the limit of this machine, the same model's encoding, matrix product and top-k in one plain
PyTorch process over in-memory tensors.

    python bench/scoring.py [--items 10000 100000] [--users 20000] [--top-k 100] [--out FILE]

For each catalogue size: a default-sized network (``model.*`` defaults, random weights: the
cost does not depend on their values) with side features and 384-d text features is logged
and registered in a scratch MLflow store; ``item_profiles`` (random categories, brands, 6%
out of stock) and ``user_profiles`` (``--users`` users with random histories of 5-50 events)
are written as Delta tables in a scratch lakehouse; then

(a) the limit: one process, both cores (torch's default threads), batches of
    ``scoring.batch_size`` users: encode, ``h @ V.T``, purchased items masked, ``topk`` — no
    rules, no Spark, no output;
(b) the real path: ``recommend`` with the default rules (in stock only, fill) and
    ``scoring.top_k`` = 100 on ``local[2]`` (two Python workers of one thread each), timed from
    the call to the Delta commit; the peak resident memory of each Python worker is sampled
    from /proc every 0.1 s.

Prints a table and writes JSON with the figures, the machine and the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._machine import loadavg, machine_info, versions  # noqa: E402


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


class WorkerMemory(threading.Thread):
    """Peak VmRSS of every PySpark Python worker process, sampled from /proc."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.stop = every, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"pyspark" not in cmd or (b"daemon" not in cmd and b"worker" not in cmd):
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            self.peak[pid] = max(self.peak.get(pid, 0), kb)
                except OSError:
                    continue
            time.sleep(self.every)


def timed_job(job, users: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(job's report, {seconds, users_per_second, worker_peak_rss_mib})`` of one call of ``job``,
    the Python workers' memory sampled meanwhile."""
    mem = WorkerMemory()
    mem.start()
    t = time.perf_counter()
    try:
        rep = job()
    finally:
        seconds = time.perf_counter() - t
        mem.stop.set()
        mem.join()
    return rep, {"seconds": round(seconds, 2), "users_per_second": round(users / seconds, 1),
                 "worker_peak_rss_mib": sorted(round(kb / 1024) for kb in mem.peak.values())}


def make_tables(spark, cfg, n_items: int, n_users: int, max_len: int, seed: int = 0) -> None:
    import numpy as np
    from pyspark.sql import types as T

    from recsys.tables import write_table

    rng = np.random.default_rng(seed)
    cat = rng.integers(1, 201, n_items)
    brand = rng.integers(1, 2001, n_items)
    items = [(i, f"i{i:07d}", f"item {i}", f"Cat{c % 10}>Sub{c}", f"Cat{c % 10}", int(c), f"Brand{b}", int(b),
              bool(rng.random() >= 0.06), i) for i, c, b in zip(range(1, n_items + 1), cat, brand)]
    schema = ("item_idx int, item_id string, title string, category string, top_category string, category_idx int, "
              "brand string, brand_idx int, in_stock boolean, popularity_rank int")
    write_table(spark.createDataFrame(items, schema), cfg, "item_profiles")
    popular = rng.zipf(1.2, size=n_users * 60) % n_items + 1  # a long tail of item popularity
    rows, at = [], 0
    for u in range(n_users):
        n = int(rng.integers(5, 51))
        seq = [int(x) for x in popular[at:at + n]]
        at += n
        types = [int(t) for t in rng.choice([1, 2, 3, 4], size=n, p=[0.7, 0.15, 0.1, 0.05])]
        rows.append((f"u{u:07d}", seq, types, sorted({s for s, t in zip(seq, types) if t == 4}), n))
    schema = T.StructType([
        T.StructField("user_id", T.StringType()), T.StructField("seq_item_idx", T.ArrayType(T.IntegerType())),
        T.StructField("seq_type_idx", T.ArrayType(T.IntegerType())),
        T.StructField("purchased_item_idx", T.ArrayType(T.IntegerType())), T.StructField("n_steps", T.IntegerType())])
    write_table(spark.createDataFrame(rows, schema).repartition(4), cfg, "user_profiles")


def make_model(cfg, n_items: int):
    import mlflow
    import numpy as np
    import torch

    from recsys.models import Catalogue, build_model
    from recsys.models.serving import log_recommender
    from recsys.tracking import setup_from_config

    rng = np.random.default_rng(1)
    text = rng.standard_normal((n_items + 1, 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text[0] = 0
    catalogue = Catalogue(num_items=n_items, category=[0, *rng.integers(1, 201, n_items).tolist()],
                          brand=[0, *rng.integers(1, 2001, n_items).tolist()],
                          price=[0, *rng.integers(1, 11, n_items).tolist()], num_categories=200,
                          num_brands=2000, num_price_buckets=10, text=text.tolist())
    torch.manual_seed(0)
    model = build_model(cfg.model, catalogue, cfg.features.max_seq_len).eval()
    experiment = setup_from_config(cfg)
    with mlflow.start_run(experiment_id=experiment):
        with tempfile.TemporaryDirectory() as tmp:
            info = log_recommender(model, [None, *[f"i{i:07d}" for i in range(1, n_items + 1)]],
                                   cfg.tracking.model_name, Path(tmp))
    mlflow.MlflowClient().set_registered_model_alias(cfg.tracking.model_name, cfg.tracking.alias,
                                                     info.registered_model_version)
    return model


def limit(spark, cfg, model, top_k: int) -> dict[str, Any]:
    """Plain PyTorch over in-memory tensors: encode, matmul, mask, top-k; both cores."""
    import torch

    from recsys.models.loading import pad_left
    from recsys.models.serving import exclusion_mask
    from recsys.tables import read_table

    torch.set_num_threads(os.cpu_count() or 1)
    users = read_table(spark, cfg, "user_profiles").toPandas()
    L, B = model.spec.max_len, cfg.scoring.batch_size
    items = torch.from_numpy(pad_left(users["seq_item_idx"].tolist(), L))
    types = torch.from_numpy(pad_left(users["seq_type_idx"].tolist(), L))
    bought = users["purchased_item_idx"].tolist()
    with torch.no_grad():
        t = time.perf_counter()
        vectors = model.item_vectors()
        for s in range(0, len(users), B):
            h = model.encode(items[s:s + B], types[s:s + B], vectors)[:, -1]
            scores = h @ vectors.T
            scores[:, 0] = float("-inf")
            scores.masked_fill_(exclusion_mask(bought[s:s + B], scores.shape[1]), float("-inf"))
            scores.topk(top_k, dim=1)
        seconds = time.perf_counter() - t
    return {"users": len(users), "seconds": round(seconds, 2), "users_per_second": round(len(users) / seconds, 1),
            "threads": torch.get_num_threads()}


def measure(n_items: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from recsys.config import load_config
    from recsys.scoring.batch import recommend
    from recsys.spark import get_spark

    root = work / f"items-{n_items}"
    cfg = load_config(REPO / "conf" / "local.yaml", [
        f"lakehouse.root={root}", f"scoring.top_k={args.top_k}", "scoring.run_date=2026-11-01",
        "tracking.model_name=bench-scoring", *args.overrides])
    spark = get_spark(cfg)
    log(f"{n_items:,} items: tables")
    make_tables(spark, cfg, n_items, args.users, cfg.features.max_seq_len)
    log(f"{n_items:,} items: model")
    model = make_model(cfg, n_items)
    log(f"{n_items:,} items: the limit (plain PyTorch)")
    plain = limit(spark, cfg, model, args.top_k)
    log(f"  {plain}")
    runs = []
    for attempt in range(args.repeats):
        rep, run = timed_job(lambda: recommend(spark, cfg), args.users)
        runs.append({**run, "rows": rep["rows"], "rows_by_source": rep["rows_by_source"]})
        log(f"  recommend #{attempt + 1}: {runs[-1]}")
    best = max(runs, key=lambda r: r["users_per_second"])
    mib = cfg.scoring.batch_size * min(cfg.scoring.block_items, n_items) * 4 / 2**20
    return {"items": n_items, "users": args.users, "top_k": args.top_k, "limit": plain, "spark": runs,
            "ratio": round(best["users_per_second"] / plain["users_per_second"], 3),
            "score_block_mib": round(mib, 1), "batch_size": cfg.scoring.batch_size,
            "block_items": cfg.scoring.block_items, "hidden": cfg.model.hidden}


def render(r: dict[str, Any]) -> str:
    lines = ["| items | users | limit users/s (1 process, plain PyTorch) | Spark job users/s (recommend, Delta) | "
             "ratio | peak RSS per Python worker |", "|---|---|---|---|---|---|"]
    for x in r["catalogues"]:
        best = max(x["spark"], key=lambda s: s["users_per_second"])
        lines.append(f"| {x['items']:,} | {x['users']:,} | {x['limit']['users_per_second']:,.0f} | "
                     f"{best['users_per_second']:,.0f} | {x['ratio']:.2f} | "
                     f"{', '.join(f'{m} MiB' for m in best['worker_peak_rss_mib']) or 'n/a'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scoring.json")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    t = time.time()
    catalogues = [measure(n, args, work) for n in args.items]
    result = {"catalogues": catalogues, "machine": machine_info(), "loadavg_end": loadavg(),
              "versions": versions(("torch", "pyspark", "delta-spark", "mlflow", "numpy")),
              "seconds": round(time.time() - t, 1),
              "command": "python " + " ".join(shlex.quote(a) for a in ["bench/scoring.py", *(argv or sys.argv[1:])]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
