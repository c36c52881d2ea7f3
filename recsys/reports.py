"""Run reports shared by every stage: step timing and the JSON report each run leaves under
``<lakehouse root>/_reports`` (any Spark-reachable URI: written through Hadoop's FileSystem)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from recsys import storage
from recsys.config import Config
from recsys.timing import StepTimer

__all__ = ["StepTimer", "write_named", "write_report"]


def write_report(cfg: Config, name: str, report: dict[str, Any]) -> str:
    """Write ``report`` as ``<root>/_reports/<name>-<UTC timestamp>.json``; return its URI."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    uri = storage.join(cfg.lakehouse.reports_uri, f"{name}-{stamp}.json")
    storage.write_text(uri, json.dumps(report, indent=2, default=str))
    return uri


def write_named(cfg: Config, filename: str, text: str) -> str:
    """Write ``text`` as ``<root>/_reports/<filename>`` (replacing it); return its URI."""
    uri = storage.join(cfg.lakehouse.reports_uri, filename)
    storage.write_text(uri, text)
    return uri
