"""Object storage for real: the whole pipeline (`recsys demo`, every stage) with its lakehouse
in an S3 bucket, served on loopback by moto's S3 server (from PyPI), through Hadoop's S3A
connector resolved from Maven like the Delta jars, with `conf/s3.yaml`. The landing files are
written, listed and read through Hadoop; MLflow's artifacts and the training checkpoints go to
the bucket too. Every table equals the one of the same pipeline on a local folder (the module's
`demo_run`, same settings), row for row, the recommendations included (training is
reproducible for a seed, wherever it runs).

The server runs in this process; the pipeline and the comparison are their own processes, as
a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT, TINY

pytestmark = pytest.mark.system

BUCKET = "shop"
LAKE = f"s3a://{BUCKET}/recsys/lakehouse"
# The demo_run fixture's settings (tests/conftest.py), so that the two pipelines are the same.
DEMO_RUN = [*TINY, "spark.shuffle_partitions=2", "scoring.run_date=2026-11-01", "evaluation.ks=[5, 10]",
            "evaluation.baselines=[cooccurrence, popularity]", "scoring.top_k=5"]
TABLES = ("events", "catalog", "users", "quarantine", "user_profiles", "item_profiles", "item_daily_counts",
          "training_examples", "item_text_embeddings", "recommendations", "searches", "query_stats",
          "query_suggestions", "search_results", "audiences")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with an empty bucket, and the environment that reaches it
    (the standard AWS variables; AWS_ENDPOINT_URL for boto3 and s3fs)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": endpoint}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield {"endpoint": endpoint, "env": env, "client": client}
    finally:
        server.stop()


def s3_overrides(endpoint: str, work: Path) -> list[str]:
    return [f"lakehouse.root={LAKE}",
            f"spark.extra.spark.hadoop.fs.s3a.endpoint={endpoint}",
            "spark.extra.spark.hadoop.fs.s3a.path.style.access=true",
            f"tracking.tracking_uri=sqlite:///{work}/mlflow.db",
            f"train.cache_dir={work}/petastorm"]


def keys(client, prefix: str) -> list[str]:
    out, token = [], None
    while True:
        kw = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kw)
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


@pytest.fixture(scope="module")
def s3_run(s3, tmp_path_factory):
    """`recsys demo --config conf/s3.yaml` against the bucket, in a folder of its own."""
    work = tmp_path_factory.mktemp("s3-run")
    cmd = [str(Path(sys.executable).parent / "recsys"), "demo", "--config", str(ROOT / "conf" / "s3.yaml"),
           *s3_overrides(s3["endpoint"], work), *DEMO_RUN]
    env = {**os.environ, **s3["env"]}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    (work / "demo.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return work, proc.stdout


def test_the_pipeline_runs_in_the_bucket(s3, s3_run):
    work, out = s3_run
    client = s3["client"]
    prefix = "recsys/lakehouse/"
    landing = keys(client, prefix + "landing/")
    assert any(k.endswith(".jsonl") for k in landing) and any("/catalog/" in k for k in landing), landing[:20]
    for table in ("bronze/events", "gold/recommendations", "gold/search_results", "gold/audiences"):
        assert keys(client, f"{prefix}{table}/_delta_log/"), table
    artifacts = keys(client, prefix + "_mlflow/artifacts/")
    assert any(k.endswith("MLmodel") for k in artifacts), artifacts[:20]  # the model, logged through boto3
    assert any(k.endswith("report/report.html") for k in artifacts)
    assert keys(client, prefix + "_reports/report.html")  # written through Hadoop
    assert any("/checkpoint.pt" in k for k in keys(client, prefix + "_checkpoints/"))  # rank 0, through s3fs
    assert f"Report (open it in a browser): {LAKE}/_reports/report.html" in out
    # nothing of the lakehouse on local disk: the MLflow database, petastorm's cache (emptied
    # after training) and Spark's default warehouse folder (empty), nothing else; no ./mlruns
    # (every MLflow run, the search ranker's too, is in the project's experiment)
    local = {p.name for p in work.iterdir()}
    assert local <= {"demo.log", "mlflow.db", "petastorm", "spark-warehouse"}, local
    files = [p for d in ("petastorm", "spark-warehouse") if (work / d).exists() for p in (work / d).rglob("*") if p.is_file()]
    assert files == []


def test_every_table_equals_the_local_run(s3, s3_run, demo_run, tmp_path):
    """Row for row (run ids and timestamps aside, and quarantine's row_key, a hash of the landing
    file's URI, which differs by design), by tests/cluster/compare_lakehouses.py through
    spark-submit with the S3A connector."""
    from recsys.spark import delta_package, hadoop_aws_package

    _, _, local = demo_run
    out = tmp_path / "compare.json"
    submit = Path(sys.executable).parent / "spark-submit"
    cmd = [str(submit), "--master", "local[2]", "--packages", f"{delta_package()},{hadoop_aws_package()}",
           "--conf", f"spark.hadoop.fs.s3a.endpoint={s3['endpoint']}", "--conf", "spark.hadoop.fs.s3a.path.style.access=true",
           "--conf", "spark.hadoop.fs.s3a.endpoint.region=us-east-1",
           "--conf", f"spark.pyspark.python={sys.executable}",
           str(ROOT / "tests" / "cluster" / "compare_lakehouses.py"), str(out), "--location-dependent",
           f"local-vs-s3={local},{LAKE},{':'.join(TABLES)}"]
    proc = subprocess.run(cmd, env={**os.environ, **s3["env"]}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    results = {r["table"]: r for r in json.loads(out.read_text())}
    assert set(results) == set(TABLES)
    differ = {t: r["detail"] for t, r in results.items() if not r["equal"]}
    assert differ == {}, differ
    assert all(r["rows"] > 0 for t, r in results.items() if t != "quarantine") and results["recommendations"]["rows"] > 0
