"""The one place a SparkSession with Delta Lake is built."""

from __future__ import annotations

import os
from typing import Sequence

from pyspark.sql import SparkSession

from recsys.config import Config, SparkConfig
from recsys.errors import SetupError


def delta_package() -> str:
    """Maven coordinate of the Delta jar matching the installed delta-spark and pyspark.

    The same rule as ``delta.configure_spark_with_delta_pip``: io.delta:delta-spark_<spark
    major.minor>_2.13:<delta-spark version>.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        delta_version = version("delta-spark")
    except PackageNotFoundError as e:
        raise SetupError("delta-spark is not installed: run `make setup` (or `pip install delta-spark==4.4.0`)") from e
    import pyspark

    spark_mm = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_mm}_2.13:{delta_version}"


def hadoop_version() -> str | None:
    """The Hadoop version of the jars inside the installed pyspark (None if there are none)."""
    import glob
    import re

    import pyspark

    for jar in sorted(glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))):
        m = re.search(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar$", jar)
        if m:
            return m.group(1)
    return None


def hadoop_aws_package() -> str | None:
    """Maven coordinate of the S3A connector matching pyspark's Hadoop (it brings the AWS SDK
    bundle it was built with); None when pyspark ships no Hadoop jars (a cluster's own Spark)."""
    version = hadoop_version()
    return f"org.apache.hadoop:hadoop-aws:{version}" if version else None


def needs_s3a(locations: Sequence[str]) -> bool:
    return any(loc.startswith(("s3a://", "s3n://")) for loc in locations)


def spark_conf(cfg: SparkConfig, locations: Sequence[str] = ()) -> dict[str, str]:
    """The Spark settings recsys needs, as a plain mapping (also used by tests).

    ``locations`` are the storage URIs the jobs will use: an ``s3a://`` one adds Hadoop's S3A
    connector to ``spark.jars.packages`` beside Delta (when ``spark.resolve_delta_jars``)."""
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": cfg.driver_memory,
        # Arrow for pandas UDFs and toPandas.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Fail fast when TorchDistributor asks for more barrier slots than exist.
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "1",
        "spark.databricks.delta.snapshotPartitions": "2",
        # VACUUM lists a table's folders in a job of this many tasks (Spark's default: 10,000,
        # which made forget-user's VACUUM of a small table take a minute on two cores).
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(max(8, cfg.shuffle_partitions)),
        "spark.sql.adaptive.enabled": "true",
    }
    if cfg.jvm_options:
        # Read when a JVM starts: here when pyspark launches the local driver; under
        # spark-submit pass them with --driver-java-options (see README).
        conf["spark.driver.extraJavaOptions"] = cfg.jvm_options
        conf["spark.executor.extraJavaOptions"] = cfg.jvm_options
    packages = []
    if cfg.resolve_delta_jars:
        packages.append(delta_package())
        s3a = hadoop_aws_package() if needs_s3a(locations) else None
        if s3a:
            packages.append(s3a)
    extra = dict(cfg.extra)
    if extra.get("spark.jars.packages"):  # the user's packages are added, not put instead
        packages += [p.strip() for p in extra.pop("spark.jars.packages").split(",") if p.strip()]
    if packages:
        conf["spark.jars.packages"] = ",".join(dict.fromkeys(packages))
    conf.update(extra)
    return conf


def get_spark(cfg: Config | None = None) -> SparkSession:
    """Return the active SparkSession, or build one with Delta Lake from ``cfg.spark``.

    Raises:
        SetupError: Java is missing or the Delta jars cannot be resolved, with how to fix it.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    sc = cfg.spark if cfg is not None else SparkConfig()
    locations = ([cfg.lakehouse.root_uri, cfg.lakehouse.landing_uri, cfg.train.checkpoint_dir]
                 if cfg is not None else [])
    builder = SparkSession.builder.appName(sc.app_name)
    if sc.master:
        builder = builder.master(sc.master)
    for k, v in spark_conf(sc, locations).items():
        builder = builder.config(k, v)
    # Spark's workers must run the same interpreter as the driver (our venv).
    import sys

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # the JVM did not start: say how to fix it
        raise SetupError(
            "could not start Spark with Delta Lake. Check that Java 17 is installed (`java -version`) "
            "and that the Delta jars were resolved once with `make setup` (they come from Maven Central "
            f"through spark.jars.packages). Cause: {e}"
        ) from e
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def check() -> None:
    """Start Spark with Delta once (resolving and caching the jars) and round-trip a table."""
    import tempfile

    spark = get_spark()
    with tempfile.TemporaryDirectory() as d:
        spark.range(3).write.format("delta").save(f"{d}/t")
        n = spark.read.format("delta").load(f"{d}/t").count()
    if n != 3:
        raise RuntimeError(f"Delta round trip returned {n} rows instead of 3")
    print(f"Spark {spark.version} with {delta_package()}: OK")
    spark.stop()


if __name__ == "__main__":
    check()
