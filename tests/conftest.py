"""Shared fixtures: one local SparkSession with Delta for the whole run, a config per test, and
``demo_run``: the whole pipeline on tiny generated data, once per test module that asks for it."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

from recsys.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
warnings.filterwarnings("ignore", category=FutureWarning)


# The tests' JVM: HotSpot's own tiered-compilation thresholds (JDK 17 defaults), spelled out.
# The project's default spark.jvm_options (10x these) delay the optimising compiler, which pays
# in long jobs; a test session is many short ones (the e2e module: 571 s -> 446 s with these).
TEST_JIT_OPTIONS = ("-XX:Tier4InvocationThreshold=5000 -XX:Tier4MinInvocationThreshold=600 "
                    "-XX:Tier4CompileThreshold=15000 -XX:Tier4BackEdgeThreshold=40000")


def make_config(root: Path, *overrides: str) -> Config:
    """The local config with its lakehouse under ``root`` and small, fast settings."""
    return load_config(
        ROOT / "conf" / "local.yaml",
        [f"lakehouse.root={root}", "spark.shuffle_partitions=2", *overrides],
    )


@pytest.fixture(scope="session")
def spark():
    from recsys.spark import get_spark

    # RECSYS_TEST_SPARK: more overrides for the tests' session (space-separated key=value).
    extra = os.environ.get("RECSYS_TEST_SPARK", "").split()
    cfg = load_config(ROOT / "conf" / "local.yaml", ["spark.shuffle_partitions=2", "spark.app_name=recsys-tests",
                                                     f"spark.jvm_options={TEST_JIT_OPTIONS}", *extra])
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path / "lakehouse")


TINY = ["generator.users=250", "generator.items=120", "generator.days=14", "generator.malformed_rate=0.02",
        "train.epochs=2", "train.patience=5", "model.hidden=32", "features.max_seq_len=20", "search.candidates=50"]


@pytest.fixture(scope="module")
def demo_run(spark, tmp_path_factory):
    """(The real Spark, Delta, petastorm, TorchDistributor with 2 processes and MLflow.)
    One demo run for the module, and a copy of its lakehouse taken before any test changes it."""
    from recsys.demo import demo

    base = tmp_path_factory.mktemp("demo")
    # Not the defaults the summary once hard-coded: other K values, another first baseline, top-5.
    cfg = make_config(base / "lh", *TINY, "scoring.run_date=2026-11-01", "evaluation.ks=[5, 10]",
                      "evaluation.baselines=[cooccurrence, popularity]", "scoring.top_k=5")
    summary = demo(cfg, spark)
    shutil.copytree(cfg.lakehouse.root_path, base / "copy")
    return cfg, summary, base / "copy"
