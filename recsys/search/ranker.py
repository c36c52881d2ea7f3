"""The learned search ranker: LambdaMART (LightGBM's ``lambdarank``) over the engine's
features of (query, item, user), trained on the graded labels of the ``searches`` table.

Why LightGBM: gradient-boosted trees are the standard learning-to-rank model for tabular
features of mixed scales (BM25, cosines, rates, affinities, a recommender score) with
missing values (an unknown user), train in seconds on the driver for the tens of thousands
of labelled searches a shop logs a month, and predict a few hundred candidates in well under
a millisecond. (XGBoost's Spark estimator would spread the training over executors; at this
size a single process is faster than the shuffle.)

Training rows: every logged search that was followed by an engagement, its merged candidates
(BM25 + embeddings), each labelled with the deepest funnel stage the shopper reached on it
after the search (0 none, 1 view … 4 purchase); the user's features as of the search's time
(only their earlier steps). The searches of the last ``search.holdout_days`` days validate
(early stopping, the figures logged to MLflow and the promotion decision); the rest train.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any, Sequence

import numpy as np
from pyspark.sql import SparkSession
import pandas as pd

from recsys.config import Config
from recsys.errors import DataError
from recsys.search.engine import BASE_FEATURES, FEATURES, SearchEngine, UserState

METHODS = ("bm25", "embeddings", "hybrid", "ranker_base", "ranker")
K = 10
MRR_DEPTH = 100  # MRR counts the first engaged item in the top 100


def graded_metrics(ranked: Sequence[str], relevance: dict[str, int], k: int = K) -> dict[str, float]:
    """Graded NDCG@k (gain 2^rel − 1), reciprocal rank of the first engaged item (within
    MRR_DEPTH) and HR@k of one ranked list against the engaged items' relevance."""
    gains = [(2 ** relevance.get(item, 0) - 1) for item in ranked[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted((2 ** r - 1 for r in relevance.values()), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    rr = next((1.0 / (i + 1) for i, item in enumerate(ranked[:MRR_DEPTH]) if relevance.get(item, 0) > 0), 0.0)
    return {"ndcg@10": dcg / idcg if idcg > 0 else 0.0, "mrr": rr,
            "hr@10": float(any(relevance.get(item, 0) > 0 for item in ranked[:k]))}


def labelled_searches(spark, cfg: Config) -> pd.DataFrame:
    """The searches followed by an engagement: search_id, user_id, ts, event_date,
    query_norm and ``relevance`` (item → deepest stage)."""
    from pyspark.sql import functions as F

    from recsys.tables import read_table

    pdf = read_table(spark, cfg, "searches").where(F.col("n_engaged") > 0) \
        .select("search_id", "user_id", "ts", "event_date", "query_norm", "engaged") \
        .orderBy("ts", "search_id").toPandas()
    pdf["relevance"] = [{e["item_id"]: int(e["relevance"]) for e in engaged} for engaged in pdf["engaged"]]
    return pdf.drop(columns=["engaged"])


def training_matrix(engine: SearchEngine, searches: pd.DataFrame, states: list[UserState]) -> pd.DataFrame:
    """One row per (search, candidate): :data:`FEATURES`, ``label`` and ``qid`` (the
    search's row number). Searches none of whose engaged items is a candidate are left out:
    no ranking of the candidates can place them."""
    frames = []
    cache: dict[str, dict[str, Any]] = {}
    for qid, (row, st) in enumerate(zip(searches.itertuples(index=False), states)):
        r = cache.get(row.query_norm)
        if r is None:
            r = cache[row.query_norm] = engine.retrieve(row.query_norm)
        cand = r["candidates"]
        labels = np.array([row.relevance.get(engine.item_ids[p], 0) for p in cand])
        if not labels.any():
            continue
        f = engine.features(r, st, cand)
        f["label"], f["qid"] = labels, qid
        frames.append(f)
    if not frames:
        raise DataError("no logged search has an engaged item among its candidates: nothing to train the search ranker on")
    return pd.concat(frames, ignore_index=True)


def fit(train: pd.DataFrame, valid: pd.DataFrame | None, features: Sequence[str], seed: int = 42):
    """A LightGBM lambdarank booster over ``features`` (early stopping on ``valid``'s NDCG@10)."""
    import lightgbm as lgb

    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [K], "learning_rate": 0.1,
              "num_leaves": 31, "min_data_in_leaf": 20, "feature_fraction": 0.9, "bagging_fraction": 0.9,
              "bagging_freq": 1, "lambdarank_truncation_level": 20, "seed": seed, "deterministic": True,
              "num_threads": 2, "verbose": -1}

    def dataset(df: pd.DataFrame, ref=None):
        groups = df.groupby("qid", sort=False).size().to_numpy()
        return lgb.Dataset(df[list(features)].to_numpy(np.float64), df["label"].to_numpy(), group=groups,
                           feature_name=list(features), reference=ref, free_raw_data=False)

    dtrain = dataset(train)
    sets, callbacks = [dtrain], []
    if valid is not None and len(valid):
        sets.append(dataset(valid, dtrain))
        callbacks.append(lgb.early_stopping(30, verbose=False))
    return lgb.train(params, dtrain, num_boost_round=400, valid_sets=sets, callbacks=callbacks)


def evaluate_methods(engine: SearchEngine, searches: pd.DataFrame, states: list[UserState],
                     rankers: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean graded NDCG@10, MRR and HR@10 over ``searches`` (full-catalogue ranking) for
    BM25, embeddings, the hybrid and each ``rankers`` entry (name → booster)."""
    sums: dict[str, dict[str, float]] = {}
    saved = engine.ranker, engine.ranker_features
    cache: dict[str, dict[str, Any]] = {}
    try:
        for row, st in zip(searches.itertuples(index=False), states):
            r = cache.get(row.query_norm)
            if r is None:
                r = cache[row.query_norm] = engine.retrieve(row.query_norm)
            runs = [("bm25", None), ("embeddings", None), ("hybrid", None), *rankers.items()]
            for name, booster in runs:
                if booster is not None:
                    engine.ranker, engine.ranker_features = booster, booster.feature_name()
                    order, _, _ = engine.rank(r, st, "ranker")
                else:
                    order, _, _ = engine.rank(r, st, name)
                m = graded_metrics(engine.item_ids[order[:MRR_DEPTH]].tolist(), row.relevance)
                acc = sums.setdefault(name, {k: 0.0 for k in m})
                for key, v in m.items():
                    acc[key] += v
    finally:
        engine.ranker, engine.ranker_features = saved
    n = max(len(searches), 1)
    return {name: {k: round(v / n, 4) for k, v in acc.items()} for name, acc in sums.items()}


def split_by_days(searches: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, valid): valid is the searches of the last ``holdout_days`` days."""
    last = pd.to_datetime(searches["event_date"]).max()
    cut = last - pd.Timedelta(days=holdout_days)
    in_valid = pd.to_datetime(searches["event_date"]) > cut
    return searches[~in_valid].reset_index(drop=True), searches[in_valid].reset_index(drop=True)


def train_search_ranker(spark: SparkSession, cfg: Config) -> dict[str, Any]:
    """Train the search ranker, log it to MLflow and register it as ``search.ranker_model_name``
    with the challenger alias; it becomes the champion (serves) when it is the first, or when
    its validation NDCG@10 is at least the champion's on the same searches (minus
    ``promotion.tolerance``), or with ``promotion.force``."""
    import mlflow

    from recsys.reports import write_report
    from recsys.search.service import load_engine, load_ranker
    from recsys.tracking import setup_from_config

    t0 = time.time()
    engine, users, info = load_engine(spark, cfg, ranker=False)
    searches = labelled_searches(spark, cfg)
    if len(searches) < 10:
        raise DataError(f"only {len(searches)} logged searches were followed by an engagement: too few to train the "
                        "search ranker (ingest more logs, then `recsys build-search`)")
    train_s, valid_s = split_by_days(searches, cfg.search.holdout_days)
    if len(train_s) == 0:
        train_s, valid_s = searches, searches.iloc[0:0]
    states = lambda df: users.states(engine, df["user_id"].tolist(), df["ts"].tolist())  # noqa: E731
    train_states, valid_states = states(train_s), states(valid_s)
    train_m = training_matrix(engine, train_s, train_states)
    valid_m = training_matrix(engine, valid_s, valid_states) if len(valid_s) else None
    features = FEATURES if cfg.search.personalise else BASE_FEATURES
    booster = fit(train_m, valid_m, features, cfg.train.seed)
    base = fit(train_m, valid_m, BASE_FEATURES, cfg.train.seed) if cfg.search.personalise else booster
    champion, champion_version = load_ranker(cfg)
    rankers = {"ranker": booster, "ranker_base": base}
    if champion is not None:
        rankers["champion"] = champion
    figures = evaluate_methods(engine, valid_s, valid_states, rankers) if len(valid_s) else {}

    # In the project's experiment (and its artifact location), not MLflow's Default one.
    experiment_id = setup_from_config(cfg)
    with mlflow.start_run(experiment_id=experiment_id, run_name="search-ranker") as run:
        mlflow.set_tag("recsys.kind", "search-ranker")
        mlflow.log_params({"features": ",".join(features), "train_searches": len(train_s), "valid_searches": len(valid_s),
                           "train_rows": len(train_m), "holdout_days": cfg.search.holdout_days,
                           "candidates": cfg.search.candidates, "recommender_version": info["recommender_version"],
                           "best_iteration": booster.best_iteration})
        for method, m in figures.items():
            mlflow.log_metrics({f"valid_{method}_{k.replace('@', '_at_')}": v for k, v in m.items()})
        example = train_m[list(features)].head(5).astype("float64")
        logged = mlflow.lightgbm.log_model(booster, name="ranker", input_example=example,
                                           registered_model_name=cfg.search.ranker_model_name)
        version = str(logged.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(cfg.search.ranker_model_name, cfg.tracking.challenger_alias, version)
    new = figures.get("ranker", {}).get("ndcg@10")
    old = figures.get("champion", {}).get("ndcg@10")
    promoted = champion is None or cfg.promotion.force or new is None or old is None \
        or new >= old - cfg.promotion.tolerance
    if promoted:
        client.set_registered_model_alias(cfg.search.ranker_model_name, cfg.tracking.alias, version)
    report = {"finished_at": dt.datetime.now(dt.timezone.utc).isoformat(), "seconds": round(time.time() - t0, 1),
              "run_id": run.info.run_id, "version": version, "promoted": promoted,
              "champion_before": champion_version, "train_searches": len(train_s), "valid_searches": len(valid_s),
              "train_rows": len(train_m), "best_iteration": booster.best_iteration, "valid": figures,
              "recommender_version": info["recommender_version"]}
    write_report(cfg, "search_ranker", report)
    return report
