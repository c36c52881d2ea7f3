"""Batch scoring with Spark: the registered model, loaded once per Python worker, ranks the
whole catalogue for every user under the shop's rules (``scoring.*``); top-K rows with the
path that produced them (``source``) and an explanation a shopper can read (``reason``) go to
``recommendations``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
import logging
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config, ConfigError
from recsys.models.loading import pad_left
from recsys.events import EVENT_TYPES
from recsys.models.serving import load_network
from recsys.scoring.ranking import (MODEL, NEW_ITEM, POPULAR_IN_CATEGORY, SHORT_HISTORY, SOURCES, ItemRules,
                                    category_matches, padded, rank_users, with_new_items)
from recsys.reports import write_report
from recsys.tables import read_table, table_exists, write_table
from recsys.tracking import resolve_model_uri

log = logging.getLogger(__name__)

RECS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("rank", T.IntegerType()),
        T.StructField("item_idx", T.IntegerType()),
        T.StructField("score", T.FloatType()),  # null for a fill row
        T.StructField("reason_item_idx", T.IntegerType()),  # null for a fill row
        T.StructField("reason_event", T.StringType()),  # what the user did with the reason item
        T.StructField("source", T.StringType()),  # recsys.scoring.ranking.SOURCES
    ]
)
# "because you viewed X": the verb of the reason item's event type in the user's history.
VERBS = {"view": "viewed", "click": "clicked", "add_to_cart": "added to your cart", "purchase": "bought"}

# Item vectors per process and model URI: computed once per Python worker, not per partition.
_VECTORS: dict[str, Any] = {}


def item_rules(spark: SparkSession, cfg: Config) -> ItemRules:
    """The catalogue as the business rules see it (``scoring.*``), from ``item_profiles``:
    out-of-stock items (``in_stock_only``) and categories outside ``allow_categories`` or in
    ``deny_categories`` are never recommended; the fill ranks by ``popularity_rank``. Built on
    the driver (a few bytes per item) and shipped to each Python worker once."""
    sc = cfg.scoring
    rows = read_table(spark, cfg, "item_profiles").select(
        "item_idx", "category", "category_idx", "brand_idx", "in_stock", "popularity_rank").toPandas()
    n = int(rows["item_idx"].max()) if len(rows) else 0
    idx = rows["item_idx"].to_numpy(dtype=np.int64)

    def column(values, dtype, fill):
        out = np.full(n + 1, fill, dtype=dtype)
        out[idx] = values
        return out

    allowed = np.ones(len(rows), dtype=bool)
    if sc.in_stock_only:
        allowed &= rows["in_stock"].fillna(True).to_numpy(dtype=bool)
    if sc.allow_categories or sc.deny_categories:
        verdict = {c: (not sc.allow_categories or category_matches(c, sc.allow_categories))
                   and not category_matches(c, sc.deny_categories) for c in rows["category"].unique()}
        allowed &= rows["category"].map(verdict).to_numpy(dtype=bool)
    ranks = rows["popularity_rank"].fillna(len(rows) + 1).to_numpy(dtype=np.float64)
    return ItemRules(
        category=column(rows["category_idx"].fillna(0).to_numpy(dtype=np.int64), np.int64, 0),
        brand=column(rows["brand_idx"].fillna(0).to_numpy(dtype=np.int64), np.int64, 0),
        allowed=column(allowed, bool, False),
        popularity=column(-ranks, np.float64, -np.inf),
        max_per_brand=sc.max_per_brand,
        fill=sc.fill,
    )


@dataclass(frozen=True)
class NewItems:
    """Items added to the catalogue after the model was trained (item_idx above its catalogue)
    that have a text embedding: what the model needs to place them (numpy, picklable)."""

    idx: np.ndarray  # (M,) item_idx
    text: np.ndarray  # (M, dim) float32
    category: np.ndarray  # (M,) category_idx
    brand: np.ndarray  # (M,) brand_idx
    price: np.ndarray  # (M,) price_bucket


def new_items(spark: SparkSession, cfg: Config, trained_items: int) -> NewItems | None:
    """The items above the model's ``trained_items`` with a text embedding, or None."""
    if not table_exists(cfg, "item_text_embeddings"):
        return None
    rows = (read_table(spark, cfg, "item_profiles").where(F.col("item_idx") > trained_items)
            .join(read_table(spark, cfg, "item_text_embeddings").select("item_id", "embedding"), "item_id")
            .select("item_idx", "embedding", "category_idx", "brand_idx", "price_bucket").toPandas())
    if rows.empty:
        return None
    return NewItems(idx=rows["item_idx"].to_numpy(np.int64), text=np.stack(rows["embedding"].to_numpy()).astype(np.float32),
                    category=rows["category_idx"].fillna(0).to_numpy(np.int64),
                    brand=rows["brand_idx"].fillna(0).to_numpy(np.int64),
                    price=rows["price_bucket"].fillna(0).to_numpy(np.int64))


def cached_vectors(model_uri: str, model, fresh: NewItems | None):
    """``(vectors, no_vector)`` of :func:`~recsys.scoring.ranking.with_new_items` for this
    model and these new items, computed once per Python worker. The key is the model URI and
    a digest of the new items' ids and features, so new texts for the same ids are re-encoded."""
    import hashlib

    import torch

    digest = None
    if fresh is not None:
        h = hashlib.sha256()
        for a in (fresh.idx, fresh.text, fresh.category, fresh.brand, fresh.price):
            h.update(np.ascontiguousarray(a).tobytes())
        digest = h.hexdigest()
    key = (model_uri, digest)
    if key not in _VECTORS:
        with torch.no_grad():
            if fresh is None:
                _VECTORS[key] = (model.item_vectors(), None)
            else:
                _VECTORS[key] = with_new_items(model, model.item_vectors(), fresh.idx, fresh.text,
                                               fresh.category, fresh.brand, fresh.price)
    return _VECTORS[key]


def recommend_partition(model_uri: str, tracking_uri: str, rules: ItemRules, top_k: int, batch_size: int,
                        exclude: str = "purchased", block_items: int = 8192, fresh: NewItems | None = None):
    """The mapInPandas function: user rows (user_id, seq_item_idx, seq_type_idx,
    purchased_item_idx) → top-K rows with the path that produced each and, for the model's,
    the history item that best explains it.

    ``exclude``: "purchased" masks the items the user bought; "interacted" masks every item
    in the user's history (viewed, clicked, carted or bought). The network, the rules and the
    ranking are those of the served model (:mod:`recsys.scoring.ranking`): item vectors once
    per worker, users in batches of ``batch_size``, the catalogue in blocks of ``block_items``.
    ``fresh``: items added since training, placed by their text (source ``new_item``).
    """

    def fn(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        model, _ = load_network(model_uri, tracking_uri)
        L = model.spec.max_len
        with torch.no_grad():
            vectors, no_vector = cached_vectors(model_uri, model, fresh)
            pool = torch.from_numpy(rules.fill_pool(top_k))
            for pdf in frames:
                for start in range(0, len(pdf), batch_size):
                    part = pdf.iloc[start:start + batch_size]
                    items = torch.from_numpy(pad_left(part["seq_item_idx"].tolist(), L))
                    types = torch.from_numpy(pad_left(part["seq_type_idx"].tolist(), L))
                    seen = part["purchased_item_idx"] if exclude == "purchased" else part["seq_item_idx"]
                    out = rank_users(model, vectors, rules, items, types, padded(seen.tolist()), top_k,
                                     block_items=block_items, pool=pool, no_vector=no_vector)
                    B, k = out["items"].shape
                    frame = pd.DataFrame({
                        "user_id": np.repeat(part["user_id"].to_numpy(), k),
                        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), B),
                        "item_idx": out["items"].reshape(-1).numpy().astype(np.int32),
                        "score": out["scores"].reshape(-1).numpy().astype(np.float32),
                        "reason_item_idx": pd.array(out["reasons"].reshape(-1).numpy(), dtype="Int32"),
                        "reason_event": [EVENT_TYPES[t - 1] if t > 0 else None
                                         for t in out["reason_types"].reshape(-1).tolist()],
                        "source": [SOURCES[s] if s >= 0 else None for s in out["sources"].reshape(-1).tolist()],
                    })
                    frame.loc[frame["reason_item_idx"] == 0, "reason_item_idx"] = pd.NA
                    # A user who excluded nearly the whole catalogue gets fewer than K rows.
                    yield frame[frame["source"].notna()]

    return fn


def reason_text(source: Column, event: Column, reason_title: Column, category: Column) -> Column:
    """The sentence a shopper reads: "because you viewed <title>", "new in <category> like
    <title>", "popular in <category>", "popular in the shop"."""
    verb = F.coalesce(*[F.when(event == t, F.lit(v)) for t, v in VERBS.items()], F.lit("viewed"))
    leaf = F.element_at(F.split(category, r"\s*>\s*"), -1)
    return (F.when((source == NEW_ITEM) & reason_title.isNotNull() & leaf.isNotNull(),
                   F.concat(F.lit("new in "), leaf, F.lit(" like "), reason_title))
            .when(source.isin(MODEL, SHORT_HISTORY, NEW_ITEM) & reason_title.isNotNull(),
                   F.concat(F.lit("because you "), verb, F.lit(" "), reason_title))
            .when(source.isin(MODEL, SHORT_HISTORY, NEW_ITEM), F.lit("recommended for you"))
            .when((source == POPULAR_IN_CATEGORY) & leaf.isNotNull(), F.concat(F.lit("popular in "), leaf))
            .otherwise(F.lit("popular in the shop")))


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
    # Every user with a profile, a new one (no event the model knows) included: the fill serves them.
    users = read_table(spark, cfg, "user_profiles").select(
        "user_id", "seq_item_idx", "seq_type_idx", "purchased_item_idx"
    )
    rules = item_rules(spark, cfg)
    trained = load_network(model_uri, cfg.tracking_uri)[0].spec.num_items
    fresh = new_items(spark, cfg, trained)
    items = read_table(spark, cfg, "item_profiles").select("item_idx", "item_id", "title", "category")
    recs = users.mapInPandas(
        recommend_partition(model_uri, cfg.tracking_uri, rules, cfg.scoring.top_k, cfg.scoring.batch_size,
                            cfg.scoring.exclude.value, cfg.scoring.block_items, fresh),
        RECS_SCHEMA,
    )
    reason_items = items.select(F.col("item_idx").alias("reason_item_idx"), F.col("item_id").alias("reason_item_id"),
                                F.col("title").alias("reason_title"))
    out = (
        recs.join(F.broadcast(items), "item_idx")
        .join(F.broadcast(reason_items), "reason_item_idx", "left")
        .select(
            "user_id", "rank", "item_id", "score", "reason_item_id",
            reason_text(F.col("source"), F.col("reason_event"), F.col("reason_title"), F.col("category")).alias("reason"),
            "source", F.lit(version).alias("model_version"), F.lit(run_date).cast("date").alias("run_date"),
        )
    )
    path = cfg.table_path("recommendations")
    if table_exists(cfg, "recommendations"):
        # A table from an earlier version gains the new columns (reason, source).
        write_table(out, cfg, "recommendations", replace_where=f"run_date = '{run_date}'", merge_schema=True)
    else:
        write_table(out, cfg, "recommendations", partition_by=["run_date"])
    written = read_table(spark, cfg, "recommendations").where(F.col("run_date") == F.lit(run_date).cast("date"))
    report = {
        "model_uri": model_uri,
        "model_version": version,
        "run_date": run_date,
        "rows": written.count(),
        "users": written.select("user_id").distinct().count(),
        "new_items": 0 if fresh is None else len(fresh.idx),
        "rows_by_source": {r["source"]: r["count"] for r in written.groupBy("source").count().collect()},
        "rules": {k: getattr(cfg.scoring, k) for k in ("in_stock_only", "max_per_brand", "allow_categories",
                                                       "deny_categories", "fill")},
        "table": path,
    }
    write_report(cfg, "recommend", report)
    return report
