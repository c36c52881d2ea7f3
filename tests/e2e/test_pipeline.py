"""The whole pipeline on tiny generated data, with the real Spark, Delta, petastorm,
TorchDistributor (2 processes) and MLflow; the champion served in process; the CLI's error
lines. (The notebook, the HTTP model server and killed training: tests/system.)"""

from __future__ import annotations

import json
from dataclasses import replace
import os
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from recsys.demo import render
from recsys.forget import USER_COLUMNS, forget_user
from recsys.privacy import pseudonymise, resolve_key
from recsys.scoring.batch import recommend
from recsys.scoring.ranking import SOURCES
from recsys.tables import read_table

from ..conftest import ROOT
from ..pipeline import champion_cases

pytestmark = pytest.mark.e2e


def test_demo_end_to_end(spark, demo_run):
    import mlflow

    cfg, summary, _ = demo_run

    # demo.json holds what the issue promises
    saved = json.loads((cfg.lakehouse.reports_path / "demo.json").read_text())
    for key in ("events", "catalog", "users", "quarantine", "user_profiles", "item_profiles", "training_examples",
                "item_text_embeddings", "recommendations"):
        assert saved["tables"][key]["rows"] > 0, key
    for scorer in ("model", "cooccurrence", "popularity"):
        for m in ("ndcg_at_5", "hr_at_5", "ndcg_at_10", "hr_at_10"):
            assert 0.0 <= saved["metrics"][scorer][m] <= 1.0
        assert "hr_at_20" not in saved["metrics"][scorer]
    # the printed summary shows what was configured
    text = render(summary)
    assert "HR@5" in text and "NDCG@10" in text and "HR@20" not in text
    assert "top-5 recommendations" in text and "lift over cooccurrence" in text
    assert "Promotion: promoted (first model" in text
    assert all(len(u["recommendations"]) == 5 for u in summary["sample_users"])
    assert saved["mlflow"]["run_id"] and saved["mlflow"]["model_version"] == "1"

    # bad lines were generated and every one of them is in quarantine
    gen = summary["generator"]
    q = read_table(spark, cfg, "quarantine").where("source = 'events'")
    assert q.count() == gen["malformed_lines"] > 0
    assert saved["tables"]["events"]["rows"] == gen["events_written"] - gen["malformed_lines"]

    # the MLflow run: resolved config as params, per-epoch metrics, a registered model with alias
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = mlflow.MlflowClient()
    run = client.get_run(saved["mlflow"]["run_id"])
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.hidden"] == "32"
    spec = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/model_spec.json")
    assert spec["text_dim"] == 384 and spec["num_categories"] > 0  # text and side features were used
    hist = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
    assert [h.step for h in hist] == [1, 2]
    assert "test_model_ndcg_at_10" in run.data.metrics  # evaluation logged to the training run
    assert run.data.tags["stopped_by"] == "epochs"  # 2 epochs, patience 5, 30 minutes
    # trained as the challenger, made champion by promote as the first model, the decision on the version
    for alias in (cfg.tracking.challenger_alias, cfg.tracking.alias):
        mv = client.get_model_version_by_alias(cfg.tracking.model_name, alias)
        assert str(mv.version) == "1" and mv.run_id == run.info.run_id
    assert mv.tags["promotion.decision"] == "promoted" and float(mv.tags["eval.model_ndcg_at_10"]) > 0

    # recommendations: top-K per user, ranks 1..K, no purchased item, reasons from the history
    recs = read_table(spark, cfg, "recommendations")
    assert [r[0] for r in recs.select("model_version").distinct().collect()] == ["1"]  # the champion's
    k = cfg.scoring.top_k
    per_user = recs.groupBy("user_id").agg(F.count("*").alias("n"), F.countDistinct("item_id").alias("d"),
                                           F.min("rank").alias("lo"), F.max("rank").alias("hi"))
    assert per_user.where(f"n != {k} or d != {k} or lo != 1 or hi != {k}").count() == 0
    profiles = read_table(spark, cfg, "user_profiles")
    items = read_table(spark, cfg, "item_profiles").select("item_id", "item_idx")
    bought = profiles.select("user_id", F.explode("purchased_item_idx").alias("item_idx")).join(items, "item_idx")
    assert recs.join(bought, ["user_id", "item_id"]).count() == 0
    hist_items = profiles.select("user_id", F.explode("history.item_id").alias("reason_item_id")).distinct()
    assert recs.join(hist_items, ["user_id", "reason_item_id"], "left_anti").count() == 0
    ordered = recs.where("rank <= 2").groupBy("user_id").pivot("rank").agg(F.first("score"))
    assert ordered.where("`1` < `2`").count() == 0
    # every row says which path made it and why, in words; no out-of-stock item (the default rule)
    by_source = dict(recs.groupBy("source").count().collect())
    assert by_source.get("model", 0) > 0 and set(by_source) <= set(SOURCES), by_source
    model_rows = recs.where(F.col("source").startswith("model"))
    assert model_rows.where("reason_item_id IS NULL OR reason NOT RLIKE '^because you (viewed|clicked|added to "
                            "your cart|bought) .+'").count() == 0
    fill_rows = recs.where(~F.col("source").startswith("model"))
    assert fill_rows.where("score IS NOT NULL OR reason NOT LIKE 'popular in %'").count() == 0
    stock = read_table(spark, cfg, "item_profiles").select("item_id", "in_stock")
    assert stock.where("NOT in_stock").count() > 0 and recs.join(stock.where("NOT in_stock"), "item_id").count() == 0
    # a user with no event the model knows (only searches) still gets K popular items, said so
    no_history = profiles.where("n_steps = 0").select("user_id")
    if no_history.count():
        assert recs.join(no_history, "user_id").where("source NOT LIKE 'popular%'").count() == 0


    # a rerun for the same run_date replaces, never duplicates
    before = recs.count()
    recommend(spark, cfg)
    assert read_table(spark, cfg, "recommendations").count() == before

    # raw user ids never reach the tables; forget-user erases one user from every table
    raw_ids = [json.loads(l)["user_id"] for l in (cfg.lakehouse.landing_path / "users" / "users.jsonl").open()]
    assert profiles.where(F.col("user_id").isin(raw_ids[:50])).count() == 0
    victim = raw_ids[0]
    pid = pseudonymise(victim, resolve_key(cfg))
    assert read_table(spark, cfg, "events").where(F.col("user_id") == pid).count() > 0
    report = forget_user(spark, cfg, victim)
    assert report["deleted"]["events"] > 0 and report["deleted"]["recommendations"] == cfg.scoring.top_k
    for name, col in USER_COLUMNS.items():
        assert read_table(spark, cfg, name).where(F.col(col) == pid).count() == 0, name
    assert read_table(spark, cfg, "quarantine").where(F.col("raw").contains(f'"{victim}"')).count() == 0
    audit = spark.read.format("delta").load(cfg.table_path("forget_audit")).collect()
    assert [a["user_key"] for a in audit] == [pid]
    assert victim not in json.dumps([a.asDict() for a in audit], default=str)

    # The rules from config, on another run date: a denied category and one item per brand.
    top = read_table(spark, cfg, "item_profiles").groupBy("top_category").count().orderBy(F.desc("count")).first()[0]
    ruled = replace(cfg, scoring=replace(cfg.scoring, run_date="2026-11-02", max_per_brand=1,
                                         deny_categories=[top]))
    rep = recommend(spark, ruled)
    assert rep["rules"]["deny_categories"] == [top]
    day = (read_table(spark, cfg, "recommendations").where("run_date = DATE'2026-11-02'")
           .join(read_table(spark, cfg, "item_profiles").select("item_id", "brand", "top_category", "in_stock"),
                 "item_id"))
    assert day.where(F.col("top_category") == top).count() == 0 and day.where("NOT in_stock").count() == 0
    assert day.groupBy("user_id", "brand").count().where("brand IS NOT NULL AND count > 1").count() == 0
    assert day.count() > 0 and rep["rows"] == day.count()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_cli_wrong_config_key_is_one_clear_line(tmp_path):
    p = _cli("train", "--config", "conf/local.yaml", f"lakehouse.root={tmp_path}", "train.epoch=3")
    assert p.returncode == 2
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("recsys train: error: unknown config key 'train.epoch'; allowed keys here: ")
    assert "epochs" in lines[0].split("allowed keys here: ")[1].split(", ")


def test_cli_missing_input_folder_is_one_clear_line(tmp_path):
    p = _cli("ingest", "--config", "conf/local.yaml", f"lakehouse.root={tmp_path}")
    assert p.returncode == 2
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "input folder" in lines[0] and "does not exist" in lines[0]


def test_the_champion_serves_like_batch_scoring(spark, demo_run):
    """The registered champion, the MLflow way: pyfunc.load_model and spark_udf over a Spark
    DataFrame give the batch job's recommendations (items, order, reasons, scores) for the same
    users. (`mlflow models serve` over HTTP: tests/system.)"""
    import mlflow

    cfg, _, _ = demo_run
    frame, same = champion_cases(spark, cfg)
    uri = f"models:/{cfg.tracking.model_name}@{cfg.tracking.alias}"
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    k = cfg.scoring.top_k

    out = mlflow.pyfunc.load_model(uri).predict(frame[["item_ids", "event_types"]], params={"top_k": k})
    for user, row in zip(frame["user_id"], out.itertuples()):
        same(user, row.item_ids, row.reason_item_ids, row.scores)

    udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local", params={"top_k": k})
    scored = spark.createDataFrame(frame).withColumn("recs", udf(F.struct("item_ids", "event_types"))).collect()
    for r in scored:
        same(r["user_id"], r["recs"]["item_ids"], r["recs"]["reason_item_ids"], r["recs"]["scores"])


def test_search_tables_ranker_and_commands(spark, demo_run, capsys):
    """The search half on the demo's lakehouse: the tables, the ranker registered next to the
    recommender, `recsys search` and `recsys suggest` for a known and an unknown user and for
    absurd input, and the search-results batch job."""
    import mlflow

    from recsys import cli

    cfg, summary, _ = demo_run
    root = f"lakehouse.root={cfg.lakehouse.root_uri}"
    searches = read_table(spark, cfg, "searches")
    n = searches.count()
    assert n > 0 and searches.where("query_norm = '' or query_norm is null").count() == 0
    assert searches.where("n_engaged > 0").count() > n / 2  # a search is mostly followed by a view
    assert read_table(spark, cfg, "query_stats").agg(F.sum("searches")).first()[0] == n
    assert read_table(spark, cfg, "query_suggestions").count() > 0

    # the ranker: its own registered model, champion and challenger like the recommender, figures logged
    s = summary["search"]
    assert set(s["ranker"]) >= {"bm25", "embeddings", "hybrid", "ranker", "ranker_base"}
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = mlflow.MlflowClient()
    versions = {a: str(client.get_model_version_by_alias(cfg.search.ranker_model_name, a).version)
                for a in (cfg.tracking.alias, cfg.tracking.challenger_alias)}
    assert set(versions.values()) == {"1"} and s["ranker_version"] == "1"
    run = client.get_run(client.get_model_version(cfg.search.ranker_model_name, "1").run_id)
    assert run.data.metrics["valid_ranker_ndcg_at_10"] == s["ranker"]["ranker"]["ndcg@10"]

    # the demo's sample: one user's personalised results next to the anonymous ones
    k = min(cfg.search.top_k, 5)
    assert len(s["personalised"]) == len(s["anonymous"]) == k and s["suggest_popular"]
    assert {x["item_id"] for x in s["personalised"]} != {x["item_id"] for x in s["anonymous"]} or \
        [x["item_id"] for x in s["personalised"]] != [x["item_id"] for x in s["anonymous"]]

    # the commands: a known user (raw id, pseudonymised as at ingest), an unknown one, absurd input
    assert cli.main(["search", "--config", "conf/local.yaml", root, "--user", s["user"], "--query", s["query"],
                     "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert f"for user {s['user']}: personalised" in out and out.count("  — ") == 3
    assert cli.main(["search", "--config", "conf/local.yaml", root, "--user", "nobody-knows-me",
                     "--query", "\x00" + "x" * 10_000]) == 0
    out = capsys.readouterr().out
    assert "not personalised" in out and "unknown user" in out
    assert cli.main(["suggest", "--config", "conf/local.yaml", root, "--user", s["user"], "--prefix", s["prefix"]]) == 0
    out = capsys.readouterr().out
    assert f"suggest {s['prefix']!r}" in out and "personalised" in out and " searches) — " in out
    assert cli.main(["search", "--config", "conf/local.yaml", root, "--query", "!!!"]) == 0
    assert "only punctuation" in capsys.readouterr().out
    assert cli.main(["search", "--config", "conf/local.yaml", root, "--query", "mug", "--top-k", "ten"]) == 2
    assert "--top-k must be a whole number" in capsys.readouterr().err

    # search-results: every search of the newest day ranked, ranks 1..K, the ranker's version
    res = read_table(spark, cfg, "search_results")
    day = searches.agg(F.max("event_date")).first()[0]
    assert [r[0] for r in res.select("run_date").distinct().collect()] == [day]
    todo = searches.where(F.col("event_date") == day)
    assert res.select("search_id").distinct().count() == todo.count() > 0
    per = res.groupBy("search_id").agg(F.min("rank").alias("lo"), F.max("rank").alias("hi"), F.count("*").alias("n"))
    assert per.where(f"lo != 1 or hi != n or n != {cfg.search.top_k}").count() == 0
    assert [r[0] for r in res.select("ranker_version").distinct().collect()] == ["1"]


def test_items_added_after_training_are_recommended_by_their_text(spark, demo_run):
    """Cold start, the module's last test (it changes the catalogue): items added after
    training, each with the text of a popular item, get vectors from their text through the
    model's learned text projection; scoring recommends them (source new_item) and explains
    them with the user's history ("new in <category> like <title>"); they rank better for the
    users who had the original than for the others.

    The new items enter ``item_profiles`` and ``item_text_embeddings`` as build-profiles and
    embed-text add them (the next free ids, the encoder's vector of the same text: those
    stages' own tests check that), so that only scoring runs again here."""
    cfg, _, _ = demo_run
    profiles = read_table(spark, cfg, "item_profiles")
    popular = [r["item_id"] for r in profiles.where("in_stock").orderBy(F.desc("users"), "item_id").limit(4).collect()]
    new = {f"new-{i}": i for i in popular}
    top = profiles.agg(F.max("item_idx")).first()[0]
    ids = spark.createDataFrame([(n, i, top + k + 1) for k, (n, i) in enumerate(new.items())],
                                "new_id string, item_id string, new_idx int")
    fresh = (profiles.join(ids, "item_id")
             .withColumn("item_id", F.col("new_id")).withColumn("item_idx", F.col("new_idx"))
             .withColumn("popularity_rank", F.lit(None).cast("int"))
             .select(*profiles.columns))
    for c in ("views", "clicks", "carts", "purchases", "users"):
        fresh = fresh.withColumn(c, F.lit(0).cast(profiles.schema[c].dataType))
    fresh.write.format("delta").mode("append").save(cfg.table_path("item_profiles"))
    text = read_table(spark, cfg, "item_text_embeddings")
    (text.join(ids, "item_id").withColumn("item_id", F.col("new_id")).select(*text.columns)
     .write.format("delta").mode("append").save(cfg.table_path("item_text_embeddings")))

    top_k = 40  # of ~120 items: enough to see where the new ones land
    rep = recommend(spark, replace(cfg, scoring=replace(cfg.scoring, run_date="2026-11-03", top_k=top_k)))
    assert rep["new_items"] == len(new) and rep["rows_by_source"].get("new_item", 0) > 0

    recs = read_table(spark, cfg, "recommendations").where("run_date = DATE'2026-11-03'")
    added = recs.where(F.col("item_id").isin(list(new)))
    assert added.where("source LIKE 'model%'").count() == 0
    rows = added.where("source = 'new_item'").collect()
    assert rows and all(r["reason"].startswith("new in ") and " like " in r["reason"] for r in rows)
    history = {r["user_id"]: set(r["items"]) for r in read_table(spark, cfg, "user_profiles")
               .select("user_id", F.col("history.item_id").alias("items")).collect()}
    assert all(r["reason_item_id"] in history[r["user_id"]] for r in rows)
    # Where the copy of X lands (rank, top_k + 1 when not in the top-K) for users who had X and for the rest.
    ranks = {(r["user_id"], r["item_id"]): r["rank"] for r in added.collect()}
    had, rest = [], []
    for n, original in new.items():
        for user, items in history.items():
            (had if original in items else rest).append(ranks.get((user, n), top_k + 1))
    assert had and rest and sum(had) / len(had) < sum(rest) / len(rest), (sum(had) / len(had), sum(rest) / len(rest))


def test_audiences_table_command_and_evaluation(spark, demo_run, capsys):
    """The demo's audiences (the most popular items and the largest top-level categories):
    ranked by the model's probability, no item's buyers in its audience, a reason from the
    user's own history; `recsys audiences --item` replaces only that audience; the hold-out
    evaluation against popularity-by-category and ALS."""
    from recsys import cli, stages

    cfg, summary, _ = demo_run
    root = f"lakehouse.root={cfg.lakehouse.root_uri}"
    aud = read_table(spark, cfg, "audiences").where("run_date = DATE'2026-11-01'")
    items = read_table(spark, cfg, "item_profiles")
    kinds = {}
    for r in aud.select("target_type", "target").distinct().collect():
        kinds.setdefault(r["target_type"], []).append(r["target"])
    tops = items.select("top_category").distinct().count()
    assert len(kinds["item"]) == cfg.audiences.auto_items and len(kinds["category"]) == min(cfg.audiences.auto_categories, tops)
    per = aud.groupBy("target_type", "target").agg(F.max("rank").alias("hi"), F.count("*").alias("n"),
                                                   F.countDistinct("rank").alias("ranks"),
                                                   F.countDistinct("user_id").alias("users"))
    # size users each, ranks 1..size (less a user the forget-user test erased from every table)
    forgotten = read_table(spark, cfg, "forget_audit").count() if os.path.exists(cfg.table_path("forget_audit")) else 0
    size = cfg.audiences.size
    assert per.where(f"hi != {size} or users != n or ranks != n or n < {size - forgotten}").count() == 0
    rows = aud.orderBy("target_type", "target", "rank").collect()
    for a, b in zip(rows, rows[1:]):  # best first
        if (a["target_type"], a["target"]) == (b["target_type"], b["target"]):
            assert a["score"] >= b["score"]
    assert all(0 < r["probability"] <= 1 and abs(r["probability"] - 2.718281828 ** r["score"]) < 1e-6 for r in rows)
    assert {r["model_version"] for r in rows} == {summary["mlflow"]["model_version"]}
    # nobody is in the audience of an item they already bought; every reason is in the user's history
    profiles = read_table(spark, cfg, "user_profiles").join(
        items.select(F.col("item_idx"), F.col("item_id").alias("reason_item_id")), F.expr("array_contains(seq_item_idx, item_idx)"))
    joined = aud.join(profiles.select("user_id", "reason_item_id"), ["user_id", "reason_item_id"], "left_semi")
    assert joined.count() == aud.count()
    assert aud.where("reason not like 'because they %'").count() == 0
    bought = (read_table(spark, cfg, "user_profiles").select("user_id", F.explode("purchased_item_idx").alias("item_idx"))
              .join(items.select("item_idx", F.col("item_id").alias("target")), "item_idx"))
    assert aud.where("target_type = 'item'").join(bought, ["user_id", "target"]).count() == 0

    # one item's audience from the command line: 7 users, printed; the other audiences untouched
    item = kinds["item"][0]
    total, of_item = aud.count(), aud.where(f"target = '{item}'").count()
    assert cli.main(["audiences", "--config", "conf/local.yaml", root, "scoring.run_date=2026-11-01",
                     "--item", item, "--size", "7"]) == 0
    out = capsys.readouterr().out
    assert f"item:{item}" in out and out.count("because they ") == 7
    after = read_table(spark, cfg, "audiences").where("run_date = DATE'2026-11-01'")
    assert after.where(f"target = '{item}'").count() == 7
    assert after.where(f"target != '{item}'").count() == total - of_item
    assert cli.main(["audiences", "--config", "conf/local.yaml", root, "--item", "no-such-item"]) == 2
    assert "no item 'no-such-item'" in capsys.readouterr().err
    assert cli.main(["audiences", "--config", "conf/local.yaml", root, "--brand", "x", "--size", "-3"]) == 2
    assert "--size must be a positive whole number" in capsys.readouterr().err

    # the hold-out evaluation: every scorer measured on the same targets
    rep = stages.run_stage("audiences", cfg, spark, category=kinds["category"][0], size="30", evaluate=True)
    e = rep["evaluation"]
    assert e["size"] == 30 and e["item"]["targets"] > 0 and e["category"]["targets"] > 0
    for kind in ("item", "category"):
        assert set(e[kind]["scorers"]) == {"model", "popularity_by_category", "als"}
        for m in e[kind]["scorers"].values():
            assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    # a category audience of 30 among ~250 users: the model finds more buyers than chance would
    chance = e["category"]["buyers"] / e["category"]["targets"] / e["rows"]
    assert e["category"]["scorers"]["model"]["precision"] > chance
