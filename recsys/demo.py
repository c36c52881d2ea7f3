"""``recsys demo``: every pipeline stage of the registry in order on generated shop data,
then a readable summary of what came out, for the metrics, K values, baselines and top-K
that were configured.

The summary is printed and written to ``<lakehouse root>/_reports/demo.json``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys import stages
from recsys.config import Config, replace
from recsys.reports import write_named
from recsys.tables import read_table, table_exists

log = logging.getLogger(__name__)

TABLES = ("events", "catalog", "users", "quarantine", "user_profiles", "item_profiles", "training_examples",
          "item_text_embeddings", "recommendations", "searches", "query_stats", "query_suggestions", "search_results",
          "audiences")


def demo(cfg: Config, spark: SparkSession | None = None, sample_users: int = 2) -> dict[str, Any]:
    """Run every pipeline stage of the registry in order on a freshly generated shop (ingest
    as a full refresh); print and return the summary (also written to ``_reports/demo.json``)."""
    from recsys.spark import get_spark

    cfg = replace(cfg, "ingest.full_refresh=true")  # the generated files replace what was there
    spark = spark or get_spark(cfg)
    timings: dict[str, float] = {}
    reports: dict[str, dict[str, Any]] = {}
    for stage in stages.pipeline(cfg):
        log.info("stage %s ...", stage.name)
        t = time.time()
        reports[stage.name] = stages.run_stage(stage.name, cfg, spark)
        timings[stage.name] = round(time.time() - t, 1)
        log.info("stage %s done in %.1fs", stage.name, timings[stage.name])

    summary = summarise(spark, cfg, reports, sample_users=sample_users)
    if "train-search-ranker" in reports:
        summary["search"] = search_sample(spark, cfg, reports)
    if "audiences" in reports:
        summary["audience"] = audience_sample(spark, cfg, reports["audiences"])
    summary["report"] = (reports.get("report") or {}).get("uri")
    summary["generator"] = reports.get("generate")
    summary["timings_seconds"] = timings
    uri = write_named(cfg, "demo.json", json.dumps(summary, indent=2, default=str))
    print(render(summary))
    print(f"\nSummary written to {uri}")
    if summary["report"]:
        print(f"Report (open it in a browser): {summary['report']}")
    return summary


def audience_sample(spark: SparkSession, cfg: Config, report: dict[str, Any], users: int = 5) -> dict[str, Any]:
    """The first audience the stage built: its target and its best ``users`` users."""
    first = report["targets"][0]
    kind, key = first["target"].split(":", 1)
    rows = (read_table(spark, cfg, "audiences")
            .where((F.col("run_date") == F.lit(report["run_date"]).cast("date")) & (F.col("target_type") == kind)
                   & (F.col("target") == key)).orderBy("rank").limit(users).collect())
    return {"target": first["target"], "name": first["name"], "size": first["users"],
            "targets": [t["target"] for t in report["targets"]],
            "users": [{"rank": r["rank"], "user_id": r["user_id"], "probability": r["probability"], "reason": r["reason"]}
                      for r in rows]}


def summarise(spark: SparkSession, cfg: Config, reports: dict[str, dict[str, Any]],
              sample_users: int = 2) -> dict[str, Any]:
    """The demo's summary from the stages' ``reports`` (by stage name) and the tables."""
    ingest_report, train_report = reports["ingest"], reports["train"]
    eval_report, rec_report = reports["evaluate"], reports["recommend"]
    tables = {name: {"rows": read_table(spark, cfg, name).count()} for name in TABLES
              if table_exists(cfg, name, spark)}
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
                                 "score": None if r["score"] is None else round(float(r["score"]), 4),
                                 "reason_item_id": r["reason_item_id"], "reason": r["reason"], "source": r["source"]}
                                for r in top],
        })
    baselines = [name for name in m if name != "model"]
    first = baselines[0] if baselines else None
    k = 10 if 10 in cfg.evaluation.ks else max(cfg.evaluation.ks)
    key = f"ndcg_at_{k}"
    lift = m["model"][key] / m[first][key] if first and "model" in m and m[first][key] else None
    return {
        "lakehouse": cfg.lakehouse.root_uri,
        "tables": tables,
        "mlflow": {
            "tracking_uri": cfg.tracking_uri,
            "run_id": train_report["run_id"],
            "model_name": cfg.tracking.model_name,
            "model_version": train_report.get("model_version"),
            "epochs_run": train_report.get("epochs_run"),
            "best_epoch": train_report.get("best_epoch"),
            "promotion": {k: reports["promote"].get(k) for k in ("decision", "reason", "champion_after")}
            if "promote" in reports else None,
        },
        "metrics": m,
        "ks": list(cfg.evaluation.ks),
        "lift": {"over": first, "metric": f"NDCG@{k}", "ratio": lift} if lift is not None else None,
        "top_k": cfg.scoring.top_k,
        "sample_users": users,
    }


def search_sample(spark: SparkSession, cfg: Config, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One shopper's search and suggestion, personalised and not, next to the ranker's figures.

    The shopper is the one with the most searches among the raw ids of the landing's users
    file, looked up by pseudonym exactly as ``recsys search --user`` does."""
    from recsys.search.engine import UserState
    from recsys.search.service import load_engine, user_key

    engine, users, info = load_engine(spark, cfg)
    raw = [r["user_id"] for r in spark.read.json(f"{cfg.lakehouse.landing_uri}/users").select("user_id").collect()
           if r["user_id"]]
    by_key = {user_key(cfg, u): u for u in raw}
    ranked = sorted((u for u in users.queries if u in by_key and u in users.steps),
                    key=lambda u: (-len(users.queries[u]), by_key[u]))
    out: dict[str, Any] = {"ranker": reports["train-search-ranker"].get("valid"), **info}
    if not ranked:
        return out
    uid = ranked[0]
    state = users.state(engine, uid)
    anonymous = UserState(known=False)
    # Their newest query that popular queries complete from its first letters (else their newest).
    typed = [q for _, q in reversed(users.queries[uid])]
    query = next((q for q in typed if engine.complete(q[:3])[1]), typed[0])
    k = min(cfg.search.top_k, 5)
    prefix = query[:3]
    out.update({
        "user": by_key[uid], "query": query, "prefix": prefix,
        "personalised": engine.search(query, state, k).items, "anonymous": engine.search(query, anonymous, k).items,
        "suggest_personalised": engine.suggest(prefix, state, k)["suggestions"],
        "suggest_popular": engine.suggest(prefix, anonymous, k)["suggestions"],
    })
    return out


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
    if ml.get("promotion"):
        p = ml["promotion"]
        lines.append(f"Promotion: {p['decision']} ({p['reason']}); champion is version {p['champion_after']}")
    m, ks = s["metrics"], s["ks"]
    header = "".join(f"{f'HR@{k}':>9}{f'NDCG@{k}':>9}" for k in ks) + f"{'MRR':>8}"
    lines += ["", "Test items, full-catalogue ranking, history masked:", f"  {'':<14}{header}"]
    for name, x in m.items():
        cells = "".join(f"{x[f'hr_at_{k}']:>9.4f}{x[f'ndcg_at_{k}']:>9.4f}" for k in ks)
        lines.append(f"  {name:<14}{cells}{x['mrr']:>8.4f}")
    if s.get("lift"):
        lines.append(f"  {s['lift']['metric']} lift over {s['lift']['over']}: {s['lift']['ratio']:.2f}x")
    for u in s["sample_users"]:
        lines += ["", f"User {u['user_id']}: recent history"]
        for h in u["recent_history"]:
            lines.append(f"    {h['event_type']:<12} {h['item_id']}  {h['title']}")
        lines.append(f"  top-{s['top_k']} recommendations")
        for r in u["recommendations"]:
            score = "" if r["score"] is None else f"{r['score']:.3f}"
            lines.append(f"  {r['rank']:>3}. {r['item_id']}  {r['title'][:40]:<40} {score:>8}  {r['reason']}")
    if s.get("search"):
        lines += render_search_sample(s["search"])
    if s.get("audience"):
        a = s["audience"]
        kind, key = a["target"].split(":", 1)
        lines += ["", f"Audience of {kind} {a['name']!r}: the {a['size']} users most likely to engage with it next"
                      f"   (recsys audiences --{kind} \"{key}\")"]
        for u in a["users"]:
            lines.append(f"  {u['rank']:>3}. {u['user_id'][:20]:<20} p={u['probability']:.4f}  {u['reason']}")
        lines.append(f"  audiences built: {', '.join(a['targets'])}")
    return "\n".join(lines)


def render_search_sample(x: dict[str, Any]) -> list[str]:
    lines = ["", "Search ranker (validation: the last days' searches, graded NDCG@10 / MRR):"]
    for name, m in (x.get("ranker") or {}).items():
        lines.append(f"  {name:<12} {m['ndcg@10']:.4f} / {m['mrr']:.4f}")
    if not x.get("user"):
        return lines
    lines += ["", f"Search {x['query']!r} for user {x['user']}   (recsys search --user {x['user']} --query \"{x['query']}\")",
              f"  {'personalised':<52}| not personalised"]
    for a, b in zip(x["personalised"], x["anonymous"]):
        lines.append(f"  {a['rank']:>2}. {a['title'][:34]:<34} {a['reason'][:13]:<13} | {b['title'][:34]}")
    lines += ["", f"Suggestions for {x['prefix']!r}   (recsys suggest --user {x['user']} --prefix \"{x['prefix']}\")",
              f"  {'personalised':<36}| most popular"]
    for i in range(max(len(x["suggest_personalised"]), len(x["suggest_popular"]))):
        a = x["suggest_personalised"][i]["query"] if i < len(x["suggest_personalised"]) else ""
        b = x["suggest_popular"][i]["query"] if i < len(x["suggest_popular"]) else ""
        lines.append(f"  {i + 1:>2}. {a:<32}| {b}")
    return lines
