"""Full-ranking evaluation of the registered model and the baselines on the test split.

For each test row (a user's last step as target, everything before as input) every item of
the catalogue is scored, the items already in the user's history are masked, and the
target's rank gives HR@K, NDCG@K and MRR (see :mod:`recsys.evaluation.metrics`).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config
from recsys.ingest.pipeline import write_report
from recsys.scoring.batch import load_model_cached, pad_left
from recsys.tables import read_table
from recsys.tracking import resolve_model_uri

log = logging.getLogger(__name__)

RANKS_SCHEMA = T.StructType(
    [T.StructField("user_id", T.StringType()), T.StructField("scorer", T.StringType()), T.StructField("rank", T.LongType())]
)


def popularity_counts(examples: DataFrame, num_items: int) -> np.ndarray:
    """(N+1,) number of users with each item in their *training* steps (no validation/test leak).

    The validation row's history is exactly the training steps plus nothing else, so it is
    the leak-free source.
    """
    rows = (
        examples.where(F.col("split") == "validation")
        .select(F.explode("history_items").alias("item_idx"))
        .groupBy("item_idx")
        .count()
        .collect()
    )
    counts = np.zeros(num_items + 1, dtype=np.float64)
    for r in rows:
        if 0 < r["item_idx"] <= num_items:
            counts[r["item_idx"]] = r["count"]
    return counts


def rank_partition(model_uri: str | None, tracking_uri: str, popularity: np.ndarray, batch_size: int):
    """mapInPandas: test rows → (user_id, scorer, rank) for the model and for popularity."""

    def fn(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        from recsys.evaluation.metrics import history_mask, target_ranks

        model = load_model_cached(model_uri, tracking_uri) if model_uri else None
        pop = torch.from_numpy(popularity)
        with torch.no_grad():
            vectors = model.item_vectors() if model is not None else None
            for pdf in frames:
                for start in range(0, len(pdf), batch_size):
                    part = pdf.iloc[start:start + batch_size]
                    targets = torch.as_tensor(part["target"].to_numpy(), dtype=torch.long)
                    mask = history_mask(part["history_items"].tolist(), len(popularity))
                    out = []
                    pop_ranks = target_ranks(pop.expand(len(part), -1), targets, mask)
                    out.append(("popularity", pop_ranks))
                    if model is not None:
                        L = model.spec.max_len
                        items = torch.from_numpy(pad_left([list(x) for x in part["input_items"]], L))
                        types = torch.from_numpy(pad_left([list(x) for x in part["input_types"]], L))
                        h = model.encode(items, types, vectors)[:, -1]
                        out.append(("model", target_ranks(h @ vectors.T, targets, mask)))
                    for name, ranks in out:
                        yield pd.DataFrame({"user_id": part["user_id"].to_numpy(), "scorer": name,
                                            "rank": ranks.numpy().astype(np.int64)})

    return fn


def evaluate(spark: SparkSession, cfg: Config, *, split: str = "test", with_model: bool = True) -> dict[str, Any]:
    """HR@K / NDCG@K / MRR of the registered model and the most-popular baseline.

    Logs the figures to a new MLflow run (tagged with the model version) and to a report.
    """
    import mlflow

    from recsys.evaluation.metrics import metrics_from_ranks
    from recsys.tracking import setup_from_config

    examples = read_table(spark, cfg, "training_examples")
    num_items = read_table(spark, cfg, "item_profiles").agg(F.max("item_idx")).first()[0]
    pop = popularity_counts(examples, num_items)
    model_uri, version = resolve_model_uri(cfg) if with_model else (None, None)
    rows = examples.where(F.col("split") == split).select("user_id", "input_items", "input_types", "target", "history_items")
    ranks = rows.mapInPandas(
        rank_partition(model_uri, cfg.tracking_uri, pop, cfg.evaluation.batch_size), RANKS_SCHEMA
    ).toPandas()
    if ranks.empty:
        raise ValueError(f"training_examples has no '{split}' rows to evaluate")
    metrics = {name: metrics_from_ranks(g["rank"].to_numpy(), cfg.evaluation.ks) for name, g in ranks.groupby("scorer")}
    report: dict[str, Any] = {"split": split, "model_uri": model_uri, "model_version": version, "metrics": metrics}
    experiment_id = setup_from_config(cfg)
    # The figures go to the training run that produced the model (else to a run of their own).
    train_run = None
    if version is not None:
        train_run = mlflow.MlflowClient().get_model_version(cfg.tracking.model_name, version).run_id
    with mlflow.start_run(run_id=train_run) if train_run else mlflow.start_run(
        experiment_id=experiment_id, run_name=f"evaluate-{split}"
    ) as run:
        for scorer, m in metrics.items():
            mlflow.log_metrics({f"{split}_{scorer}_{k}": float(v) for k, v in m.items()})
        report["mlflow_run_id"] = run.info.run_id
    write_report(cfg, "evaluate", report)
    return report
