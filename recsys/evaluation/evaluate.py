"""Full-ranking evaluation of the registered model and the baselines on the test split.

For each test row (a user's last step as target, everything before as input) every item of
the catalogue is scored and the target's rank gives HR@K, NDCG@K and MRR (see
:mod:`recsys.metrics`). Under the headline protocol (``evaluation.protocol:
history_masked``) the items of the user's history are masked, whatever the target, and a
target the user already had is a miss; ``unmasked`` masks nothing and is reported apart. The
model and every baseline (:mod:`recsys.evaluation.baselines`) go through the same ranking
code in the same pass, so their figures compare like with like. The validation split works alike.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Config, ConfigError, EvaluationProtocol
from recsys.errors import DataError
from recsys.evaluation.baselines import Scorer, fit_baselines
from recsys.models.loading import pad_left
from recsys.models.serving import load_network
from recsys.reports import write_report
from recsys.tables import read_table
from recsys.tracking import resolve_model_uri

log = logging.getLogger(__name__)

RANKS_SCHEMA = T.StructType(
    [T.StructField("user_id", T.StringType()), T.StructField("scorer", T.StringType()), T.StructField("rank", T.LongType())]
)
SPLITS = ("validation", "test")


class ModelScorer(Scorer):
    """A registered model: the last position's hidden state · every item vector. ``name`` is
    "model" for the version under evaluation and "champion" for the serving one beside it."""

    def __init__(self, model_uri: str, tracking_uri: str, name: str = "model") -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.name = name
        self._vectors = None  # (N+1, d) item vectors, computed once per task in the worker

    def __getstate__(self) -> dict:
        return {"model_uri": self.model_uri, "tracking_uri": self.tracking_uri, "name": self.name, "_vectors": None}

    def scores(self, part: pd.DataFrame):
        import torch

        model, _ = load_network(self.model_uri, self.tracking_uri)
        if self._vectors is None:
            self._vectors = model.item_vectors()
        L = model.spec.max_len
        items = torch.from_numpy(pad_left([list(x) for x in part["input_items"]], L))
        types = torch.from_numpy(pad_left([list(x) for x in part["input_types"]], L))
        h = model.encode(items, types, self._vectors)[:, -1]  # (B, d)
        return h @ self._vectors.T


def rank_partition(scorers: Sequence[Scorer], num_columns: int, batch_size: int,
                   protocol: EvaluationProtocol = EvaluationProtocol.HISTORY_MASKED):
    """mapInPandas: evaluation rows → (user_id, scorer, rank) for every scorer.

    One protocol for all: each scorer rates the full catalogue (``num_columns`` = N+1 with
    column 0 as padding), the row's ``history_items`` are masked under ``history_masked``
    (nothing under ``unmasked``), and the target's rank counts ties against it
    (:func:`recsys.metrics.target_ranks`).
    """
    masked = EvaluationProtocol(protocol) is EvaluationProtocol.HISTORY_MASKED

    def fn(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        from recsys.metrics import history_mask, target_ranks

        with torch.no_grad():
            for pdf in frames:
                for start in range(0, len(pdf), batch_size):
                    part = pdf.iloc[start:start + batch_size]
                    targets = torch.as_tensor(part["target"].to_numpy(), dtype=torch.long)
                    mask = history_mask(part["history_items"].tolist(), num_columns) if masked else None
                    users = part["user_id"].to_numpy()
                    for scorer in scorers:
                        scores = torch.as_tensor(scorer.scores(part))
                        if scores.shape != (len(part), num_columns):
                            raise ValueError(f"scorer {scorer.name} returned {tuple(scores.shape)} scores, "
                                             f"expected {(len(part), num_columns)}: is item_profiles out of date?")
                        ranks = target_ranks(scores, targets, mask)
                        yield pd.DataFrame({"user_id": users, "scorer": scorer.name,
                                            "rank": ranks.numpy().astype(np.int64)})

    return fn


def models_to_evaluate(cfg: Config) -> list[tuple[str, str, str]]:
    """``[(scorer name, model URI, version)]``: "model" is ``scoring.model_version`` if set,
    else the challenger (training's newest version), else the champion; "champion" is the
    serving version beside it when that is another one.

    Raises:
        NoModelError: no model is registered.
    """
    from recsys.tracking import registered_version

    if cfg.scoring.model_version or registered_version(cfg, cfg.tracking.challenger_alias) is None:
        uri, version = resolve_model_uri(cfg)
    else:
        uri, version = resolve_model_uri(cfg, cfg.tracking.challenger_alias)
    out = [("model", uri, version)]
    champion = registered_version(cfg, cfg.tracking.alias)
    if champion is not None and str(champion.version) != version:
        out.append(("champion", f"models:/{cfg.tracking.model_name}/{champion.version}", str(champion.version)))
    return out


def evaluate(spark: SparkSession, cfg: Config, *, split: str = "test", with_model: bool = True) -> dict[str, Any]:
    """HR@K / NDCG@K / MRR of the registered model and of ``cfg.evaluation.baselines`` on ``split``.

    All scorers rank the full catalogue of the same rows with the same mask, in one pass,
    under ``evaluation.protocol`` (:mod:`recsys.metrics`). The model is the challenger
    (training's newest version; see :func:`models_to_evaluate`), and the champion is scored
    beside it when it is another version, with most-popular always among the baselines:
    ``recsys promote`` decides on these figures. The baselines are fitted on training steps
    only (:mod:`recsys.evaluation.baselines`).
    ``report["metrics"]`` maps each scorer ("model", "champion", "popularity",
    "cooccurrence", "als") to its :func:`~recsys.metrics.metrics_from_ranks` figures,
    ``report["protocol"]`` names the protocol. They are logged to the MLflow run that trained
    the model, or without a model (``with_model=False``) to a new run of their own, and
    written as a report (``evaluate-*.json``). The headline protocol's metrics are
    ``<split>_<scorer>_<metric>``, the unmasked protocol's ``<split>_unmasked_<scorer>_<metric>``
    and its reports ``evaluate_unmasked-*.json``, so the two are never mixed. The headline
    test figures are also recorded as tags of the evaluated version
    (:func:`recsys.promotion.record_evaluation`).

    Raises:
        ValueError: ``split`` is not validation/test, or there is nothing to evaluate.
        DataError: ``item_profiles`` is empty or the split has no rows.
        NoModelError: ``with_model`` and no model is registered.
    """
    import mlflow

    from recsys.metrics import metrics_from_ranks
    from recsys.tracking import setup_from_config

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    protocol = cfg.evaluation.protocol
    headline = protocol is EvaluationProtocol.HISTORY_MASKED
    prefix = f"{split}_" if headline else f"{split}_{protocol.value}_"
    baselines = list(dict.fromkeys(b.value for b in cfg.evaluation.baselines))
    if with_model and "popularity" not in baselines:
        baselines.append("popularity")  # promotion requires the model to beat most-popular
    if not with_model and not baselines:
        raise ConfigError("nothing to evaluate: with_model=False and config key 'evaluation.baselines' is empty")
    examples = read_table(spark, cfg, "training_examples")
    num_items = read_table(spark, cfg, "item_profiles").agg(F.max("item_idx")).first()[0]
    if not num_items:
        raise DataError("item_profiles is empty: run `recsys build-profiles` first")
    models = models_to_evaluate(cfg) if with_model else []
    model_uri, version = (models[0][1], models[0][2]) if models else (None, None)
    scorers: list[Scorer] = [ModelScorer(uri, cfg.tracking_uri, name) for name, uri, _ in models]
    scorers += fit_baselines(spark, examples, num_items, baselines, cfg.evaluation, cfg.train.seed)
    rows = examples.where(F.col("split") == split).select("user_id", "input_items", "input_types", "target", "history_items")
    for scorer in scorers:
        rows = scorer.attach(rows)
    ranks = rows.mapInPandas(
        rank_partition(scorers, num_items + 1, cfg.evaluation.batch_size, protocol), RANKS_SCHEMA
    ).toPandas()
    if ranks.empty:
        raise DataError(f"training_examples has no '{split}' rows to evaluate")
    by_scorer = dict(tuple(ranks.groupby("scorer")))
    metrics = {s.name: metrics_from_ranks(by_scorer[s.name]["rank"].to_numpy(), cfg.evaluation.ks) for s in scorers}
    report: dict[str, Any] = {"split": split, "protocol": protocol.value, "model_uri": model_uri,
                              "model_version": version, "metrics": metrics,
                              "champion_version": models[1][2] if len(models) > 1 else None}
    experiment_id = setup_from_config(cfg)
    # The figures go to the training run that produced the model (else to a run of their own).
    train_run = None
    if version is not None:
        train_run = mlflow.MlflowClient().get_model_version(cfg.tracking.model_name, version).run_id
    with mlflow.start_run(run_id=train_run) if train_run else mlflow.start_run(
        experiment_id=experiment_id, run_name=f"evaluate-{split}" if headline else f"evaluate-{split}-{protocol.value}"
    ) as run:
        for scorer, m in metrics.items():
            mlflow.log_metrics({f"{prefix}{scorer}_{k}": float(v) for k, v in m.items()})
        report["mlflow_run_id"] = run.info.run_id
    if version is not None and headline and split == "test":
        from recsys.promotion import record_evaluation

        ndcg10 = {s.name: metrics_from_ranks(by_scorer[s.name]["rank"].to_numpy(), [10])["ndcg_at_10"] for s in scorers}
        record_evaluation(cfg, version, ndcg10, report["champion_version"])
    write_report(cfg, "evaluate" if headline else "evaluate_unmasked", report)
    return report
