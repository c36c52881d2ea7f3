"""The search engine loaded from the lakehouse and the registry, and the ``search``,
``suggest`` and ``search-results`` stages.

``load_engine`` reads the gold tables once (item profiles, the catalogue's descriptions,
the item text embeddings, query stats and suggestions, user profiles and their recent
queries) and the registered models (the recommender behind ``tracking.alias`` and the search
ranker behind the same alias of ``search.ranker_model_name``), so a warm process answers
each request without Spark. Users are looked up by their pseudonym, computed from the raw id
exactly as at ingest.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
import pandas as pd

from recsys.config import Config
from recsys.errors import NoModelError, UsageError
from recsys.search.engine import FEATURES, SearchEngine, UserState

log = logging.getLogger(__name__)
RECENT_QUERIES = 20  # the newest queries of a user the suggestions look at


@dataclass
class Users:
    """Each known user's steps (item_idx, event type, time) and recent normalised queries."""

    steps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    queries: dict[str, list[tuple[Any, str]]]  # user → [(ts, query)], oldest first

    def state(self, engine: SearchEngine, user_id: str | None, before: Any = None) -> UserState:
        """The user as the engine sees them; ``before``: only what happened before this time."""
        return self.states(engine, [user_id], [before])[0]

    def states(self, engine: SearchEngine, user_ids: list[str | None], befores: list[Any] | None = None) -> list[UserState]:
        histories, queries = [], []
        for i, u in enumerate(user_ids):
            before = befores[i] if befores is not None else None
            known = u is not None and (u in self.steps or u in self.queries)
            if not known:
                histories.append(None)
                queries.append(None)
                continue
            items, types, ts = self.steps.get(u, (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, "datetime64[us]")))
            qs = self.queries.get(u, [])
            if before is not None:
                keep = ts < np.datetime64(pd.Timestamp(before).to_datetime64(), "us")
                items, types = items[keep], types[keep]
                qs = [q for q in qs if pd.Timestamp(q[0]) < pd.Timestamp(before)]
            histories.append((items, types))
            queries.append([q for _, q in qs[-RECENT_QUERIES:]])
        return engine.user_states(histories, queries)


def user_key(cfg: Config, raw_user_id: str | None) -> str | None:
    """The id a raw user id has in the tables: its pseudonym, computed as at ingest."""
    if raw_user_id is None or not str(raw_user_id).strip():
        return None
    if not cfg.privacy.pseudonymise:
        return str(raw_user_id)
    from recsys.privacy import pseudonymise, resolve_key

    return pseudonymise(str(raw_user_id), resolve_key(cfg))


def load_catalogue(spark, cfg: Config) -> tuple[pd.DataFrame, np.ndarray]:
    """Item profiles with their descriptions, and their text embeddings ((n, D), unit norm;
    zeros for an item without one)."""
    from pyspark.sql import functions as F

    from recsys.tables import read_table, table_exists

    items = read_table(spark, cfg, "item_profiles").select(
        "item_id", "item_idx", "title", "category", "top_category", "category_idx", "brand", "brand_idx",
        "price", "price_bucket", "in_stock", "users", "ctr", "conversion")
    items = items.join(read_table(spark, cfg, "catalog").select("item_id", "description"), "item_id", "left")
    if table_exists(cfg, "item_text_embeddings", spark):
        emb = read_table(spark, cfg, "item_text_embeddings").select("item_id", "embedding")
        items = items.join(emb, "item_id", "left")
    else:
        items = items.withColumn("embedding", F.lit(None).cast("array<float>"))
    pdf = items.orderBy("item_idx").toPandas()
    dim = next((len(v) for v in pdf["embedding"] if v is not None), 1)
    embeddings = np.zeros((len(pdf), dim), dtype=np.float32)
    for i, v in enumerate(pdf["embedding"]):
        if v is not None:
            embeddings[i] = v
    return pdf.drop(columns=["embedding"]), embeddings


class QueryEncoder:
    """text → unit-norm sentence embedding, with the encoder of ``item_text_embeddings``.
    Loaded on first use and not pickled: a Spark task that receives the engine loads its own
    copy from the same path, once per worker process."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path

    def __call__(self, text: str) -> np.ndarray:
        from recsys.features.text import load_encoder

        model = load_encoder(self.model_path)
        fast = _mean_pooled(model)
        if fast is None:
            return model.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[0]
        return fast(text)


def _mean_pooled(model):
    """For the usual Transformer → mean Pooling (→ Normalize) sentence-transformers pipeline,
    a function that encodes one text with the tokenizer and the transformer directly: the same
    vector as ``model.encode`` (tested) without its batching machinery, which costs a fifth of
    a single short query's time. None for any other pipeline (``encode`` is used)."""
    fast = getattr(model, "_recsys_one_text", False)
    if fast is not False:
        return fast
    import torch

    modules = list(model)
    names = [type(m).__name__ for m in modules]
    pooling = modules[1] if len(modules) > 1 else None
    fast = None
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers 5: "mean", "cls", …
    mean_only = mode == "mean" if isinstance(mode, str) else (  # older: one flag per mode
        getattr(pooling, "pooling_mode_mean_tokens", False)
        and not any(getattr(pooling, f"pooling_mode_{m}", False)
                    for m in ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")))
    if names[:2] == ["Transformer", "Pooling"] and set(names[2:]) <= {"Normalize"} and mean_only \
            and hasattr(modules[0], "auto_model") and getattr(model, "tokenizer", None) is not None:
        tokenizer, bert, max_len = model.tokenizer, modules[0].auto_model, model.max_seq_length

        def fast(text: str) -> np.ndarray:
            with torch.inference_mode():
                batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_len)
                hidden = bert(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                v = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(v, dim=1)[0].numpy()
    model._recsys_one_text = fast
    return fast


def query_encoder(cfg: Config) -> QueryEncoder:
    from recsys.features.text import resolve_text_model

    return QueryEncoder(resolve_text_model(cfg)[0])


def load_recommender(cfg: Config) -> tuple[tuple[Any, Any] | None, str | None]:
    """``((network, item vectors), version)`` of the serving recommender, or ``(None, None)``."""
    import torch

    from recsys.models.serving import load_network
    from recsys.tracking import resolve_model_uri

    try:
        uri, version = resolve_model_uri(cfg)
    except NoModelError:
        return None, None
    model, _ = load_network(uri, cfg.tracking_uri)
    with torch.no_grad():
        vectors = model.item_vectors()
    return (model, vectors), version


def load_ranker(cfg: Config, alias: str | None = None) -> tuple[Any, str | None]:
    """``(LightGBM booster, version)`` of the search ranker behind ``alias`` (default the
    serving alias), or ``(None, None)`` when none is registered."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.tracking import setup_from_config

    setup_from_config(cfg)
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(cfg.search.ranker_model_name, alias or cfg.tracking.alias)
    except MlflowException:
        return None, None
    import mlflow.lightgbm

    return mlflow.lightgbm.load_model(f"models:/{cfg.search.ranker_model_name}/{mv.version}"), str(mv.version)


def load_users(spark, cfg: Config) -> Users:
    from pyspark.sql import functions as F

    from recsys.tables import read_table, table_exists

    prof = read_table(spark, cfg, "user_profiles").select(
        "user_id", "seq_item_idx", "seq_type_idx", F.transform("history", lambda h: h["ts"]).alias("step_ts")).toPandas()
    steps = {r.user_id: (np.asarray(r.seq_item_idx if r.seq_item_idx is not None else [], np.int64),
                         np.asarray(r.seq_type_idx if r.seq_type_idx is not None else [], np.int64),
                         np.asarray(pd.to_datetime(list(r.step_ts) if r.step_ts is not None else []), "datetime64[us]"))
             for r in prof.itertuples(index=False)}
    queries: dict[str, list[tuple[Any, str]]] = {}
    if table_exists(cfg, "searches", spark):
        for r in read_table(spark, cfg, "searches").select("user_id", "ts", "query_norm").orderBy("ts", "search_id").toPandas().itertuples(index=False):
            queries.setdefault(r.user_id, []).append((r.ts, r.query_norm))
    return Users(steps, queries)


def load_query_tables(spark, cfg: Config) -> tuple[dict, dict]:
    """``(prefix → completions, query → engaged items)`` from ``query_suggestions`` and
    ``query_stats`` (empty when build-search has not run)."""
    from recsys.tables import read_table, table_exists

    suggestions: dict[str, list[tuple[str, float, int, int]]] = {}
    query_items: dict[str, list[tuple[str, float]]] = {}
    if table_exists(cfg, "query_suggestions", spark):
        for r in read_table(spark, cfg, "query_suggestions").toPandas().itertuples(index=False):
            suggestions[r.prefix] = [(c["query"], float(c["weight"]), int(c["searches"]), int(c["users"])) for c in r.completions]
    if table_exists(cfg, "query_stats", spark):
        for r in read_table(spark, cfg, "query_stats").select("query_norm", "top_items").toPandas().itertuples(index=False):
            query_items[r.query_norm] = [(t["item_id"], float(t["score"])) for t in (r.top_items if r.top_items is not None else [])]
    return suggestions, query_items


def load_engine(spark, cfg: Config, *, ranker: bool = True) -> tuple[SearchEngine, Users, dict[str, Any]]:
    """The engine over the lakehouse's tables and the registered models, the users, and
    what was loaded (versions)."""
    items, embeddings = load_catalogue(spark, cfg)
    suggestions, query_items = load_query_tables(spark, cfg)
    recommender, rec_version = load_recommender(cfg)
    booster, ranker_version = load_ranker(cfg) if ranker else (None, None)
    engine = SearchEngine(items, embeddings, query_encoder(cfg), recommender=recommender, ranker=booster,
                          ranker_features=booster.feature_name() if booster is not None else FEATURES,
                          suggestions=suggestions, query_items=query_items, candidates=cfg.search.candidates)
    engine.query_vector("warm up")  # load the encoder now, not on the first request
    info = {"items": len(items), "recommender_version": rec_version, "ranker_version": ranker_version,
            "prefixes": len(suggestions), "queries": len(query_items)}
    return engine, load_users(spark, cfg), info


# --- stages --------------------------------------------------------------------------------

def search(spark: SparkSession | None, cfg: Config, *, raw_user_id: str | None = None, query: str | None = None,
           top_k: int | None = None) -> dict[str, Any]:
    """``recsys search --user U --query Q``: the top results with a reason each."""
    if query is None:
        raise UsageError("recsys search needs --query \"…\" (and --user <raw id> for personal results)")
    top_k = _top_k(cfg, top_k)
    engine, users, info = load_engine(spark, cfg)
    uid = user_key(cfg, raw_user_id)
    res = engine.search(query, users.state(engine, uid), top_k)
    return {"user": raw_user_id, "query": res.query, "normalised": res.normalised, "personalised": res.personalised,
            "note": res.note, "results": res.items, "ms": round(res.seconds * 1000, 1), **info}


def suggest(spark: SparkSession | None, cfg: Config, *, raw_user_id: str | None = None, prefix: str | None = None,
            top_k: int | None = None) -> dict[str, Any]:
    """``recsys suggest --user U --prefix P``: completions of a typed prefix."""
    if prefix is None:
        raise UsageError("recsys suggest needs --prefix \"…\" (and --user <raw id> for personal suggestions)")
    top_k = _top_k(cfg, top_k)
    engine, users, info = load_engine(spark, cfg, ranker=False)
    out = engine.suggest(prefix, users.state(engine, user_key(cfg, raw_user_id)), top_k, cfg.search.personalise)
    out["ms"] = round(out.pop("seconds") * 1000, 2)
    return {"user": raw_user_id, **out, "prefixes": info["prefixes"]}


def _top_k(cfg: Config, top_k: Any) -> int:
    k = cfg.search.top_k if top_k is None else top_k
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise UsageError(f"--top-k must be a whole number, got {top_k!r}") from None
    if not 1 <= k <= 1000:
        raise UsageError(f"--top-k must be between 1 and 1000, got {k}")
    return k


def render_search(r: dict[str, Any]) -> str:
    head = f"search {r['query'][:60]!r} (normalised {r['normalised']!r}) for user {r['user'] or '-'}: " \
           f"{'personalised' if r['personalised'] else 'not personalised'}, {r['ms']} ms"
    lines = [head] + ([f"  note: {r['note']}"] if r["note"] else [])
    for x in r["results"]:
        lines.append(f"  {x['rank']:>2}. {x['title'][:48]:<48} {x['category'].split('>')[-1].strip()[:22]:<22} "
                     f"{x['item_id']}  — {x['reason']}")
    return "\n".join(lines)


def render_suggest(r: dict[str, Any]) -> str:
    head = f"suggest {r['prefix']!r} for user {r['user'] or '-'}: " \
           f"{'personalised' if r['personalised'] else 'not personalised'}, {r['ms']} ms"
    lines = [head] + ([f"  note: {r['note']}"] if r["note"] else [])
    lines += [f"  {i + 1:>2}. {s['query']:<32} ({s['searches']} searches) — {s['reason']}" for i, s in enumerate(r["suggestions"])]
    return "\n".join(lines)


# --- the batch job -------------------------------------------------------------------------

def search_results(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Rank every logged search of one day (``search.run_date``, default the newest) and
    write the top ``search.top_k`` of each to ``search_results`` (the day's partition is
    replaced): for offline evaluation and replay.

    The engine (catalogue, indexes, models; the text encoder by its path) is built on the
    driver and shipped to the executors with the task; each task ranks its searches with each
    user's history as it stood before the search."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from recsys.errors import DataError
    from recsys.reports import write_report
    from recsys.tables import read_table, write_table

    searches = read_table(spark, cfg, "searches")
    day = cfg.search.run_date or searches.agg(F.max("event_date")).first()[0]
    if day is None:
        raise DataError("the searches table is empty: nothing to rank (run `recsys build-search` after ingest)")
    day = dt.date.fromisoformat(str(day))
    todo = searches.where(F.col("event_date") == F.lit(day)).select("search_id", "user_id", "ts", "query_norm")
    engine, users, info = load_engine(spark, cfg)
    top_k = cfg.search.top_k
    ranker_version = info["ranker_version"] or ""

    def rank_partition(frames):
        eng, us = engine, users  # shipped once per task with the function (cloudpickle)
        for pdf in frames:
            states = us.states(eng, pdf["user_id"].tolist(), pdf["ts"].tolist())
            rows = []
            for (sid, uid, q), st in zip(pdf[["search_id", "user_id", "query_norm"]].itertuples(index=False), states):
                res = eng.search(q, st, top_k)
                rows += [(sid, uid, q, x["rank"], x["item_id"], float(x["score"]), x["reason"], res.personalised)
                         for x in res.items]
            yield pd.DataFrame(rows, columns=["search_id", "user_id", "query_norm", "rank", "item_id", "score",
                                              "reason", "personalised"])

    schema = T.StructType([T.StructField("search_id", T.StringType()), T.StructField("user_id", T.StringType()),
                           T.StructField("query_norm", T.StringType()), T.StructField("rank", T.LongType()),
                           T.StructField("item_id", T.StringType()), T.StructField("score", T.DoubleType()),
                           T.StructField("reason", T.StringType()), T.StructField("personalised", T.BooleanType())])
    out = (todo.mapInPandas(rank_partition, schema)
           .withColumn("rank", F.col("rank").cast("int"))
           .withColumn("ranker_version", F.lit(ranker_version))
           .withColumn("run_date", F.lit(day)))
    write_table(out, cfg, "search_results", partition_by=["run_date"], replace_where=f"run_date = '{day}'"
                if _exists(spark, cfg) else None)
    written = read_table(spark, cfg, "search_results").where(F.col("run_date") == F.lit(day))
    report = {"run_date": str(day), "searches": todo.count(), "rows": written.count(),
              "personalised_searches": written.where("personalised").select("search_id").distinct().count(), **info}
    write_report(cfg, "search_results", report)
    return report


def _exists(spark, cfg: Config) -> bool:
    from recsys.tables import table_exists

    return table_exists(cfg, "search_results", spark)
