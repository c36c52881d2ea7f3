"""How good are the audiences? A hold-out evaluation of "whom to target" (``recsys audiences --evaluate``,
``bench/audiences.py``).

The rows are the ``test`` split of ``training_examples``: each user's held-out last step is
the answer, everything before it the input (the model never trained on the answer). The
targets are the items, and the categories, that at least ``audiences.eval_min_buyers`` users
took as their held-out step; a target's buyers are those users. For each target every scorer
picks the ``size`` users it rates most likely, and

    precision@N = |picked ∩ buyers| / N,  recall@N = |picked ∩ buyers| / |buyers|

averaged over the targets (items and categories apart). Nothing the scorers see depends on
the answer: an item's audience leaves out the users whose *history* has the item (as the
audience job does with ``audiences.exclude_buyers``), and a buyer left out that way counts as a
miss for every scorer, as a repeated target does in the headline ranking protocol.

The scorers:

- ``model``: the registered model's log P(next item ∈ target | history)
  (:func:`recsys.scoring.audiences.audience_log_probs`), as the audience job ranks;
- ``popularity_by_category``: the marketer's rule, users by how many of their history's
  items are in the target's category (an item's own category), the more active first on ties;
- ``als``: Spark ML implicit ALS fitted on the training steps (the ranking baseline's
  settings); item audiences come from ``ALSModel.recommendForItemSubset``, a category's from
  user factors · the sum of its items' factors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.errors import DataError
from recsys.tables import read_table

log = logging.getLogger(__name__)

SCORERS = ("model", "popularity_by_category", "als")


def top_rows(scores: np.ndarray, excluded: np.ndarray | None, n: int) -> list[np.ndarray]:
    """For each column of ``scores`` (U, T): the rows of its ``n`` best, excluded rows never
    (ties: the earlier row first)."""
    out = []
    for t in range(scores.shape[1]):
        s = scores[:, t].astype(np.float64).copy()
        if excluded is not None:
            s[excluded[:, t]] = -np.inf
        order = np.argsort(-s, kind="stable")[:n]
        out.append(order[np.isfinite(s[order])])
    return out


def precision_recall(picked: list[np.ndarray], truth: list[np.ndarray], n: int) -> dict[str, float]:
    """Mean precision@n and recall@n over the targets."""
    p, r = [], []
    for rows, buyers in zip(picked, truth):
        hits = len(np.intersect1d(rows, buyers))
        p.append(hits / n)
        r.append(hits / max(len(buyers), 1))
    return {"precision": float(np.mean(p)) if p else 0.0, "recall": float(np.mean(r)) if r else 0.0}


def model_scores(model_uri: str, tracking_uri: str, rows: pd.DataFrame, targets: list[list[int]],
                 batch_size: int, block_items: int) -> np.ndarray:
    """(U, T) log P(next ∈ target | input) of the registered model, batch by batch."""
    import torch

    from recsys.models.loading import pad_left
    from recsys.models.serving import load_network
    from recsys.scoring.audiences import audience_log_probs

    model, _ = load_network(model_uri, tracking_uri)
    L = model.spec.max_len
    out = np.full((len(rows), len(targets)), -np.inf, dtype=np.float32)
    with torch.no_grad():
        vectors = model.item_vectors()
        n_model = vectors.shape[0] - 1
        for start in range(0, len(rows), batch_size):
            part = rows.iloc[start:start + batch_size]
            items = torch.from_numpy(pad_left([list(x) for x in part["input_items"]], L))
            types = torch.from_numpy(pad_left([list(x) for x in part["input_types"]], L))
            known = (items > 0) & (items <= n_model)
            items, types = items.masked_fill(~known, 0), types.masked_fill(~known, 0)
            h = model.encode(items, types, vectors)[:, -1]
            s = audience_log_probs(h, vectors, targets, block_items=block_items)
            s[~known.any(1)] = float("-inf")
            out[start:start + len(part)] = s.numpy()
    return out


def category_counts(rows: pd.DataFrame, cat_of: np.ndarray, n_cats: int) -> np.ndarray:
    """(U, n_cats + 1): how many of each row's history items are in each category (last column: none)."""
    counts = np.zeros((len(rows), n_cats + 1), dtype=np.float64)
    for u, hist in enumerate(rows["input_items"]):
        cats = cat_of[np.asarray(list(hist), dtype=np.int64).clip(0, len(cat_of) - 1)]
        np.add.at(counts[u], np.where(cats >= 0, cats, n_cats), 1.0)
    return counts


def evaluate_audiences(spark: SparkSession, cfg: Config, *, size: int | None = None, split: str = "test",
                       scorers: tuple[str, ...] = SCORERS, log_to_mlflow: bool = True) -> dict[str, Any]:
    """Precision@N and recall@N of each scorer's audiences on ``split`` (module docstring).

    Raises:
        DataError: no rows, or no target with enough held-out buyers.
        NoModelError: no model is registered (with "model" among ``scorers``).
    """
    from recsys.evaluation.baselines import fit_als_model, training_sequences

    n = size or cfg.audiences.size
    examples = read_table(spark, cfg, "training_examples")
    rows = (examples.where(F.col("split") == split).select("user_id", "input_items", "input_types", "history_items", "target")
            .orderBy("user_id").toPandas())
    if rows.empty:
        raise DataError(f"training_examples has no '{split}' rows: run `recsys build-profiles` first")
    catalogue = read_table(spark, cfg, "item_profiles").select("item_idx", "category").toPandas()
    num_items = int(catalogue["item_idx"].max())
    codes, cats = pd.factorize(catalogue["category"])  # -1 for no category
    cat_of = np.full(num_items + 1, -1, dtype=np.int64)
    cat_of[catalogue["item_idx"].to_numpy(np.int64)] = codes
    target = rows["target"].to_numpy(np.int64)
    min_buyers = cfg.audiences.eval_min_buyers

    item_count = np.bincount(target, minlength=num_items + 1)
    item_targets = [int(i) for i in np.flatnonzero(item_count >= min_buyers) if i > 0]
    target_cat = cat_of[target.clip(0, num_items)]
    cat_count = np.bincount(target_cat[target_cat >= 0], minlength=len(cats))
    # One category for the whole catalogue (a dataset without categories) is no audience question.
    cat_targets = [int(c) for c in np.flatnonzero(cat_count >= min_buyers)] if len(cats) > 1 else []
    if not item_targets and not cat_targets:
        raise DataError(f"no item or category with at least {min_buyers} held-out buyers "
                        f"(audiences.eval_min_buyers) among {len(rows)} '{split}' rows")
    by_item = {i: np.flatnonzero(target == i) for i in item_targets}
    truth_items = [by_item[i] for i in item_targets]
    truth_cats = [np.flatnonzero(target_cat == c) for c in cat_targets]
    # An item's audience leaves out the users whose history has it (depends on the input only).
    col_of = {i: t for t, i in enumerate(item_targets)}
    excluded = np.zeros((len(rows), len(item_targets)), dtype=bool)
    for u, hist in enumerate(rows["history_items"]):
        for i in set(int(x) for x in hist):
            t = col_of.get(i)
            if t is not None:
                excluded[u, t] = True
    members = [[i] for i in item_targets] + [np.flatnonzero(cat_of == c).tolist() for c in cat_targets]
    T = len(item_targets)

    picked: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    version = None
    if "model" in scorers:
        from recsys.evaluation.evaluate import models_to_evaluate

        _, model_uri, version = models_to_evaluate(cfg)[0]
        s = model_scores(model_uri, cfg.tracking_uri, rows, members, cfg.audiences.batch_size, cfg.scoring.block_items)
        picked["model"] = (top_rows(s[:, :T], excluded, n), top_rows(s[:, T:], None, n))
    if "popularity_by_category" in scorers:
        counts = category_counts(rows, cat_of, len(cats))
        activity = rows["input_items"].map(len).to_numpy(np.float64)
        tie = activity / (activity.max() + 1.0)  # < 1: only breaks ties of the counts
        item_cols = np.where(cat_of[item_targets] >= 0, cat_of[item_targets], len(cats)) if T else np.zeros(0, int)
        s_items = counts[:, item_cols] + tie[:, None]
        s_cats = counts[:, cat_targets] + tie[:, None]
        picked["popularity_by_category"] = (top_rows(s_items, excluded, n), top_rows(s_cats, None, n))
    if "als" in scorers:
        als, users = fit_als_model(spark, training_sequences(examples), num_items, cfg.evaluation, cfg.train.seed)
        ids = users.toPandas()
        row_of_user = pd.Series(np.arange(len(rows)), index=rows["user_id"])
        row_of_idx = pd.Series(row_of_user.reindex(ids["user_id"]).to_numpy(), index=ids["user_idx"].to_numpy())
        als_items: list[np.ndarray] = []
        if T:
            extra = int(excluded.sum(0).max())
            subset = spark.createDataFrame([(i,) for i in item_targets], "item_idx int")
            recs = {r["item_idx"]: [x["user_idx"] for x in r["recommendations"]]
                    for r in als.recommendForItemSubset(subset, n + extra).collect()}
            for t, i in enumerate(item_targets):
                found = row_of_idx.reindex(recs.get(i, [])).dropna().to_numpy(np.int64)
                als_items.append(found[~excluded[found, t]][:n])
        uf = als.userFactors.toPandas()
        user_f = np.zeros((len(rows), cfg.evaluation.als_rank), dtype=np.float64)
        at = row_of_idx.reindex(uf["id"].to_numpy())
        ok = at.notna().to_numpy()
        user_f[at[ok].to_numpy(np.int64)] = np.stack(uf["features"].to_numpy()[ok]) if ok.any() else 0.0
        itf = als.itemFactors.toPandas()
        item_f = np.zeros((num_items + 1, cfg.evaluation.als_rank), dtype=np.float64)
        item_f[itf["id"].to_numpy(np.int64)] = np.stack(itf["features"].to_numpy())
        s_cats = user_f @ np.stack([item_f[m].sum(0) for m in members[T:]], 1) if cat_targets else np.zeros((len(rows), 0))
        picked["als"] = (als_items, top_rows(s_cats, None, n))

    report: dict[str, Any] = {"split": split, "size": n, "rows": len(rows), "model_version": version,
                              "min_buyers": min_buyers}
    for kind, truth, k in (("item", truth_items, 0), ("category", truth_cats, 1)):
        figures = {name: precision_recall(p[k], truth, n) for name, p in picked.items()}
        best = max((figures[b]["precision"] for b in figures if b != "model"), default=None)
        report[kind] = {
            "targets": len(truth), "buyers": int(sum(len(b) for b in truth)), "scorers": figures,
            "lift": (figures["model"]["precision"] / best) if "model" in figures and best else None,
        }
    if log_to_mlflow and version is not None:
        import mlflow

        from recsys.tracking import setup_from_config

        setup_from_config(cfg)
        run_id = mlflow.MlflowClient().get_model_version(cfg.tracking.model_name, version).run_id
        with mlflow.start_run(run_id=run_id):
            for kind in ("item", "category"):
                for name, m in report[kind]["scorers"].items():
                    mlflow.log_metrics({f"audience_{kind}_{name}_precision_at_{n}": m["precision"],
                                        f"audience_{kind}_{name}_recall_at_{n}": m["recall"]})
        report["mlflow_run_id"] = run_id
    return report


def render_evaluation(e: dict[str, Any]) -> str:
    """The evaluation as a small table."""
    n = e["size"]
    lines = [f"hold-out evaluation ({e['split']} split, {e['rows']} users, targets with >= {e['min_buyers']} buyers):"]
    for kind in ("item", "category"):
        k = e[kind]
        lines.append(f"  {kind} audiences: {k['targets']} targets, {k['buyers']} buyers")
        for name, m in k["scorers"].items():
            lines.append(f"    {name:<24} precision@{n} {m['precision']:.4f}  recall@{n} {m['recall']:.4f}")
        if k["lift"] is not None:
            lines.append(f"    model / best baseline (precision): {k['lift']:.2f}x")
    return "\n".join(lines)
