"""``recsys demo``: every stage in order on generated shop data, then a readable summary.

The summary is printed and written to ``<lakehouse root>/_reports/demo.json``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.tables import read_table, table_exists

log = logging.getLogger(__name__)

TABLES = ("events", "catalog", "users", "quarantine", "user_profiles", "item_profiles", "training_examples",
          "item_text_embeddings", "recommendations")


def demo(spark: SparkSession, cfg: Config, sample_users: int = 2) -> dict[str, Any]:
    """Run generate → ingest → build-profiles → train → evaluate → recommend; return the summary."""
    from recsys.datagen import generate_shop
    from recsys.evaluation.evaluate import evaluate
    from recsys.features.profiles import build_profiles
    from recsys.ingest.pipeline import ingest
    from recsys.scoring.batch import recommend
    from recsys.training.launch import train

    timings: dict[str, float] = {}

    def stage(name: str, fn, *args):
        log.info("stage %s ...", name)
        t = time.time()
        out = fn(*args)
        timings[name] = round(time.time() - t, 1)
        log.info("stage %s done in %.1fs", name, timings[name])
        return out

    g = cfg.generator
    gen = stage("generate", lambda: generate_shop(cfg.lakehouse.landing_path, users=g.users, items=g.items,
                                                  days=g.days, seed=g.seed, malformed_rate=g.malformed_rate))
    ing = stage("ingest", lambda: ingest(spark, cfg, full=True))
    stage("build_profiles", build_profiles, spark, cfg)
    if cfg.features.text_embeddings:
        from recsys.features.text import build_item_text_embeddings

        stage("embed_text", build_item_text_embeddings, spark, cfg)
    tr = stage("train", train, spark, cfg)
    ev = stage("evaluate", evaluate, spark, cfg)
    rec = stage("recommend", recommend, spark, cfg)

    summary = summarise(spark, cfg, ingest_report=ing, train_report=tr, eval_report=ev, rec_report=rec,
                        sample_users=sample_users)
    summary["generator"] = gen
    summary["timings_seconds"] = timings
    out = cfg.lakehouse.reports_path / "demo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(render(summary))
    print(f"\nSummary written to {out}")
    return summary


def summarise(spark: SparkSession, cfg: Config, *, ingest_report: dict, train_report: dict, eval_report: dict,
              rec_report: dict, sample_users: int = 2) -> dict[str, Any]:
    tables = {name: {"rows": read_table(spark, cfg, name).count()} for name in TABLES if table_exists(cfg, name)}
    for source in ("events", "catalog", "users"):
        if source in ingest_report:
            tables[source]["quarantined"] = ingest_report[source]["quarantined"]
            tables[source]["duplicates"] = ingest_report[source]["duplicates"]
    m = eval_report["metrics"]
    items = read_table(spark, cfg, "item_profiles").select("item_id", "title", "category")
    recs = read_table(spark, cfg, "recommendations").where(
        F.col("run_date") == F.lit(rec_report["run_date"]).cast("date")
    )
    profiles = read_table(spark, cfg, "user_profiles")
    # The two users with the longest histories make the most telling examples.
    sample = [r["user_id"] for r in profiles.orderBy(F.desc("n_steps"), "user_id").limit(sample_users).collect()]
    titles = {r["item_id"]: (r["title"], r["category"]) for r in items.collect()}
    users = []
    for uid in sample:
        hist = profiles.where(F.col("user_id") == uid).select("history").first()["history"][-5:]
        top = recs.where(F.col("user_id") == uid).orderBy("rank").collect()
        users.append({
            "user_id": uid,
            "recent_history": [{"item_id": h["item_id"], "event_type": h["event_type"],
                                "title": titles.get(h["item_id"], ("?", ""))[0], "ts": str(h["ts"])} for h in hist],
            "recommendations": [{"rank": r["rank"], "item_id": r["item_id"], "title": titles.get(r["item_id"], ("?", ""))[0],
                                 "score": round(float(r["score"]), 4), "reason_item_id": r["reason_item_id"],
                                 "reason": f"because of {titles.get(r['reason_item_id'], ('?', ''))[0]}"} for r in top],
        })
    model, pop = m["model"], m["popularity"]
    return {
        "lakehouse": str(cfg.lakehouse.root_path),
        "tables": tables,
        "mlflow": {
            "tracking_uri": cfg.tracking_uri,
            "run_id": train_report["run_id"],
            "model_name": cfg.tracking.model_name,
            "model_version": train_report.get("model_version"),
            "epochs_run": train_report.get("epochs_run"),
            "best_epoch": train_report.get("best_epoch"),
        },
        "metrics": {"model": model, "popularity": pop,
                    "ndcg_at_10_lift": (model["ndcg_at_10"] / pop["ndcg_at_10"]) if pop["ndcg_at_10"] else None},
        "sample_users": users,
    }


def render(s: dict[str, Any]) -> str:
    lines = ["", "=" * 78, "recsys demo: what came out", "=" * 78, f"Lakehouse: {s['lakehouse']}", "", "Delta tables (rows):"]
    for name, t in s["tables"].items():
        extra = ""
        if "quarantined" in t:
            extra = f"   (quarantined {t['quarantined']}, duplicates dropped {t['duplicates']})"
        lines.append(f"  {name:<18} {t['rows']:>9,}{extra}")
    ml = s["mlflow"]
    lines += ["", f"MLflow run {ml['run_id']}  ->  model '{ml['model_name']}' version {ml['model_version']}"
                  f"  ({ml['epochs_run']} epochs, best {ml['best_epoch']})"]
    m = s["metrics"]
    lines += ["", "Test items, full-catalogue ranking, history masked:",
              f"  {'':<12}{'HR@10':>8}{'NDCG@10':>9}{'HR@20':>8}{'NDCG@20':>9}{'MRR':>8}"]
    for name in ("model", "popularity"):
        x = m[name]
        lines.append(f"  {name:<12}{x['hr_at_10']:>8.4f}{x['ndcg_at_10']:>9.4f}{x['hr_at_20']:>8.4f}{x['ndcg_at_20']:>9.4f}{x['mrr']:>8.4f}")
    if m.get("ndcg_at_10_lift"):
        lines.append(f"  NDCG@10 lift over most-popular: {m['ndcg_at_10_lift']:.2f}x")
    for u in s["sample_users"]:
        lines += ["", f"User {u['user_id']}: recent history"]
        for h in u["recent_history"]:
            lines.append(f"    {h['event_type']:<12} {h['item_id']}  {h['title']}")
        lines.append("  top-10 recommendations")
        for r in u["recommendations"]:
            lines.append(f"  {r['rank']:>3}. {r['item_id']}  {r['title'][:40]:<40} {r['score']:>8.3f}  {r['reason']}")
    return "\n".join(lines)
