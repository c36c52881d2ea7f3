"""System tests (`make test-system`, also run by CI): the Databricks notebook as a plain
Python file, the champion behind `mlflow models serve` over HTTP, and training processes
killed midway and resumed. Each starts real processes beside the shared Spark session; they
share one pipeline run (the demo on tiny data) for the module."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from recsys.tables import read_table

from ..conftest import ROOT, TINY, make_config
from ..pipeline import champion_cases

pytestmark = pytest.mark.system


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
    # the search half: nothing new to build; the ranker's second version gated against the first
    built = reports("search_tables")[-1]
    assert built["mode"] == "incremental" and built["affected_sessions"] == 0
    ranker = reports("search_ranker")[-1]
    assert (ranker["version"], ranker["champion_before"]) == ("2", "1")
    v = ranker["valid"]
    wins = v["ranker"]["ndcg@10"] >= v["champion"]["ndcg@10"] - cfg.promotion.tolerance
    assert ranker["promoted"] is wins
    champion = client.get_model_version_by_alias(cfg.search.ranker_model_name, cfg.tracking.alias).version
    assert str(champion) == ("2" if wins else "1")
    assert reports("search_results")[-1]["ranker_version"] == str(champion)
    assert read_table(spark, cfg, "search_results").where(f"ranker_version = '{champion}'").count() > 0


def test_mlflow_models_serve_answers_like_batch_scoring(spark, demo_run):
    """`mlflow models serve` on loopback, queried over HTTP, gives the batch job's
    recommendations for the same users; the server is stopped whatever happens."""
    import socket
    import time
    import urllib.request

    cfg, _, _ = demo_run
    frame, same = champion_cases(spark, cfg)
    uri = f"models:/{cfg.tracking.model_name}@{cfg.tracking.alias}"
    k = cfg.scoring.top_k
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
