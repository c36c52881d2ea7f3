"""Driver side of training: read gold tables, start the MLflow run, launch TorchDistributor."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Callable, Sequence, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import storage
from recsys.config import Config, ConfigError, NegativeSampler, TrainConfig, WarmStart
from recsys.errors import DataError, UsageError
from recsys.models import Catalogue
from recsys.reports import write_report
from recsys.scoring.batch import item_rules
from recsys.timing import StepTimer
from recsys.tables import read_table, table_exists
from recsys.training.data import materialise
from recsys.training.loop import TrainJob, train_worker

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_TAG = "checkpoint_dir"  # the run's tag naming its checkpoint folder


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


def item_vocabulary(spark: SparkSession, cfg: Config, num_items: int) -> list[str | None]:
    """(N+1,) the raw item id of each item_idx (None at 0, the padding): what a served model
    maps its input ids through."""
    ids: list[str | None] = [None] * (num_items + 1)
    for r in read_table(spark, cfg, "item_profiles").select("item_idx", "item_id").collect():
        if 0 < r["item_idx"] <= num_items:
            ids[r["item_idx"]] = r["item_id"]
    return ids


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


def resume_target(cfg: Config, experiment_id: str, run_id: str | None) -> str | None:
    """The MLflow run to continue: ``run_id`` (``--resume``) or ``train.resume_run_id``, else
    with ``train.resume`` the newest run of the experiment that did not finish and left a
    checkpoint; None when not resuming.

    Raises:
        UsageError: the run does not exist, finished, or has no checkpoint.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.training import checkpoints

    client = mlflow.MlflowClient()
    wanted = run_id or cfg.train.resume_run_id
    if wanted:
        try:
            run = client.get_run(wanted)
        except MlflowException as e:
            raise UsageError(f"cannot resume run {wanted!r}: no such run in {cfg.tracking_uri}") from e
        if run.info.status == "FINISHED":
            raise UsageError(f"cannot resume run {wanted}: it finished (version registered); train anew instead")
        folder = run.data.tags.get(CHECKPOINT_TAG)
        if not folder or checkpoints.summary(folder) is None:
            raise UsageError(f"cannot resume run {wanted}: it left no checkpoint")
        return wanted
    if not cfg.train.resume:
        return None
    runs = client.search_runs([experiment_id], filter_string="attributes.status != 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        folder = run.data.tags.get(CHECKPOINT_TAG)
        if folder and checkpoints.summary(folder) is not None:
            return run.info.run_id
    raise UsageError("train.resume=true but no interrupted run with a checkpoint is in the experiment "
                     f"'{cfg.tracking.experiment}': start a new run with train.resume=false")


def warm_start_state(cfg: Config, catalogue: Catalogue) -> tuple[dict | None, dict[str, Any]]:
    """With ``train.warm_start=champion``: the initial weights from the champion, fitted to
    today's catalogue (:func:`recsys.training.checkpoints.warm_state`), and what was taken.
    ``(None, {...})`` when not asked for or when there is no champion yet (the first day)."""
    if cfg.train.warm_start is not WarmStart.CHAMPION:
        return None, {}
    import torch

    from recsys.models import build_model
    from recsys.models.serving import load_network
    from recsys.tracking import registered_version
    from recsys.training.checkpoints import warm_state

    champion = registered_version(cfg, cfg.tracking.alias)
    if champion is None:
        log.warning("train.warm_start=champion but there is no champion yet: starting from random weights")
        return None, {"warm_start": "none: no champion yet"}
    trained, _ = load_network(f"models:/{cfg.tracking.model_name}/{champion.version}", cfg.tracking_uri)
    torch.manual_seed(cfg.train.seed)  # the same initial weights the training processes draw
    fresh = build_model(cfg.model, catalogue, cfg.features.max_seq_len)
    state, counts = warm_state(fresh, trained.state_dict())
    if counts["whole"] + counts["rows"] == 0:
        raise ConfigError("train.warm_start=champion: the champion's network has other sizes than model.* "
                          "configures; train from scratch (train.warm_start=\"\")")
    log.info("warm start from champion version %s: %s", champion.version, counts)
    return state, {"warm_start": f"champion version {champion.version}", "warm_start_tensors": counts}


def log_datasets(spark: SparkSession, cfg: Config, names: Sequence[str]) -> None:
    """Record the input Delta tables, with the versions read, as the active run's datasets."""
    import mlflow
    from delta.tables import DeltaTable
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.spark_dataset import SparkDataset

    for name in names:
        if not table_exists(cfg, name, spark):
            continue
        path = cfg.table_path(name)
        version = DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
        df = spark.read.format("delta").option("versionAsOf", version).load(path)
        # The source built here, not by mlflow.data.from_spark: that one looks for _delta_log
        # with Python's os calls, so it refuses a table in object storage (s3a://, abfss://).
        source = DeltaDatasetSource(path=path, delta_table_version=int(version))
        mlflow.log_input(SparkDataset(df=df, source=source, name=name), context="training")


def start_again_if_no_epoch(start: Callable[[], T], checkpoint_dir: str) -> T:
    """``start()``, called a second time when it fails before an epoch ends (the checkpoint
    folder holds the same epoch after the failure as before the start).

    It wraps TorchDistributor's run. pyspark picks the rendezvous port by binding port 0 and
    letting it go, so another process can take the port before torch.distributed listens on
    it; the ranks then fail at once with EADDRINUSE, and pyspark's launcher reports only that
    training failed. A second start gets a new port. A failure after an epoch has ended, or a
    second failure, is raised.
    """
    from recsys.training import checkpoints

    def epoch() -> int | None:
        return (checkpoints.summary(checkpoint_dir) or {}).get("epoch")

    before = epoch()
    try:
        return start()
    except Exception as e:
        if epoch() != before:
            raise
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        log.warning("distributed training failed before an epoch ended (%s); starting it again once, "
                    "as a rendezvous port taken by another process fails this way", first_line)
    return start()


def train(spark: SparkSession, cfg: Config, resume_run_id: str | None = None) -> dict[str, Any]:
    """Train the recommender with TorchDistributor; log and register it in MLflow under the
    challenger alias (``recsys promote`` decides whether it serves).

    Every epoch leaves a checkpoint under ``train.checkpoint_dir``; ``resume_run_id`` (or
    ``train.resume`` / ``train.resume_run_id``) continues an interrupted run in the same MLflow
    run from it. A run whose training fails is marked FAILED with the error as its ``error`` tag.
    The driver prints one line per epoch while the job runs (:mod:`recsys.training.monitor`).

    Returns the training summary: run id, model version, epochs, best validation NDCG@10.

    Raises:
        MissingTableError: the gold tables are missing (run build-profiles first).
        DataError: item_profiles is empty or there are no training examples.
        UsageError: the run to resume cannot be resumed.
        RuntimeError: the distributed job failed.
    """
    import mlflow
    from pyspark.ml.torch.distributor import TorchDistributor

    from recsys.tracking import setup_from_config
    from recsys.training.monitor import EpochMonitor

    t0 = time.time()
    steps_t = StepTimer()
    experiment_id = setup_from_config(cfg)
    resuming = resume_target(cfg, experiment_id, resume_run_id)
    examples = read_table(spark, cfg, "training_examples")
    catalogue = item_catalogue(spark, cfg)
    steps_t.done("catalogue")
    # petastorm's cache of materialised Parquet (train.cache_dir): where every worker reaches it.
    cache = cfg.petastorm_cache_uri
    world = cfg.train.num_processes
    train_df = examples.where(F.col("split") == "train")
    train_set = materialise(spark, train_df, cache, files=4 * world)
    valid_set = materialise(spark, examples.where(F.col("split") == "validation"), cache, files=4 * world)
    log.info("materialised %d train / %d validation rows for petastorm in %.1fs", train_set.rows, valid_set.rows, time.time() - t0)
    if train_set.rows == 0:
        raise DataError("training_examples has no train rows: generate or ingest more events")
    steps_t.done("materialise")

    num_negatives = sampled_negatives(cfg.train, catalogue.num_items)
    mixed = num_negatives > 0 and cfg.train.negative_sampler == NegativeSampler.MIXED
    loss_name = (f"sampled softmax, {num_negatives} {cfg.train.negative_sampler.value} negatives" if num_negatives
                 else "full softmax")
    warm, warm_info = (None, {}) if resuming else warm_start_state(cfg, catalogue)
    client = mlflow.MlflowClient()
    if resuming:
        run_id = resuming
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        log.info("resuming MLflow run %s from its checkpoint", run_id)
    else:
        with mlflow.start_run(experiment_id=experiment_id,
                              run_name=f"train-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}") as run:
            mlflow.log_params(cfg.to_flat_dict())
            mlflow.log_params({"data.train_rows": train_set.rows, "data.validation_rows": valid_set.rows,
                               "loss": loss_name, "data.num_items": catalogue.num_items})
            if warm_info:
                mlflow.set_tag("warm_start", warm_info["warm_start"])
            log_datasets(spark, cfg, ("training_examples", "item_profiles", "item_text_embeddings"))
            run_id = run.info.run_id
            root = cfg.train.checkpoint_dir or storage.join(cfg.lakehouse.root_uri, "_checkpoints")
            mlflow.set_tag(CHECKPOINT_TAG, storage.join(storage.normalise(root), run_id))
        # start_run's context ended the run as FINISHED: it is running until the workers end it.
        client.update_run(run_id, status="RUNNING")
    checkpoint_dir = client.get_run(run_id).data.tags[CHECKPOINT_TAG]
    steps_t.done("mlflow_run")
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
        item_ids=item_vocabulary(spark, cfg, catalogue.num_items),
        rules=item_rules(spark, cfg),
        checkpoint_dir=checkpoint_dir,
        resume=bool(resuming),
        warm_state=warm,
    )
    steps_t.done("job")
    log.info("starting TorchDistributor: %d processes, local_mode=%s, use_gpu=%s", world, cfg.train.local_mode, cfg.train.use_gpu)
    t1 = time.time()
    distributor = TorchDistributor(num_processes=world, local_mode=cfg.train.local_mode, use_gpu=cfg.train.use_gpu)
    try:
        with EpochMonitor(cfg.tracking_uri, run_id, cfg.train.epochs, cfg.train.max_minutes * 60):
            summary = start_again_if_no_epoch(lambda: distributor.run(train_worker, job), checkpoint_dir)
    except BaseException as e:
        client.set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:4000])
        client.set_terminated(run_id, "FAILED")
        if isinstance(e, Exception):
            raise RuntimeError(f"distributed training failed ({world} processes, local_mode={cfg.train.local_mode}); "
                               f"MLflow run {run_id} marked FAILED, resume it with `recsys train --resume {run_id}`: "
                               f"{e}") from e
        raise
    finally:
        train_set.delete()
        valid_set.delete()
    log.info("distributed training finished in %.1fs (loop %.1fs)", time.time() - t1, summary.get("train_seconds", 0.0))
    steps_t.done("distributed")
    summary.update(run_id=run_id, loss=loss_name, train_rows=train_set.rows, checkpoint_dir=checkpoint_dir, **warm_info)
    log_training_artifacts(spark, cfg, run_id, summary)
    steps_t.done("artifacts")
    summary["step_seconds"] = steps_t.seconds
    write_report(cfg, "train", summary)
    return summary


def log_training_artifacts(spark: SparkSession, cfg: Config, run_id: str, summary: dict[str, Any]) -> None:
    """The training curves as an image and a table of sample users (recent history, the new
    model's recommendations with titles and reasons) on the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd
    import torch

    from recsys.models.loading import pad_left
    from recsys.models.serving import exclusion_mask, load_network, rank_catalogue

    client = mlflow.MlflowClient()
    history = summary.get("history") or []
    if history:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
        epochs = [h["epoch"] for h in history]
        left.plot(epochs, [h["train_loss"] for h in history], marker="o")
        left.set(title="training loss", xlabel="epoch")
        right.plot(epochs, [h["val_ndcg_at_10"] for h in history], marker="o", label="NDCG@10")
        right.plot(epochs, [h["val_hr_at_10"] for h in history], marker="o", label="HR@10")
        right.set(title="validation", xlabel="epoch")
        right.legend()
        fig.tight_layout()
        client.log_figure(run_id, fig, "training_curves.png")
        plt.close(fig)
    if not summary.get("model_uri"):
        return
    model, ids = load_network(summary["model_uri"], cfg.tracking_uri)
    items = read_table(spark, cfg, "item_profiles").select("item_idx", "title").toPandas()
    titles = dict(zip(items["item_idx"], items["title"]))
    users = (read_table(spark, cfg, "user_profiles").where(F.col("n_steps") > 0).orderBy(F.desc("n_steps"), "user_id")
             .limit(5).select("user_id", "seq_item_idx", "seq_type_idx", "purchased_item_idx").toPandas())
    if users.empty:
        return
    L = model.spec.max_len
    with torch.no_grad():
        top, scores, reasons = rank_catalogue(
            model, model.item_vectors(), torch.from_numpy(pad_left(users["seq_item_idx"].tolist(), L)),
            torch.from_numpy(pad_left(users["seq_type_idx"].tolist(), L)),
            exclusion_mask(users["purchased_item_idx"].tolist(), model.spec.num_items + 1), 10)
    rows = []
    for u, (user, seq) in enumerate(zip(users["user_id"], users["seq_item_idx"])):
        recent = " | ".join(str(titles.get(i, ids[i] if i < len(ids) else i)) for i in list(seq)[-5:])
        for rank, (item, score, reason) in enumerate(zip(top[u].tolist(), scores[u].tolist(), reasons[u].tolist()), 1):
            rows.append({"user_id": user, "recent_history": recent, "rank": rank, "item_id": ids[item],
                         "title": titles.get(item), "score": round(float(score), 4),
                         "reason": f"because of {titles.get(reason, ids[reason])}"})
    client.log_table(run_id, data=pd.DataFrame(rows), artifact_file="sample_recommendations.json")
