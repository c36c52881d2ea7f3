"""Shared fixtures: one local SparkSession with Delta for the whole run, a config per test."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from recsys.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
warnings.filterwarnings("ignore", category=FutureWarning)


def make_config(root: Path, *overrides: str) -> Config:
    """The local config with its lakehouse under ``root`` and small, fast settings."""
    return load_config(
        ROOT / "conf" / "local.yaml",
        [f"lakehouse.root={root}", "spark.shuffle_partitions=2", *overrides],
    )


@pytest.fixture(scope="session")
def spark():
    from recsys.spark import get_spark

    cfg = load_config(ROOT / "conf" / "local.yaml", ["spark.shuffle_partitions=2", "spark.app_name=recsys-tests"])
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path / "lakehouse")
