"""Marketing audiences: how fast, and how good.

    python bench/audiences.py speed [--items 10000] [--users 100000] [--targets 1000] [--size 100] [--out FILE]
    python bench/audiences.py quality --lakehouse DIR [--config conf/local.yaml] [--size 100] [--out FILE] [key=value ...]

``speed``: ``--targets`` item audiences of ``--size`` users over ``--users`` users, through the
Spark job (``recsys.scoring.audience_job.audiences``: mapInPandas on ``local[2]``, Delta write)
against the limit of this machine: the same model's encoding, the matrix product against
the catalogue, the log-softmax normaliser and a top-k over users in one plain PyTorch process
over in-memory tensors (both cores). A default-sized network with random weights and random
histories, as in ``bench/scoring.py`` (the cost does not depend on the values).

``quality``: the hold-out evaluation (``recsys.evaluation.audiences.evaluate_audiences``) on
a lakehouse where the pipeline has run (a trained, registered model and its
``training_examples``): precision@N and recall@N of the model's audiences against
popularity-by-category and Spark ALS ``recommendForItemSubset``, items and categories apart.

Prints a table and writes JSON with the figures, the machine and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._machine import loadavg, machine_info, versions  # noqa: E402
from bench.scoring import log, make_model, make_tables, timed_job  # noqa: E402


def limit(spark, cfg, model, targets: list[int], size: int) -> dict[str, Any]:
    """Plain PyTorch over in-memory tensors: encode, h @ V.T, log-softmax at the targets, top-k users."""
    import torch

    from recsys.models.loading import pad_left
    from recsys.tables import read_table

    torch.set_num_threads(os.cpu_count() or 1)
    users = read_table(spark, cfg, "user_profiles").toPandas()
    L, B = model.spec.max_len, cfg.audiences.batch_size
    items = torch.from_numpy(pad_left(users["seq_item_idx"].tolist(), L))
    types = torch.from_numpy(pad_left(users["seq_type_idx"].tolist(), L))
    cols = torch.as_tensor(targets)
    with torch.no_grad():
        t = time.perf_counter()
        vectors = model.item_vectors()
        best = torch.empty(0, len(targets))
        for s in range(0, len(users), B):
            h = model.encode(items[s:s + B], types[s:s + B], vectors)[:, -1]
            logits = h @ vectors[1:].T
            scores = logits[:, cols - 1] - torch.logsumexp(logits, dim=1, keepdim=True)
            best = torch.cat([best, scores]).topk(min(size, len(best) + len(scores)), dim=0).values
        seconds = time.perf_counter() - t
    return {"users": len(users), "seconds": round(seconds, 2), "users_per_second": round(len(users) / seconds, 1),
            "threads": torch.get_num_threads()}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    from recsys.config import load_config
    from recsys.scoring.audience_job import audiences
    from recsys.spark import get_spark

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-audiences-"))
    cfg = load_config(REPO / "conf" / "local.yaml", [
        f"lakehouse.root={work / 'lakehouse'}", "scoring.run_date=2026-11-01", f"audiences.size={args.size}",
        "tracking.model_name=bench-audiences", *args.overrides])
    targets = list(range(1, args.targets + 1))  # the most popular items (popularity_rank = item_idx)
    cfg = dataclasses.replace(cfg, audiences=dataclasses.replace(
        cfg.audiences, targets=[f"item:i{i:07d}" for i in targets]))
    spark = get_spark(cfg)
    log(f"tables: {args.items:,} items, {args.users:,} users")
    make_tables(spark, cfg, args.items, args.users, cfg.features.max_seq_len)
    model = make_model(cfg, args.items)
    log("the limit (plain PyTorch)")
    plain = limit(spark, cfg, model, targets, args.size)
    log(f"  {plain}")
    runs = []
    for attempt in range(args.repeats):
        rep, run = timed_job(lambda: audiences(spark, cfg), args.users)
        runs.append({**run, "rows": rep["rows"]})
        log(f"  audiences #{attempt + 1}: {runs[-1]}")
    best = max(runs, key=lambda r: r["users_per_second"])
    return {"items": args.items, "users": args.users, "targets": args.targets, "size": args.size, "limit": plain,
            "spark": runs, "ratio": round(best["users_per_second"] / plain["users_per_second"], 3),
            "hidden": cfg.model.hidden, "batch_size": cfg.audiences.batch_size}


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from recsys.config import load_config
    from recsys.evaluation.audiences import evaluate_audiences
    from recsys.spark import get_spark

    cfg = load_config(args.config, [f"lakehouse.root={args.lakehouse}", *args.overrides])
    spark = get_spark(cfg)
    t = time.perf_counter()
    out = evaluate_audiences(spark, cfg, size=args.size, log_to_mlflow=False)
    out["seconds"] = round(time.perf_counter() - t, 1)
    out["lakehouse"] = str(args.lakehouse)
    return out


def render(kind: str, r: dict[str, Any]) -> str:
    if kind == "speed":
        best = max(r["spark"], key=lambda s: s["users_per_second"])
        return ("| items | users | audiences x size | limit users/s (1 process, plain PyTorch) | Spark job users/s "
                "(audiences, Delta) | ratio | job seconds | peak RSS per Python worker |\n|---|---|---|---|---|---|---|---|\n"
                f"| {r['items']:,} | {r['users']:,} | {r['targets']:,} x {r['size']} | {r['limit']['users_per_second']:,.0f} | "
                f"{best['users_per_second']:,.0f} | {r['ratio']:.2f} | {best['seconds']} | "
                f"{', '.join(f'{m} MiB' for m in best['worker_peak_rss_mib']) or 'n/a'} |")
    from recsys.evaluation.audiences import render_evaluation

    return render_evaluation(r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--items", type=int, default=10_000)
    s.add_argument("--users", type=int, default=100_000)
    s.add_argument("--targets", type=int, default=1000)
    s.add_argument("--size", type=int, default=100)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    q = sub.add_parser("quality")
    q.add_argument("--lakehouse", type=Path, required=True, help="the lakehouse root of a pipeline run")
    q.add_argument("--config", default=str(REPO / "conf" / "local.yaml"))
    q.add_argument("--size", type=int, default=100)
    for x in (s, q):
        x.add_argument("--out", type=Path, default=None)
        x.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args(argv)
    t = time.time()
    result = speed(args) if args.kind == "speed" else quality(args)
    result.update({"machine": machine_info(), "loadavg_end": loadavg(),
                   "versions": versions(("torch", "pyspark", "delta-spark", "mlflow", "numpy")),
                   "total_seconds": round(time.time() - t, 1),
                   "command": "python " + " ".join(shlex.quote(a) for a in ["bench/audiences.py", *(argv or sys.argv[1:])]),
                   "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    out = args.out or REPO / "bench" / "results" / f"audiences-{args.kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(render(args.kind, result))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
