"""Batch scoring with Spark: the registered model, loaded once per Python worker, ranks the
whole catalogue for every user; top-K rows with an explanation go to ``recommendations``."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config, ConfigError
from recsys.models.loading import pad_left
from recsys.models.serving import exclusion_mask, load_network, rank_catalogue
from recsys.reports import write_report
from recsys.tables import read_table, table_exists, write_table
from recsys.tracking import resolve_model_uri

log = logging.getLogger(__name__)

RECS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("rank", T.IntegerType()),
        T.StructField("item_idx", T.IntegerType()),
        T.StructField("score", T.FloatType()),
        T.StructField("reason_item_idx", T.IntegerType()),
    ]
)


def recommend_partition(model_uri: str, tracking_uri: str, top_k: int, batch_size: int, exclude: str = "purchased"):
    """The mapInPandas function: user rows (user_id, seq_item_idx, seq_type_idx,
    purchased_item_idx) → top-K rows with the history item that best explains each.

    ``exclude``: "purchased" masks the items the user bought; "interacted" masks every item
    in the user's history (viewed, clicked, carted or bought). The network, the exclusion
    masks and the ranking are those of the served model (:mod:`recsys.models.serving`)."""

    def fn(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        model, _ = load_network(model_uri, tracking_uri)
        L = model.spec.max_len
        with torch.no_grad():
            vectors = model.item_vectors()  # (N+1, H), computed once per partition
            for pdf in frames:
                for start in range(0, len(pdf), batch_size):
                    part = pdf.iloc[start:start + batch_size]
                    items = torch.from_numpy(pad_left(part["seq_item_idx"].tolist(), L))
                    types = torch.from_numpy(pad_left(part["seq_type_idx"].tolist(), L))
                    seen = part["purchased_item_idx"] if exclude == "purchased" else part["seq_item_idx"]
                    excluded = exclusion_mask(seen.tolist(), model.spec.num_items + 1)
                    top_items, top_scores, reason = rank_catalogue(model, vectors, items, types, excluded, top_k)
                    B, k = top_items.shape
                    out = pd.DataFrame({
                        "user_id": np.repeat(part["user_id"].to_numpy(), k),
                        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), B),
                        "item_idx": top_items.reshape(-1).numpy().astype(np.int32),
                        "score": top_scores.reshape(-1).numpy().astype(np.float32),
                        "reason_item_idx": reason.reshape(-1).numpy().astype(np.int32),
                    })
                    # A user who excluded nearly the whole catalogue gets fewer than K rows.
                    yield out[np.isfinite(out["score"].to_numpy())]

    return fn


def recommend(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Score every user with the registered model; write top-K to ``recommendations``.

    A rerun for the same ``run_date`` replaces that date's rows (Delta ``replaceWhere``).
    """
    model_uri, version = resolve_model_uri(cfg)
    run_date = cfg.scoring.run_date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        dt.date.fromisoformat(run_date)
    except ValueError as e:
        raise ConfigError(f"config key 'scoring.run_date': {run_date!r} is not a date like 2026-11-28") from e
    users = read_table(spark, cfg, "user_profiles").where(F.col("n_steps") > 0).select(
        "user_id", "seq_item_idx", "seq_type_idx", "purchased_item_idx"
    )
    items = read_table(spark, cfg, "item_profiles").select("item_idx", "item_id")
    recs = users.mapInPandas(
        recommend_partition(model_uri, cfg.tracking_uri, cfg.scoring.top_k, cfg.scoring.batch_size,
                            cfg.scoring.exclude.value),
        RECS_SCHEMA,
    )
    out = (
        recs.join(F.broadcast(items), "item_idx")
        .join(F.broadcast(items.withColumnRenamed("item_idx", "reason_item_idx").withColumnRenamed("item_id", "reason_item_id")),
              "reason_item_idx", "left")
        .select(
            "user_id", "rank", "item_id", "score", "reason_item_id",
            F.lit(version).alias("model_version"), F.lit(run_date).cast("date").alias("run_date"),
        )
    )
    path = cfg.table_path("recommendations")
    if table_exists(cfg, "recommendations"):
        write_table(out, cfg, "recommendations", replace_where=f"run_date = '{run_date}'")
    else:
        write_table(out, cfg, "recommendations", partition_by=["run_date"])
    written = read_table(spark, cfg, "recommendations").where(F.col("run_date") == F.lit(run_date).cast("date"))
    report = {
        "model_uri": model_uri,
        "model_version": version,
        "run_date": run_date,
        "rows": written.count(),
        "users": written.select("user_id").distinct().count(),
        "table": path,
    }
    write_report(cfg, "recommend", report)
    return report
