"""The whole pipeline on tiny generated data, with the real Spark, Delta, petastorm,
TorchDistributor (2 processes) and MLflow. Also: the notebook and the CLI's error lines."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from pyspark.sql import functions as F

from recsys.demo import demo, render
from recsys.forget import USER_COLUMNS, forget_user
from recsys.privacy import pseudonymise, resolve_key
from recsys.scoring.batch import recommend
from recsys.tables import read_table

from ..conftest import ROOT, make_config

pytestmark = pytest.mark.e2e

TINY = ["generator.users=250", "generator.items=120", "generator.days=14", "generator.malformed_rate=0.02",
        "train.epochs=2", "train.patience=5", "model.hidden=32", "features.max_seq_len=20"]


@pytest.fixture(scope="module")
def demo_run(spark, tmp_path_factory):
    """One demo run for the module, and a copy of its lakehouse taken before any test changes it."""
    base = tmp_path_factory.mktemp("demo")
    # Not the defaults the summary once hard-coded: other K values, another first baseline, top-5.
    cfg = make_config(base / "lh", *TINY, "scoring.run_date=2026-11-01", "evaluation.ks=[5, 10]",
                      "evaluation.baselines=[cooccurrence, popularity]", "scoring.top_k=5")
    summary = demo(cfg, spark)
    shutil.copytree(cfg.lakehouse.root_path, base / "copy")
    return cfg, summary, base / "copy"


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


def test_notebook_runs_as_plain_python(spark, demo_run, monkeypatch):
    """The notebook on the lakehouse the demo left (a copy), without generating data: the way
    it runs on a shop's own tables. Ingestion and profiles find nothing new; training, the
    evaluation and the recommendations run again, and the time budget cuts training short."""
    import mlflow

    demo_cfg, _, root = demo_run
    monkeypatch.setenv("RECSYS_CONFIG", str(ROOT / "conf" / "local.yaml"))
    monkeypatch.setenv("RECSYS_GENERATE", "false")
    # A time budget far below one epoch: training stops within its first epoch, on every rank.
    monkeypatch.setenv("RECSYS_OVERRIDES", " ".join([f"lakehouse.root={root}",
                                                      f"lakehouse.landing={demo_cfg.lakehouse.landing_path}",
                                                      *TINY, "train.epochs=5", "train.max_minutes=0.001",
                                                      "train.batch_size=64", "train.warm_start=champion"]))
    nb = ROOT / "notebooks" / "recsys_pipeline.py"
    assert nb.read_text().splitlines()[0] == "# Databricks notebook source"
    runpy.run_path(str(nb), run_name="__main__")
    cfg = make_config(root, f"lakehouse.landing={demo_cfg.lakehouse.landing_path}")
    reports = lambda kind: [json.loads(p.read_text()) for p in sorted(cfg.lakehouse.reports_path.glob(f"{kind}-*.json"))]  # noqa: E731
    assert reports("ingest")[-1]["files_read"] == 0  # every landing file was ingested by the demo
    assert reports("profiles")[-1]["mode"] == "incremental" and reports("profiles")[-1]["affected_users"] == 0
    assert reports("text_embeddings")[-1]["encoded"] == 0
    report = reports("train")[-1]
    assert (report["epochs_run"], report["stopped_by"]) == (1, "time")
    assert report["world_size"] == 2 and report["rank_batch_size"] == 32  # batch_size is the global batch
    assert report["warm_start"] == "champion version 1"  # today's model started from yesterday's
    # the notebook's model is version 2, the challenger; evaluate scored it beside champion 1 on
    # the same rows, promote decided by the rule, and today's recommendations come from the champion
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias(cfg.tracking.model_name, cfg.tracking.challenger_alias)
    assert str(mv.version) == "2" and mv.run_id == report["run_id"]
    evaluated = reports("evaluate")[-1]
    assert evaluated["model_version"] == "2" and evaluated["champion_version"] == "1"
    m = evaluated["metrics"]
    promoted = reports("promote")[-1]
    wins = (m["model"]["ndcg_at_10"] >= m["champion"]["ndcg_at_10"] - cfg.promotion.tolerance
            and m["model"]["ndcg_at_10"] > m["popularity"]["ndcg_at_10"])
    assert promoted["promoted"] is wins and promoted["champion_after"] == ("2" if wins else "1")
    champion = client.get_model_version_by_alias(cfg.tracking.model_name, cfg.tracking.alias).version
    assert str(champion) == promoted["champion_after"]
    today = reports("recommend")[-1]["run_date"]
    recs = read_table(spark, cfg, "recommendations")
    assert recs.where(F.col("run_date") == F.lit(today).cast("date")).where(f"model_version = {champion}").count() > 0
    assert recs.where("run_date = DATE'2026-11-01'").count() > 0  # the demo's run date is kept


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
    """The registered champion, the MLflow way: pyfunc.load_model, spark_udf over a Spark
    DataFrame, and `mlflow models serve` on loopback over HTTP, each give the batch job's
    recommendations (items, order, reasons, scores) for the same users."""
    import socket
    import time
    import urllib.request

    import mlflow

    from recsys.events import EVENT_TYPES

    cfg, _, _ = demo_run
    k, run_date = cfg.scoring.top_k, "2026-11-01"
    ids = {r["item_idx"]: r["item_id"] for r in read_table(spark, cfg, "item_profiles").collect()}
    users = (read_table(spark, cfg, "user_profiles").where(f"n_steps between 3 and {cfg.features.max_seq_len}")
             .orderBy("user_id").limit(4).collect())
    histories = {u["user_id"]: ([ids[i] for i in u["seq_item_idx"]], [EVENT_TYPES[t - 1] for t in u["seq_type_idx"]])
                 for u in users}
    batch = {}
    for r in (read_table(spark, cfg, "recommendations").where(f"run_date = DATE'{run_date}'")
              .where(F.col("user_id").isin(list(histories))).orderBy("user_id", "rank").collect()):
        batch.setdefault(r["user_id"], []).append((r["item_id"], r["reason_item_id"], r["score"]))
    assert sorted(batch) == sorted(histories) and all(len(v) == k for v in batch.values())

    def same(user: str, items, reasons, scores) -> None:
        assert list(items) == [b[0] for b in batch[user]], user
        assert list(reasons) == [b[1] for b in batch[user]], user
        assert list(scores) == pytest.approx([b[2] for b in batch[user]], rel=1e-4, abs=1e-4)

    uri = f"models:/{cfg.tracking.model_name}@{cfg.tracking.alias}"
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    frame = pd.DataFrame({"user_id": list(histories), "item_ids": [h[0] for h in histories.values()],
                          "event_types": [h[1] for h in histories.values()]})

    out = mlflow.pyfunc.load_model(uri).predict(frame[["item_ids", "event_types"]], params={"top_k": k})
    for user, row in zip(frame["user_id"], out.itertuples()):
        same(user, row.item_ids, row.reason_item_ids, row.scores)

    udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local", params={"top_k": k})
    scored = spark.createDataFrame(frame).withColumn("recs", udf(F.struct("item_ids", "event_types"))).collect()
    for r in scored:
        same(r["user_id"], r["recs"]["item_ids"], r["recs"]["reason_item_ids"], r["recs"]["scores"])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # `mlflow models serve` starts uvicorn from PATH: the environment's bin folder must be on it.
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, MLFLOW_TRACKING_URI=cfg.tracking_uri, MLFLOW_REGISTRY_URI=cfg.tracking_uri,
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    server = subprocess.Popen([os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", uri,
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "mlflow models serve did not answer /ping within 120 s"
            time.sleep(1)
        body = json.dumps({"dataframe_records": frame[["item_ids", "event_types"]].to_dict("records"),
                           "params": {"top_k": k}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
        for user, p in zip(frame["user_id"], predictions):
            same(user, p["item_ids"], p["reason_item_ids"], p["scores"])
    finally:
        try:
            os.killpg(server.pid, 15)
        except ProcessLookupError:
            pass  # it had already stopped (the assertion above says why)
        server.wait(timeout=30)


def test_killed_training_is_marked_failed_and_resumes_in_the_same_run(spark, demo_run, tmp_path):
    """Kill the TorchDistributor training processes midway: the MLflow run is marked FAILED with
    the error; `train --resume RUN_ID` continues it from the last epoch's checkpoint, in the
    same run, and registers the model from it."""
    import threading
    import time

    import mlflow
    import psutil

    from recsys.config import replace
    from recsys.training import checkpoints
    from recsys.training.launch import train

    demo_cfg, _, copy = demo_run
    shutil.copytree(copy, tmp_path / "lh")
    # local_mode: the ranks start from the driver (torch.distributed.run), not in a Spark barrier
    # job; the quicker start is all that differs for what is tested here.
    cfg = make_config(tmp_path / "lh", f"lakehouse.landing={demo_cfg.lakehouse.landing_path}", *TINY,
                      "train.epochs=200", "train.patience=200", "train.local_mode=true")
    before = set((tmp_path / "lh" / "_checkpoints").glob("*"))  # the demo's own run left one
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = train(spark, cfg)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    folders = lambda: [f for f in (tmp_path / "lh" / "_checkpoints").glob("*/checkpoint.json")  # noqa: E731
                       if f.parent not in before]
    deadline = time.time() + 300
    while not (folders() and json.loads(folders()[0].read_text())["epoch"] >= 2):
        assert thread.is_alive() and time.time() < deadline, outcome
        time.sleep(0.5)
    launchers = [p for p in psutil.process_iter(["cmdline"]) if "torch.distributed.run" in " ".join(p.info["cmdline"] or [])]
    ranks = [c for p in launchers for c in p.children(recursive=True)]
    assert launchers and len(ranks) >= 2  # torch's launcher and the two training processes under it
    victims = ranks + launchers
    for p in victims:
        p.kill()
    thread.join(timeout=300)
    assert "summary" not in outcome and "marked FAILED" in str(outcome["error"])

    run_id = folders()[0].parent.name
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = mlflow.MlflowClient()
    failed = client.get_run(run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["error"]
    saved = checkpoints.summary(str(folders()[0].parent))["epoch"]
    assert saved >= 2

    summary = train(spark, replace(cfg, f"train.epochs={saved + 2}"), resume_run_id=run_id)
    assert summary["run_id"] == run_id and summary["resumed_from_epoch"] == saved
    assert [e["epoch"] for e in summary["history"]] == list(range(1, saved + 3))
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and "resumed" in resumed.data.tags
    mv = client.get_model_version(cfg.tracking.model_name, summary["model_version"])
    assert mv.run_id == run_id and mv.aliases == [cfg.tracking.challenger_alias]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"training_curves.png", "sample_recommendations.json", "model_spec.json"} <= artifacts
    assert {d.dataset.name for d in resumed.inputs.dataset_inputs} >= {"training_examples", "item_profiles"}
    assert len(client.get_metric_history(run_id, "examples_per_second")) >= saved + 2
    assert len(client.get_metric_history(run_id, "lr")) >= saved + 2
