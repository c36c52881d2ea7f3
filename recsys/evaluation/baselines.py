"""Baselines for the full-ranking evaluation: most-popular, item co-occurrence and Spark ALS.

Every baseline is fitted on *training steps only*: each user's ``history_items`` of their
``validation`` row, i.e. every step before the validation target (or, for users without one,
of their test row). That source leaks neither
the validation nor the test target, so the same fit serves both evaluation splits.

A fitted baseline is a small picklable :class:`Scorer`: it travels to the Python workers inside
the ``mapInPandas`` closure of :func:`recsys.evaluation.evaluate.rank_partition` (PySpark
broadcasts a pickled command over ``spark.broadcast.threshold`` by itself), where it scores the
whole catalogue for a batch of evaluation rows. Masking and ranking are not the scorers' job:
``rank_partition`` does both, once, for every scorer alike.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys.config import EvaluationConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Co-occurrence settings, chosen on the synthetic shop (`recsys demo` data: 2000 users, 600
# items, test split). HR@10 / NDCG@10 with recent=3, decay=1/2 for windows 1, 3, 5, whole
# sequence: .735/.468, .750/.491, .747/.493, .727/.486; with window 3, scoring from the last
# item only: .744/.473, last 3 unweighted: .711/.454, last 5 with decay 1/2: .751/.490.
# Window 3 also bounds the pairs at 3 per interaction, where whole sequences grow as n².
COOC_WINDOW = 3
COOC_RECENT = 3
COOC_DECAY = 0.5


def training_sequences(examples: DataFrame) -> DataFrame:
    """``(user_id, items)``: each user's training steps, distinct items in first-seen order.

    The validation row's ``history_items`` holds exactly the steps before the validation
    target, so nothing of the validation or test targets leaks into a baseline. A user with
    no validation row (``features.validation_share`` < 1) trains the model on the step before
    the test target too, and so do the baselines: their test row's history.
    """
    val = examples.where(F.col("split") == "validation").select("user_id", "history_items")
    rest = examples.where(F.col("split") == "test").join(val.select("user_id"), "user_id", "left_anti")
    return val.unionByName(rest.select("user_id", "history_items")).select("user_id", F.col("history_items").alias("items"))


def popularity_counts(examples: DataFrame, num_items: int) -> np.ndarray:
    """(N+1,) number of users with each item in their training steps (index 0 = padding, 0)."""
    rows = (
        training_sequences(examples)
        .select(F.explode("items").alias("item_idx"))
        .groupBy("item_idx")
        .count()
        .collect()
    )
    counts = np.zeros(num_items + 1, dtype=np.float64)
    for r in rows:
        if r["item_idx"] is not None and 0 < r["item_idx"] <= num_items:
            counts[r["item_idx"]] = r["count"]
    return counts


class Scorer:
    """Scores the whole catalogue for a batch of evaluation rows.

    ``attach`` runs on the driver and may add per-row inputs to the rows (a join);
    ``scores`` runs in the Python workers on a pandas batch of those rows.
    """

    name: str = ""

    def attach(self, rows: DataFrame) -> DataFrame:
        return rows

    def scores(self, part: pd.DataFrame) -> np.ndarray | torch.Tensor:
        """(B, N+1) scores, higher is better; column 0 (padding) is ignored by the ranking."""
        raise NotImplementedError


class PopularityScorer(Scorer):
    """The same score for everyone: the number of users with the item in their training steps."""

    name = "popularity"

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts.astype(np.float64)

    def scores(self, part: pd.DataFrame) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.counts).expand(len(part), -1)  # a view, no (B, N+1) copy


class CooccurrenceScorer(Scorer):
    """Item-to-item co-occurrence: score(j) = Σ_k decay^k · sim(i_k, j) over the last items i_k.

    ``i_0`` is the last item of the row's ``input_items``, ``i_1`` the one before, and so on
    for ``recent`` items. ``sim`` is the symmetric, cosine-normalised co-occurrence matrix of
    :func:`fit_cooccurrence`. Popularity breaks ties, exactly: items with equal similarity
    (above all, the many no recent item co-occurs with) are ordered by popularity.
    """

    name = "cooccurrence"

    def __init__(self, sim, popularity: np.ndarray, recent: int = COOC_RECENT, decay: float = COOC_DECAY) -> None:
        if recent < 1 or not 0.0 < decay <= 1.0:
            raise ValueError(f"recent must be >= 1 and decay in (0, 1], got {recent} and {decay}")
        self.sim = sim.tocsr()  # (N+1, N+1) scipy sparse
        self.popularity = popularity.astype(np.float64)
        # (N+1,) dense rank of each item's popularity: the score of items with no similarity
        self.pop_rank = np.unique(self.popularity, return_inverse=True)[1].astype(np.float32)
        self.recent = recent
        self.decay = decay

    def similarity(self, part: pd.DataFrame):
        """(B, N+1) scipy CSR of the recency-weighted similarities (no tie-break)."""
        import scipy.sparse as sp

        n = self.sim.shape[0]
        rows: list[int] = []
        cols: list[int] = []
        weights: list[float] = []
        for b, seq in enumerate(part["input_items"]):
            recent = [int(x) for x in (seq if seq is not None else []) if 0 < int(x) < n][-self.recent:]
            for k, item in enumerate(reversed(recent)):
                rows.append(b)
                cols.append(item)
                weights.append(self.decay ** k)
        # (B, N+1) recency weights; a repeated item sums its weights
        w = sp.csr_matrix((weights, (rows, cols)), shape=(len(part), n))
        return (w @ self.sim).tocsr()

    def scores(self, part: pd.DataFrame) -> np.ndarray:
        """(B, N+1) float32 scores ordered by (similarity, popularity).

        Exact integers rather than ``sim + ε·pop``: target_ranks compares in float32, where
        such a tie-break would vanish. Items without similarity score their popularity rank;
        those with one score above all of them, by their dense rank in the row.
        """
        s = self.similarity(part)
        out = np.tile(self.pop_rank, (len(part), 1))
        base = self.pop_rank.max() + 1
        for r in range(len(part)):
            lo, hi = s.indptr[r], s.indptr[r + 1]
            cols, vals = s.indices[lo:hi], s.data[lo:hi]
            keep = vals > 0
            cols, vals = cols[keep], vals[keep]
            if not len(cols):
                continue
            pops = self.popularity[cols]
            order = np.lexsort((pops, vals))  # by similarity, then popularity
            v, p = vals[order], pops[order]
            step = np.zeros(len(order), dtype=np.float32)
            step[1:] = np.cumsum((np.diff(v) != 0) | (np.diff(p) != 0))
            out[r, cols[order]] = base + step
        return out


class AlsScorer(Scorer):
    """Implicit ALS: score(j) = user factors · item factors; unseen users and items score 0."""

    name = "als"
    column = "_als_user_factors"

    def __init__(self, item_factors: np.ndarray, user_factors: DataFrame) -> None:
        self.item_factors = item_factors.astype(np.float32)  # (N+1, rank), zero rows for unseen items
        self._user_factors = user_factors  # (user_id, factors): driver only, never pickled

    def __getstate__(self) -> dict:
        return {"item_factors": self.item_factors, "_user_factors": None}

    def attach(self, rows: DataFrame) -> DataFrame:
        return rows.join(self._user_factors.withColumnRenamed("factors", self.column), "user_id", "left")

    def scores(self, part: pd.DataFrame) -> np.ndarray:
        rank = self.item_factors.shape[1]
        users = np.zeros((len(part), rank), dtype=np.float32)  # (B, rank)
        for b, f in enumerate(part[self.column]):
            if f is not None:
                users[b] = np.asarray(f, dtype=np.float32)
        return users @ self.item_factors.T


def fit_cooccurrence(train: DataFrame, popularity: np.ndarray, *, window: int | None = COOC_WINDOW,
                     recent: int = COOC_RECENT, decay: float = COOC_DECAY) -> CooccurrenceScorer:
    """Count item pairs within ``window`` steps of each other in the training sequences.

    ``sim(i, j) = c(i, j) / sqrt(pop(i) · pop(j))`` with ``c`` the number of sequences where i
    and j are at most ``window`` steps apart (``None``: anywhere in the sequence) and ``pop``
    the number of sequences holding the item; ``sim`` is symmetric with a zero diagonal.
    The pairs come from a band self-join of each exploded sequence with itself, written as an
    explode of the next ``window`` elements, so no join over users is shuffled; only the
    non-zero counts reach the driver.

    Args:
        train: ``(user_id, items)`` from :func:`training_sequences`.
        popularity: (N+1,) from :func:`popularity_counts` on the same sequences.
    """
    import scipy.sparse as sp

    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}")
    n = len(popularity)
    ahead = F.lit(window) if window is not None else F.size("items")
    pos = train.select("items", F.posexplode("items").alias("pos", "a"))
    # pos is 0-based, slice 1-based: the next element sits at pos + 2
    pairs = pos.select("a", F.explode(F.slice("items", F.col("pos") + 2, ahead)).alias("b"))
    counts = (
        pairs.where((F.col("a") != F.col("b")) & F.col("a").between(1, n - 1) & F.col("b").between(1, n - 1))
        .groupBy("a", "b")
        .count()
        .toPandas()
    )
    c = sp.coo_matrix(
        (counts["count"].to_numpy(np.float64), (counts["a"].to_numpy(np.int64), counts["b"].to_numpy(np.int64))),
        shape=(n, n),
    ).tocsr()
    c = c + c.T  # pairs were counted in sequence order; co-occurrence is symmetric
    inv = np.zeros(n, dtype=np.float64)
    inv[popularity > 0] = 1.0 / np.sqrt(popularity[popularity > 0])
    d = sp.diags(inv)
    sim = (d @ c @ d).tocsr()
    log.info("co-occurrence: %d item pairs (window %s)", sim.nnz // 2, window)
    return CooccurrenceScorer(sim, popularity, recent=recent, decay=decay)


def fit_als(spark: SparkSession, train: DataFrame, num_items: int, ecfg: EvaluationConfig, seed: int) -> AlsScorer:
    """Spark ML implicit-feedback ALS on (user, item, 1.0) pairs of the training sequences.

    Users get dense integer ids (ALS needs int ids); item ids are ``item_idx``. The item
    factors come back to the driver as a dense (N+1, rank) matrix, the user factors stay a
    DataFrame that :meth:`AlsScorer.attach` joins to the evaluation rows.
    """
    model, users = fit_als_model(spark, train, num_items, ecfg, seed)
    items = model.itemFactors.toPandas()
    factors = np.zeros((num_items + 1, ecfg.als_rank), dtype=np.float32)
    if len(items):
        factors[items["id"].to_numpy(np.int64)] = np.stack(items["features"].to_numpy()).astype(np.float32)
    user_factors = model.userFactors.join(users, F.col("id") == F.col("user_idx")).select(
        "user_id", F.col("features").alias("factors")
    )
    return AlsScorer(factors, user_factors)


def fit_als_model(spark: SparkSession, train: DataFrame, num_items: int, ecfg: EvaluationConfig, seed: int):
    """``(ALSModel, users)``: the fitted Spark ML model and the (user_id, user_idx) ids it knows."""
    from pyspark.ml.recommendation import ALS

    users = train.select("user_id").distinct().withColumn(
        "user_idx", (F.row_number().over(Window.orderBy("user_id")) - 1).cast("int")
    )
    ratings = (
        train.join(users, "user_id")
        .select("user_idx", F.explode("items").alias("item_idx"))
        .where(F.col("item_idx").between(1, num_items))
        .distinct()
        .withColumn("rating", F.lit(1.0))
    )
    blocks = max(1, int(spark.conf.get("spark.sql.shuffle.partitions")))
    als = ALS(
        userCol="user_idx", itemCol="item_idx", ratingCol="rating", implicitPrefs=True,
        rank=ecfg.als_rank, maxIter=ecfg.als_max_iter, regParam=ecfg.als_reg_param, alpha=ecfg.als_alpha,
        coldStartStrategy="drop", seed=seed, numUserBlocks=blocks, numItemBlocks=blocks,
    )
    return als.fit(ratings), users


def fit_baselines(spark: SparkSession, examples: DataFrame, num_items: int, names: Sequence[str],
                  ecfg: EvaluationConfig, seed: int) -> list[Scorer]:
    """Fit the baselines named in ``names`` (``Baseline`` values), in that order."""
    unknown = set(names) - {"popularity", "cooccurrence", "als"}
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: popularity, cooccurrence, als")
    train = training_sequences(examples)
    pop = popularity_counts(examples, num_items) if {"popularity", "cooccurrence"} & set(names) else None
    out: list[Scorer] = []
    for name in names:
        if name == "popularity":
            out.append(PopularityScorer(pop))
        elif name == "cooccurrence":
            out.append(fit_cooccurrence(train, pop))
        else:
            out.append(fit_als(spark, train, num_items, ecfg, seed))
    return out
