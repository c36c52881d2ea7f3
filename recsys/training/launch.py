"""Driver side of training: read gold tables, start the MLflow run, launch TorchDistributor."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import storage
from recsys.config import Config, NegativeSampler, TrainConfig
from recsys.errors import DataError
from recsys.models import Catalogue
from recsys.reports import write_report
from recsys.tables import read_table, table_exists
from recsys.training.data import materialise
from recsys.training.loop import TrainJob, train_worker

log = logging.getLogger(__name__)


def item_catalogue(spark: SparkSession, cfg: Config) -> Catalogue:
    """Per-item side features as dense lists indexed by item_idx (index 0 = padding), and
    the item text vectors (see :func:`item_text_matrix`).

    Raises:
        DataError: ``item_profiles`` is empty.
    """
    items = read_table(spark, cfg, "item_profiles").select(
        "item_idx", "category_idx", "brand_idx", "price_bucket"
    ).toPandas()
    if items.empty:
        raise DataError("item_profiles is empty: run `recsys build-profiles` first")
    n = int(items["item_idx"].max())
    cat, brand, price = [0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
    for r in items.itertuples(index=False):
        cat[r.item_idx], brand[r.item_idx], price[r.item_idx] = int(r.category_idx), int(r.brand_idx), int(r.price_bucket)
    return Catalogue(
        num_items=n,
        category=cat,
        brand=brand,
        price=price,
        num_categories=int(items["category_idx"].max()),
        num_brands=int(items["brand_idx"].max()),
        num_price_buckets=int(items["price_bucket"].max()),
        text=item_text_matrix(spark, cfg, n),
    )


def item_text_matrix(spark: SparkSession, cfg: Config, num_items: int) -> list[list[float]] | None:
    """(N+1, dim) text vectors indexed by item_idx (zeros where an item has none), or None
    when ``model.text_features`` is off or ``item_text_embeddings`` was not built."""
    if not cfg.model.text_features or not table_exists(cfg, "item_text_embeddings"):
        return None
    import numpy as np

    rows = (
        read_table(spark, cfg, "item_text_embeddings").join(read_table(spark, cfg, "item_profiles"), "item_id")
        .select("item_idx", "embedding").toPandas()
    )
    if rows.empty:
        return None
    dim = len(rows["embedding"].iloc[0])
    m = np.zeros((num_items + 1, dim), dtype=np.float32)
    m[rows["item_idx"].to_numpy()] = np.stack(rows["embedding"].to_numpy())
    return m.tolist()


def sampled_negatives(tc: TrainConfig, num_items: int) -> int:
    """How many negatives the loss samples for a catalogue of ``num_items`` items (0 = the
    exact full softmax): the full softmax while the catalogue has at most
    ``train.full_softmax_max_items`` items, or when K = ``train.num_negatives`` is 0 or not
    smaller than the catalogue; K otherwise."""
    k = tc.num_negatives
    return k if num_items > tc.full_softmax_max_items and 0 < k < num_items else 0


def target_counts(train_examples: DataFrame, num_items: int) -> list[int]:
    """(N+1,) how often each item is a training target (index 0 unused): the mixed negative
    sampler's estimate of how often each item turns up among a batch's targets."""
    counts = [0] * (num_items + 1)
    rows = (train_examples.select(F.explode("target_items").alias("item")).where("item > 0")
            .groupBy("item").count().collect())
    for r in rows:
        counts[int(r["item"])] = int(r["count"])
    return counts


def train(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Train the recommender with TorchDistributor; log, register and alias it in MLflow.

    Returns the training summary: run id, model version, epochs, best validation NDCG@10.

    Raises:
        MissingTableError: the gold tables are missing (run build-profiles first).
        DataError: item_profiles is empty or there are no training examples.
        RuntimeError: the distributed job failed.
    """
    import mlflow
    from pyspark.ml.torch.distributor import TorchDistributor

    from recsys.tracking import setup_from_config

    t0 = time.time()
    examples = read_table(spark, cfg, "training_examples")
    catalogue = item_catalogue(spark, cfg)
    # petastorm's cache of materialised Parquet: under the lakehouse, so every worker reaches it.
    cache = storage.to_url(storage.join(cfg.lakehouse.root_uri, "_petastorm"))
    world = cfg.train.num_processes
    train_df = examples.where(F.col("split") == "train")
    train_set = materialise(spark, train_df, cache, files=4 * world)
    valid_set = materialise(spark, examples.where(F.col("split") == "validation"), cache, files=4 * world)
    log.info("materialised %d train / %d validation rows for petastorm in %.1fs", train_set.rows, valid_set.rows, time.time() - t0)
    if train_set.rows == 0:
        raise DataError("training_examples has no train rows: generate or ingest more events")

    num_negatives = sampled_negatives(cfg.train, catalogue.num_items)
    mixed = num_negatives > 0 and cfg.train.negative_sampler == NegativeSampler.MIXED
    loss_name = (f"sampled softmax, {num_negatives} {cfg.train.negative_sampler.value} negatives" if num_negatives
                 else "full softmax")
    experiment_id = setup_from_config(cfg)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}") as run:
        mlflow.log_params(cfg.to_flat_dict())
        mlflow.log_params({"data.train_rows": train_set.rows, "data.validation_rows": valid_set.rows,
                           "loss": loss_name,
                           "data.num_items": catalogue.num_items})
        run_id = run.info.run_id
    job = TrainJob(
        train=cfg.train,
        model=cfg.model,
        catalogue=catalogue,
        max_len=cfg.features.max_seq_len,
        train_set=train_set,
        validation_set=valid_set,
        num_negatives=num_negatives,
        item_target_counts=target_counts(train_df, catalogue.num_items) if mixed else None,
        tracking=cfg.tracking,
        tracking_uri=cfg.tracking_uri,
        run_id=run_id,
    )
    log.info("starting TorchDistributor: %d processes, local_mode=%s, use_gpu=%s", world, cfg.train.local_mode, cfg.train.use_gpu)
    t1 = time.time()
    distributor = TorchDistributor(num_processes=world, local_mode=cfg.train.local_mode, use_gpu=cfg.train.use_gpu)
    try:
        summary = distributor.run(train_worker, job)
    except Exception as e:
        raise RuntimeError(f"distributed training failed ({world} processes, local_mode={cfg.train.local_mode}): {e}") from e
    finally:
        train_set.delete()
        valid_set.delete()
    log.info("distributed training finished in %.1fs (loop %.1fs)", time.time() - t1, summary.get("train_seconds", 0.0))
    summary["run_id"] = run_id
    summary["loss"] = loss_name
    summary["train_rows"] = train_set.rows
    write_report(cfg, "train", summary)
    return summary
