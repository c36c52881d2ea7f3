"""``recsys report``: one self-contained HTML page of the latest run, for people to look at.

Spark collects small aggregates only (counts per table, per event type, per item, a dozen
users); everything else is plain Python: :mod:`recsys.htmlreport.charts` draws them as inline
SVG and ``templates/report.html.j2`` lays them out. The page is written to
``<lakehouse root>/_reports/report.html`` (any URI Spark can write) and logged to the MLflow run
that trained the model behind the latest recommendations.

A table that does not exist yet leaves its section saying so; the report never fails for it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import storage
from recsys.config import Config
from recsys.reports import StepTimer, write_named
from recsys.tables import read_table, table_exists

log = logging.getLogger(__name__)

FILENAME = "report.html"
SECTIONS = ("tables", "funnel", "long-tail", "training", "evaluation", "gallery", "audiences", "search")
FUNNEL = ("view", "click", "add_to_cart", "purchase")
TRAINING_METRICS = ("train_loss", "val_ndcg_at_10", "val_hr_at_10")
GALLERY_USERS = 12  # a third long histories, a third around the median, a third the shortest
HISTORY_STEPS = 8


def report(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Build the HTML report, write it to ``_reports/report.html`` and log it to MLflow.

    Returns ``{"uri", "mlflow_run_id", "mlflow", "sections", "bytes", "seconds"}``: where the
    page went, the run it was logged to (None, with ``mlflow`` saying why, when there is no
    run), each section's state ("ok" or "not built yet") and the timings of the steps."""
    timer = StepTimer()
    data = collect(spark, cfg, timer)
    html = render(data)
    timer.done("render")
    uri = write_named(cfg, FILENAME, html)
    timer.done("write")
    run_id, how = log_to_mlflow(cfg, html, data["header"]["mlflow_run_id"])
    timer.done("mlflow")
    return {
        "uri": uri,
        "mlflow_run_id": run_id,
        "mlflow": how,
        "sections": [{"id": s, "state": data[s]["state"]} for s in SECTIONS],
        "bytes": len(html.encode("utf-8")),
        "seconds": timer.seconds,
    }


def render(data: dict[str, Any]) -> str:
    """The page for ``data`` (what :func:`collect` returns)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("recsys.htmlreport", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=0: "" if v is None else f"{v:,.{digits}f}"
    # "long-tail" is the section's id in the page, ``long_tail`` its name in the template.
    return env.get_template("report.html.j2").render(sections=SECTIONS, **{k.replace("-", "_"): v for k, v in data.items()})


# --- collecting ---------------------------------------------------------------------------

def collect(spark: SparkSession, cfg: Config, timer: StepTimer | None = None) -> dict[str, Any]:
    """Every section's data as plain dicts and lists (charts already drawn as SVG strings)."""
    from recsys.htmlreport import charts

    timer = timer or StepTimer()
    exists = {name: table_exists(cfg, name, spark) for name in table_names(cfg)}
    data: dict[str, Any] = {}
    data["header"] = header(spark, cfg, exists)
    timer.done("header")
    run_id = data["header"]["mlflow_run_id"]
    steps = (("tables", lambda: tables_section(spark, cfg, exists, charts)),
             ("funnel", lambda: funnel_section(spark, cfg, exists, charts)),
             ("long-tail", lambda: long_tail_section(spark, cfg, exists, sizes(data), charts)),
             ("training", lambda: training_section(cfg, run_id, charts)),
             ("evaluation", lambda: evaluation_section(spark, cfg, run_id, charts)),
             ("gallery", lambda: gallery_section(spark, cfg, exists, data["header"]["run_date"])),
             ("audiences", lambda: audiences_section(spark, cfg, exists)),
             ("search", lambda: search_section(spark, cfg, exists)))
    for name, fn in steps:
        data[name] = fn()
        timer.done(name)
    return data


def table_names(cfg: Config) -> list[str]:
    """The Delta tables of the config (``audiences`` included once the config has it)."""
    return [f.name for f in dataclasses.fields(cfg.tables)]


def sizes(data: dict[str, Any]) -> dict[str, int]:
    """Rows per table, as the tables section counted them."""
    return {r["name"]: r["rows"] for r in data.get("tables", {}).get("rows", [])}


def _missing(*names: str) -> dict[str, Any]:
    return {"state": "not built yet", "missing": list(names)}


def header(spark: SparkSession, cfg: Config, exists: dict[str, bool]) -> dict[str, Any]:
    """The lakehouse, the latest recommendations' run date and model version, and the MLflow
    run that trained that version (else the champion's)."""
    run_date = version = None
    if exists.get("recommendations"):
        row = read_table(spark, cfg, "recommendations").select("run_date", "model_version") \
            .orderBy(F.desc("run_date")).limit(1).first()
        if row is not None and row["run_date"] is not None:
            run_date = row["run_date"].isoformat()
            version = None if row["model_version"] is None else str(row["model_version"])
    run_id, version = training_run(cfg, version)
    return {"lakehouse": cfg.lakehouse.root_uri, "run_date": run_date, "model_name": cfg.tracking.model_name,
            "model_version": version, "mlflow_run_id": run_id, "tracking_uri": cfg.tracking_uri,
            "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


def training_run(cfg: Config, version: str | None) -> tuple[str | None, str | None]:
    """``(run id, model version)`` of the run that trained ``version`` (else the champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.tracking import registered_version, setup_from_config

    setup_from_config(cfg)
    if version is not None:
        try:
            return mlflow.MlflowClient().get_model_version(cfg.tracking.model_name, version).run_id, version
        except MlflowException:
            log.warning("model %s version %s not found in %s", cfg.tracking.model_name, version, cfg.tracking_uri)
    mv = registered_version(cfg, cfg.tracking.alias)
    return (mv.run_id, str(mv.version)) if mv is not None else (None, version)


def tables_section(spark: SparkSession, cfg: Config, exists: dict[str, bool], charts) -> dict[str, Any]:
    names = [n for n in table_names(cfg) if exists[n]]
    # A Delta count is answered from the table's log; its cost is the latency of loading each
    # log, which a few threads overlap (Spark runs jobs from several threads at once).
    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(lambda n: read_table(spark, cfg, n).count(), names))
    rows = [{"name": n, "location": cfg.table_path(n), "rows": c} for n, c in zip(names, counts)]
    if not rows:
        return _missing("events")
    out: dict[str, Any] = {"state": "ok", "rows": rows,
                           "chart": charts.bars([r["name"] for r in rows], [r["rows"] for r in rows],
                                                "Rows per Delta table", log=True, xlabel="rows (log scale)"),
                           "quarantine": [], "quarantine_chart": None}
    if exists.get("quarantine"):
        q = [r.asDict() for r in read_table(spark, cfg, "quarantine").groupBy("source", "rule").count()
             .orderBy(F.desc("count"), "source", "rule").collect()]
        out["quarantine"] = q
        if q:
            out["quarantine_chart"] = charts.bars([f"{r['source']}: {r['rule']}" for r in q], [r["count"] for r in q],
                                                  "Quarantined rows by reason", color=charts.PALETTE[3])
    return out


def funnel_section(spark: SparkSession, cfg: Config, exists: dict[str, bool], charts) -> dict[str, Any]:
    if not exists.get("events"):
        return _missing("events")
    got = {r["event_type"]: r for r in read_table(spark, cfg, "events").groupBy("event_type")
           .agg(F.count("*").alias("events"), F.countDistinct("user_id").alias("users")).collect()}
    steps = []
    for i, t in enumerate(FUNNEL):
        events, users = (got[t]["events"], got[t]["users"]) if t in got else (0, 0)
        prev = steps[i - 1]["users"] if i else None
        steps.append({"type": t, "events": events, "users": users,
                      "users_of_previous": None if not prev else users / prev})
    searches = got.get("search")
    return {"state": "ok", "steps": steps,
            "searches": None if searches is None else {"events": searches["events"], "users": searches["users"]},
            "chart": charts.funnel([s["type"] for s in steps], [s["events"] for s in steps], [s["users"] for s in steps])}


def long_tail_section(spark: SparkSession, cfg: Config, exists: dict[str, bool], sizes: dict[str, int],
                      charts) -> dict[str, Any]:
    if not exists.get("events"):
        return _missing("events")
    counts = sorted((r["n"] for r in read_table(spark, cfg, "events").where(F.col("event_type").isin(*FUNNEL))
                     .groupBy("item_id").agg(F.count("*").alias("n")).collect()), reverse=True)
    if not counts:
        return {"state": "ok", "n_items": 0, "interactions": 0, "shares": [], "chart": None}
    total = sum(counts)
    shares = [{"top": f"{p:.0%}", "items": max(1, round(len(counts) * p)),
               "share": sum(counts[:max(1, round(len(counts) * p))]) / total} for p in (0.01, 0.1, 0.2, 0.5)]
    catalogue = sizes.get("catalog")
    return {"state": "ok", "n_items": len(counts), "interactions": total, "catalogue": catalogue, "shares": shares,
            "median": counts[len(counts) // 2], "max": counts[0], "chart": charts.long_tail(counts)}


def training_section(cfg: Config, run_id: str | None, charts) -> dict[str, Any]:
    if run_id is None:
        return {"state": "not built yet", "missing": ["a trained model in MLflow"]}
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    history = {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in TRAINING_METRICS}
    epochs = sorted({e for h in history.values() for e in h})
    if not epochs:
        return {"state": "not built yet", "missing": [f"per-epoch metrics of run {run_id}"]}
    series = {k: [h.get(e) for e in epochs] for k, h in history.items() if h}
    rows = [{"epoch": e, **{k: history[k].get(e) for k in TRAINING_METRICS}} for e in epochs]
    m = run.data.metrics
    return {"state": "ok", "run_id": run_id, "run_name": run.info.run_name, "rows": rows, "metrics": TRAINING_METRICS,
            "best_epoch": m.get("best_epoch"), "best": m.get("best_val_ndcg_at_10"),
            "stopped_by": run.data.tags.get("stopped_by"), "chart": charts.training(epochs, series)}


def evaluation_metrics(spark: SparkSession, cfg: Config, run_id: str | None) -> tuple[dict[str, dict], str]:
    """``(scorer -> metric -> value, where from)``: the newest ``evaluate-*.json`` report, else
    the ``test_<scorer>_<metric>`` metrics of the training run."""
    reports = [f for f in storage.list_files(cfg.lakehouse.reports_uri, spark)
               if f.name.startswith("evaluate-") and f.name.endswith(".json")]
    if reports:
        newest = max(reports, key=lambda f: f.name)  # the name ends in a UTC timestamp
        got = json.loads(storage.read_text(newest.uri, spark))
        if got.get("metrics"):
            versions = f"model version {got.get('model_version') or '-'}, champion {got.get('champion_version') or '-'}"
            return got["metrics"], f"{newest.uri} ({versions})"
    if run_id is None:
        return {}, ""
    import mlflow

    out: dict[str, dict] = {}
    for key, value in mlflow.MlflowClient().get_run(run_id).data.metrics.items():
        parts = key.split("_", 2)
        if len(parts) == 3 and parts[0] == "test" and not key.startswith("test_unmasked_"):
            scorer, metric = parts[1], parts[2]
            out.setdefault(scorer, {})[metric] = value
    return out, f"MLflow run {run_id}" if out else ""


def evaluation_section(spark: SparkSession, cfg: Config, run_id: str | None, charts) -> dict[str, Any]:
    metrics, source = evaluation_metrics(spark, cfg, run_id)
    if not metrics:
        return {"state": "not built yet", "missing": ["the evaluate stage's metrics"]}
    names = sorted({k for m in metrics.values() for k in m})
    ks = sorted({int(k.rsplit("_", 1)[1]) for k in names if k.startswith(("ndcg_at_", "hr_at_"))})
    columns = [c for k in ks for c in (f"hr_at_{k}", f"ndcg_at_{k}")] + [c for c in ("mrr",) if c in names]
    label = lambda c: c.replace("ndcg_at_", "NDCG@").replace("hr_at_", "HR@").replace("mrr", "MRR")  # noqa: E731
    order = sorted(metrics, key=lambda s: (s != "model", s != "champion", s))
    series = {s: [metrics[s].get(c) or 0.0 for c in columns] for s in order}
    return {"state": "ok", "source": source, "columns": [{"key": c, "label": label(c)} for c in columns],
            "rows": [{"scorer": s, "values": [metrics[s].get(c) for c in columns]} for s in order],
            "chart": charts.grouped_bars([label(c) for c in columns], series,
                                         "The model against the baselines (test items, full catalogue)")}


def _items(spark: SparkSession, cfg: Config, exists: dict[str, bool], ids: set[str]) -> dict[str, dict]:
    """``item_id -> {title, category, price}`` for ``ids``, from the catalogue."""
    if not ids or not exists.get("catalog"):
        return {}
    rows = read_table(spark, cfg, "catalog").where(F.col("item_id").isin(*sorted(ids))) \
        .select("item_id", "title", "category", "brand", "price").collect()
    return {r["item_id"]: r.asDict() for r in rows}


def sample_users(profiles: DataFrame, n: int = GALLERY_USERS) -> DataFrame:
    """``n`` users with their newest steps, always the same ones for the same table: a third
    with the longest histories, a third of shoppers with a few steps picked by a hash of their
    id, and the shortest histories (new shoppers); more of each than needed, as a user can be
    in two groups. Columns kind, user_id, n_steps, history (newest steps), sort (within a kind)."""
    third = max(1, n // 3)
    cols = ["user_id", "n_steps", F.slice("history", -HISTORY_STEPS, HISTORY_STEPS).alias("history")]

    def pick(kind: str, df: DataFrame, order: Column, k: int) -> DataFrame:
        return df.select(F.lit(kind).alias("kind"), *cols, order.cast("long").alias("sort")) \
            .orderBy("sort", "user_id").limit(k)

    return (pick("long history", profiles, -F.col("n_steps"), third)
            .unionByName(pick("typical", profiles.where(F.col("n_steps") >= 3), F.xxhash64("user_id"), 2 * third))
            .unionByName(pick("short or new", profiles, F.col("n_steps"), n)))


def gallery_section(spark: SparkSession, cfg: Config, exists: dict[str, bool], run_date: str | None) -> dict[str, Any]:
    if not exists.get("user_profiles"):
        return _missing("user_profiles")
    sampled = sample_users(read_table(spark, cfg, "user_profiles")).collect()
    chosen: dict[str, Any] = {}
    for kind, k in (("long history", GALLERY_USERS // 3), ("typical", GALLERY_USERS // 3), ("short or new", GALLERY_USERS)):
        mine = sorted((r for r in sampled if r["kind"] == kind and r["user_id"] not in chosen),
                      key=lambda r: (r["sort"], r["user_id"]))
        for r in mine[:min(k, GALLERY_USERS - len(chosen))]:
            chosen[r["user_id"]] = r
    ids = list(chosen)
    item_cols = ["item_id", "title", "category", "brand", "price"]
    catalog = read_table(spark, cfg, "catalog").select(*item_cols) if exists.get("catalog") else None
    recs: dict[str, list] = {u: [] for u in ids}
    if exists.get("recommendations") and run_date and ids:
        df = read_table(spark, cfg, "recommendations").where(
            (F.col("run_date") == F.lit(run_date).cast("date")) & F.col("user_id").isin(*ids)
        ).select("user_id", "rank", "item_id", "score", "reason", "source")
        if catalog is not None:
            df = df.join(catalog, "item_id", "left")
        for r in df.orderBy("user_id", "rank").collect():
            recs[r["user_id"]].append(r.asDict())
    history = {u: [h.asDict() for h in (chosen[u]["history"] or [])][::-1] for u in ids}
    items = _items(spark, cfg, exists, {h["item_id"] for hs in history.values() for h in hs})
    blank = {"title": "?", "category": "", "brand": "", "price": None}
    users = []
    for uid, row in chosen.items():
        users.append({
            "user_id": uid, "kind": row["kind"], "steps": row["n_steps"],
            "history": [{**blank, **items.get(h["item_id"], {}), "event_type": h["event_type"],
                         "ts": h["ts"].strftime("%Y-%m-%d %H:%M") if h["ts"] else ""} for h in history[uid]],
            "recommendations": [{**blank, **{k: v for k, v in r.items() if v is not None or k == "score"}}
                                for r in recs[uid]],
        })
    return {"state": "ok", "users": users, "run_date": run_date, "history_steps": HISTORY_STEPS}


def audiences_section(spark: SparkSession, cfg: Config, exists: dict[str, bool]) -> dict[str, Any]:
    # getattr: the audiences table joins the config with its stage; before that it is "not built".
    if not getattr(cfg.tables, "audiences", None) or not exists.get("audiences"):
        return _missing("audiences")
    df = read_table(spark, cfg, "audiences")
    latest = df.agg(F.max("run_date")).first()[0] if "run_date" in df.columns else None
    if latest is not None:
        df = df.where(F.col("run_date") == F.lit(latest))
    by_type = [r.asDict() for r in df.groupBy("target_type").agg(
        F.countDistinct("target").alias("targets"), F.count("*").alias("rows"), F.min("target").alias("first"))
        .orderBy("target_type").collect()]
    # The first target of each type (by name): its top five users.
    wanted = [(r["target_type"], r["first"]) for r in by_type]
    cols = [c for c in ("target_type", "target", "rank", "user_id", "score", "reason") if c in df.columns]
    cond = F.lit(False)
    for t, x in wanted:
        cond = cond | ((F.col("target_type") == t) & (F.col("target") == x))
    rows = [r.asDict() for r in df.where(cond & (F.col("rank") <= 5)).select(*cols)
            .orderBy("target_type", "target", "rank").collect()]
    return {"state": "ok", "run_date": None if latest is None else latest.isoformat(), "by_type": by_type,
            "rows": rows, "columns": cols}


def search_section(spark: SparkSession, cfg: Config, exists: dict[str, bool]) -> dict[str, Any]:
    if not exists.get("searches"):
        return _missing("searches", "search_results")
    searches = read_table(spark, cfg, "searches")
    stats = searches.agg(F.count("*").alias("searches"), F.countDistinct("user_id").alias("users"),
                         F.countDistinct("query_norm").alias("queries"),
                         F.avg((F.col("n_engaged") > 0).cast("double")).alias("engaged")).first().asDict()
    top = [r.asDict() for r in searches.groupBy("query_norm").agg(F.count("*").alias("searches"),
                                                                 F.countDistinct("user_id").alias("users"))
           .orderBy(F.desc("searches"), "query_norm").limit(10).collect()]
    out: dict[str, Any] = {"state": "ok", "stats": stats, "top_queries": top, "results": [], "results_state": "not built yet"}
    if exists.get("search_results"):
        results = read_table(spark, cfg, "search_results")
        picked = results.select("search_id").distinct().orderBy("search_id").limit(3)
        df = results.where(F.col("rank") <= 5).join(F.broadcast(picked), "search_id") \
            .select("search_id", "query_norm", "rank", "item_id", "score", "reason")
        if exists.get("catalog"):
            df = df.join(read_table(spark, cfg, "catalog").select("item_id", "title", "category"), "item_id", "left")
        rows = [r.asDict() for r in df.orderBy("search_id", "rank").collect()]
        for sid in dict.fromkeys(r["search_id"] for r in rows):
            mine = [{"title": "?", "category": "", **{k: v for k, v in r.items() if v is not None or k == "score"}}
                    for r in rows if r["search_id"] == sid]
            out["results"].append({"search_id": sid, "query": mine[0]["query_norm"], "rows": mine})
        out["results_state"] = "ok"
    return out


# --- MLflow ---------------------------------------------------------------------------------

def log_to_mlflow(cfg: Config, html: str, run_id: str | None) -> tuple[str | None, str]:
    """Log the page as ``report/report.html`` of ``run_id``, else of the experiment's newest run.

    Returns ``(run id, what happened)``; ``(None, why)`` when there is no run at all."""
    import mlflow

    from recsys.tracking import setup_from_config

    experiment_id = setup_from_config(cfg)
    client = mlflow.MlflowClient()
    how = "the training run of the scored model"
    if run_id is None:
        runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            return None, f"not logged: no MLflow run in experiment '{cfg.tracking.experiment}'"
        run_id, how = runs[0].info.run_id, "the newest run of the experiment"
    client.log_text(run_id, html, f"report/{FILENAME}")
    return run_id, f"logged to {how}"
