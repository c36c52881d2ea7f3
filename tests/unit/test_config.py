from pathlib import Path

import pytest

from recsys.config import ConfigError, Env, load_config, parse_override, replace

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_layers_and_overrides():
    cfg = load_config(CONF / "local.yaml", ["train.epochs=3", "model.dropout=0.3", "evaluation.ks=[1, 10]"])
    assert cfg.env is Env.LOCAL
    assert cfg.train.epochs == 3
    assert cfg.model.dropout == pytest.approx(0.3)
    assert cfg.evaluation.ks == [1, 10]
    assert cfg.spark.master == "local[2]"  # from local.yaml


def test_every_overlay_loads():
    for name in ("local", "cluster", "databricks"):
        cfg = load_config(CONF / f"{name}.yaml")
        assert cfg.env.value == name


def test_derived_locations(tmp_path):
    cfg = load_config(CONF / "local.yaml", [f"lakehouse.root={tmp_path}"])
    assert cfg.table_path("events") == str(tmp_path / "bronze" / "events")
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / '_mlflow' / 'mlflow.db'}"
    assert cfg.lakehouse.landing_path == tmp_path / "landing"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("nosuchsection.x=1", "unknown config key 'nosuchsection'"),
        ("train.epochs=three", "config key 'train.epochs': expected an integer"),
        ("train.local_mode=maybe", "config key 'train.local_mode': expected true or false"),
        ("env=prod", "allowed values: local, cluster, databricks"),
        ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
        ("model.item_dropout=-0.1", "model.item_dropout must be in [0, 1), got -0.1"),
        ("model.heads=3", "model.hidden must be divisible by model.heads"),
        ("train.max_minutes=-1", "train.max_minutes must be >= 0"),
        ("train.negative_sampler=popular", "'train.negative_sampler': 'popular' is not allowed; allowed values: uniform, mixed"),
        ("train.full_softmax_max_items=-1", "train.full_softmax_max_items must be >= 0"),
        ("train.future_window=0", "train.future_window must be >= 1, got 0"),
        ("train.future_share=1.5", "train.future_share must be in [0, 1], got 1.5"),
        ("train.ema_decay=1.0", "train.ema_decay must be in [0, 1) (0 = off), got 1.0"),
        ("model.family=gru4rec", "'model.family': 'gru4rec' is not allowed; allowed values: sasrec"),
        ("evaluation.protocol=leaky", "'evaluation.protocol': 'leaky' is not allowed; allowed values: history_masked, unmasked"),
        ("train.batch_size=129", "train.batch_size is the global batch: it must be a multiple of train.num_processes (2)"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(CONF / "local.yaml", [override])
    assert fragment in str(e.value)


def test_override_syntax():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=x y") == {"a": "x y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("conf/nope.yaml")


def test_replace_checks_like_load():
    cfg = load_config(CONF / "local.yaml")
    assert replace(cfg, "train.epochs=2").train.epochs == 2
    with pytest.raises(ConfigError):
        replace(cfg, "train.nope=2")


def test_flat_dict_for_mlflow():
    flat = load_config(CONF / "local.yaml").to_flat_dict()
    assert flat["train.epochs"] == 30 and flat["train.max_minutes"] == 30 and flat["train.num_negatives"] == 2048
    assert flat["train.negative_sampler"] == "mixed"  # enums as their values
    assert (flat["train.future_share"], flat["train.future_window"]) == (0.0, 5)
    assert flat["train.mask_history"] is False
    assert flat["env"] == "local"
    assert all(isinstance(k, str) for k in flat)


def test_the_loss_is_the_full_softmax_up_to_a_catalogue_size():
    from recsys.training.launch import sampled_negatives

    train = load_config(CONF / "local.yaml").train
    assert (train.full_softmax_max_items, train.num_negatives) == (16384, 2048)
    assert sampled_negatives(train, 12_101) == 0  # Beauty-sized: the exact softmax
    assert sampled_negatives(train, 16_384) == 0
    assert sampled_negatives(train, 20_033) == 2048  # Yelp-sized: 2,048 sampled negatives
    never = load_config(CONF / "local.yaml", ["train.num_negatives=0"]).train
    assert sampled_negatives(never, 10**6) == 0
    always = load_config(CONF / "local.yaml", ["train.full_softmax_max_items=0", "train.num_negatives=50"]).train
    assert sampled_negatives(always, 51) == 50 and sampled_negatives(always, 50) == 0  # K >= catalogue: exact


def test_jvm_options_reach_the_driver_and_executors_and_can_be_turned_off():
    from recsys.config import JIT_OPTIONS
    from recsys.spark import spark_conf

    cfg = load_config(CONF / "local.yaml")
    assert cfg.spark.jvm_options == JIT_OPTIONS  # base.yaml spells out the same default
    conf = spark_conf(cfg.spark)
    assert conf["spark.driver.extraJavaOptions"] == conf["spark.executor.extraJavaOptions"] == JIT_OPTIONS
    off = spark_conf(load_config(CONF / "local.yaml", ["spark.jvm_options="]).spark)
    assert "spark.driver.extraJavaOptions" not in off and "spark.executor.extraJavaOptions" not in off
    mine = load_config(CONF / "local.yaml", ["spark.jvm_options=-Xss4m"]).spark
    assert spark_conf(mine)["spark.driver.extraJavaOptions"] == "-Xss4m"


@pytest.mark.parametrize("root, events", [
    ("s3a://shop/lake", "s3a://shop/lake/bronze/events"),
    ("s3a://shop/lake/", "s3a://shop/lake/bronze/events"),
    ("abfss://c@acct.dfs.core.windows.net/lake", "abfss://c@acct.dfs.core.windows.net/lake/bronze/events"),
    ("gs://b/lake", "gs://b/lake/bronze/events"),
    ("hdfs://nn:8020/lake", "hdfs://nn:8020/lake/bronze/events"),
    ("dbfs:/recsys/lakehouse", "dbfs:/recsys/lakehouse/bronze/events"),
    ("file:///tmp/lake", "file:///tmp/lake/bronze/events"),
])
def test_storage_roots_stay_uris(root, events):
    """A root is never resolved against the working directory (s3a:// must not become
    <cwd>/s3a:/…): every table, the landing folder and the reports live under the URI."""
    cfg = load_config(CONF / "local.yaml", [f"lakehouse.root={root}", "tracking.tracking_uri=http://mlflow:5000"])
    assert cfg.table_path("events") == events
    assert cfg.lakehouse.landing_uri == events.replace("bronze/events", "landing")
    assert cfg.lakehouse.reports_uri == events.replace("bronze/events", "_reports")
    # MLflow writes artifacts through boto3, which names S3 s3://
    assert cfg.artifact_location == events.replace("bronze/events", "_mlflow/artifacts").replace("s3a://", "s3://")


def test_a_remote_root_has_no_local_path_and_needs_a_tracking_server():
    cfg = load_config(CONF / "local.yaml", ["lakehouse.root=s3a://shop/lake"])
    with pytest.raises(ConfigError, match="is not a local folder"):
        cfg.lakehouse.root_path
    with pytest.raises(ConfigError, match="tracking.tracking_uri"):
        cfg.tracking_uri
    local = load_config(CONF / "local.yaml", ["lakehouse.root=file:///tmp/lake"])
    assert local.lakehouse.root_path == Path("/tmp/lake")
    assert local.tracking_uri == "sqlite:////tmp/lake/_mlflow/mlflow.db"


def test_the_databricks_overlay_uses_a_location_spark_reads_as_dbfs():
    cfg = load_config(CONF / "databricks.yaml")
    assert cfg.table_path("events") == "dbfs:/recsys/lakehouse/bronze/events"


def test_object_storage_settings():
    """An s3a:// lakehouse: the S3A connector joins Delta in spark.jars.packages (a user's own
    packages are added, not put instead), MLflow gets s3:// for its artifacts, petastorm's cache
    must be set to a folder it can read (the error names the key), and a Spark key given on the
    command line stays one key."""
    from recsys.config import ConfigError
    from recsys.spark import delta_package, hadoop_aws_package, spark_conf

    s3 = load_config(CONF / "s3.yaml", ["lakehouse.root=s3a://shop/lake",
                                        "spark.extra.spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000",
                                        "spark.extra.spark.hadoop.fs.s3a.path.style.access=true",
                                        "spark.extra.spark.jars.packages=org.example:extra:1.0"])
    assert hadoop_aws_package() == "org.apache.hadoop:hadoop-aws:3.4.1"  # pyspark 4.0's Hadoop
    conf = spark_conf(s3.spark, [s3.lakehouse.root_uri])
    assert conf["spark.jars.packages"] == f"{delta_package()},{hadoop_aws_package()},org.example:extra:1.0"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"  # YAML's true, as Hadoop spells it
    assert "hadoop-aws" not in spark_conf(s3.spark, ["/tmp/lake"])["spark.jars.packages"]
    assert s3.artifact_location == "s3://shop/lake/_mlflow/artifacts"
    assert s3.petastorm_cache_uri == "file:///tmp/recsys-petastorm"
    unset = load_config(CONF / "s3.yaml", ["lakehouse.root=s3a://shop/lake", "train.cache_dir="])
    with pytest.raises(ConfigError, match=r"'train.cache_dir'.*lakehouse.root is s3a://shop/lake"):
        unset.petastorm_cache_uri
    with pytest.raises(ConfigError, match=r"train.cache_dir is s3a://shop/cache"):
        load_config(CONF / "s3.yaml", ["train.cache_dir=s3a://shop/cache"]).petastorm_cache_uri
    local = load_config(CONF / "local.yaml", ["lakehouse.root=/tmp/lake"])
    assert local.petastorm_cache_uri == "file:///tmp/lake/_petastorm"
    assert local.artifact_location == "/tmp/lake/_mlflow/artifacts"
    dbfs = load_config(CONF / "local.yaml", ["lakehouse.root=dbfs:/lake", "tracking.tracking_uri=databricks"])
    assert dbfs.petastorm_cache_uri == "file:///dbfs/lake/_petastorm"
