"""Baselines in the evaluation: popularity, item co-occurrence and ALS on hand-built tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import functions as F

from recsys.config import replace
from recsys.evaluation.baselines import fit_cooccurrence, popularity_counts
from recsys.evaluation.evaluate import evaluate
from recsys.features.splits import build_training_examples
from recsys.metrics import history_mask, target_ranks
from recsys.tables import write_table
from tests.conftest import make_config

pytestmark = pytest.mark.spark

PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]  # b always follows a
HOT = list(range(13, 41))  # 28 fillers, each more popular than any pattern item
NUM_ITEMS = 40
WARM_USERS = 42


def planted_steps() -> dict[str, list[int]]:
    """User k: 6 hot items, pair k % 6 (training), then pair (k + 1) % 6 as validation/test targets.

    Every hot item is in 9 users' training steps, every pattern item in 7. The "cold" user has
    no validation row, hence no training steps, and a test input ending in 1 (target 2).
    """
    steps = {}
    for k in range(WARM_USERS):
        hot = [HOT[(6 * k + t) % len(HOT)] for t in range(6)]
        (a, b), (c, d) = PAIRS[k % 6], PAIRS[(k + 1) % 6]
        steps[f"u{k:02d}"] = hot + [a, b, c, d]
    steps["cold"] = HOT[:6] + [1, 2]  # its validation row is dropped below
    return steps


def write_tables(spark, cfg, steps: dict[str, list[int]], num_items: int) -> None:
    profiles = spark.createDataFrame(
        [(u, s, [1] * len(s), len(s)) for u, s in steps.items()],
        "user_id string, seq_item_idx array<int>, seq_type_idx array<int>, n_steps int",
    )
    examples = build_training_examples(cfg, profiles).where("not (user_id = 'cold' and split != 'test')")
    write_table(examples, cfg, "training_examples", partition_by=["split"])
    items = spark.createDataFrame([(f"i{i}", i) for i in range(1, num_items + 1)], "item_id string, item_idx int")
    write_table(items, cfg, "item_profiles")


def test_baselines_on_planted_pattern(spark, tmp_path):
    import mlflow

    cfg = make_config(tmp_path / "lh", "features.max_seq_len=12", "features.validation_share=1.0",  # classic split
                      "evaluation.baselines=[popularity, cooccurrence, als]",
                      "evaluation.als_rank=4", "evaluation.als_max_iter=3", "evaluation.ks=[10, 20]")
    write_tables(spark, cfg, planted_steps(), NUM_ITEMS)

    report = evaluate(spark, cfg, with_model=False)
    m = report["metrics"]
    assert list(m) == ["popularity", "cooccurrence", "als"] and report["model_uri"] is None
    assert all(s["users"] == WARM_USERS + 1 for s in m.values())

    # co-occurrence: the last input item's partner has sim 1, every other item scores < 1
    assert m["cooccurrence"]["hr_at_10"] == 1.0 and m["cooccurrence"]["mrr"] == 1.0
    # popularity: 22 unmasked hot items (9 users) and 8 pattern items (7 users, tied) beat a
    # warm user's target; the cold user's history is one item shorter, so 22 + 10
    assert m["popularity"]["hr_at_20"] == 0.0
    assert m["popularity"]["mrr"] == pytest.approx((WARM_USERS / 31 + 1 / 33) / (WARM_USERS + 1))
    assert m["cooccurrence"]["ndcg_at_10"] > m["popularity"]["ndcg_at_10"]
    # ALS: valid figures for every user, the cold one included (all its scores are 0)
    for key, value in m["als"].items():
        if key != "users":
            assert 0.0 <= value <= 1.0, key

    # no registered model needed; the figures went to an MLflow run of their own
    mlflow.set_tracking_uri(cfg.tracking_uri)
    run = mlflow.MlflowClient().get_run(report["mlflow_run_id"])
    assert run.info.run_name == "evaluate-test"
    for scorer in ("popularity", "cooccurrence", "als"):
        assert run.data.metrics[f"test_{scorer}_hr_at_10"] == pytest.approx(m[scorer]["hr_at_10"])
    assert report["protocol"] == "history_masked"

    # the unmasked protocol is reported apart: its own metric names, run name and report file
    unmasked = evaluate(spark, replace(cfg, "evaluation.protocol=unmasked", "evaluation.baselines=[popularity]"),
                        with_model=False)
    assert unmasked["protocol"] == "unmasked"
    # no target repeats here; unmasked, the popular history items rank above the targets too
    u = unmasked["metrics"]["popularity"]
    assert u["hr_at_20"] == 0.0 and u["mrr"] < m["popularity"]["mrr"]
    other = mlflow.MlflowClient().get_run(unmasked["mlflow_run_id"])
    assert other.info.run_name == "evaluate-test-unmasked"
    assert set(other.data.metrics) == {f"test_unmasked_popularity_{k}" for k in u}
    assert len(list(cfg.lakehouse.reports_path.glob("evaluate-*.json"))) == 1
    assert len(list(cfg.lakehouse.reports_path.glob("evaluate_unmasked-*.json"))) == 1


def test_cooccurrence_by_hand(spark):
    train = spark.createDataFrame(
        [("a", [1, 2, 3]), ("b", [1, 2]), ("c", [2, 4])], "user_id string, items array<int>"
    )
    examples = train.select("user_id", F.lit("validation").alias("split"), F.col("items").alias("history_items"))
    pop = popularity_counts(examples, 5)
    assert pop.tolist() == [0, 2, 3, 1, 1, 0]

    cooc = fit_cooccurrence(train, pop, window=3, recent=3, decay=0.5)
    sim = cooc.sim.toarray()
    assert np.allclose(sim, sim.T) and np.all(np.diag(sim) == 0)
    assert sim[1, 2] == pytest.approx(2 / math.sqrt(2 * 3))  # 2 users, pop 2 and 3
    assert sim[1, 3] == pytest.approx(1 / math.sqrt(2))
    assert sim[2, 3] == pytest.approx(1 / math.sqrt(3)) and sim[2, 4] == pytest.approx(1 / math.sqrt(3))
    assert sim[3, 4] == 0 and sim[1, 4] == 0 and not sim[5].any()

    # last item 2 (weight 1), the one before 1 (weight 1/2); item 5 was never seen
    part = pd.DataFrame({"input_items": [np.array([0, 0, 1, 2]), np.array([0, 0, 0, 5])]})
    raw = cooc.similarity(part).toarray()
    expected = [0, sim[2, 1], 0.5 * sim[1, 2], sim[2, 3] + 0.5 * sim[1, 3], sim[2, 4], 0]
    assert raw[0] == pytest.approx(expected) and not raw[1].any()

    scores = cooc.scores(part)
    # similarity first (3 > 1 > 4 > 2), then popularity among the rest; nothing co-occurs
    # with 5, so popularity alone orders that row: 2 > 1 > 3 = 4 > 5
    assert scores[0, 3] > scores[0, 1] > scores[0, 4] > scores[0, 2] > scores[0, 5]
    assert scores[1, 2] > scores[1, 1] > scores[1, 3] == scores[1, 4] > scores[1, 5]

    scores = torch.from_numpy(scores[[0, 0, 0, 1, 1]])
    mask = history_mask([[1, 2]] * 3 + [[]] * 2, 6)
    ranks = target_ranks(scores, torch.tensor([3, 4, 5, 3, 2]), mask)
    # masked 1 and 2: 3 (0.93) > 4 (0.58) > 5 (0); no history: 3 ties with 4 and loses to 1, 2
    assert ranks.tolist() == [0, 1, 2, 3, 0]

    # window 1: only neighbours count, so 1 and 3 no longer co-occur
    near = fit_cooccurrence(train, pop, window=1).sim.toarray()
    assert near[1, 3] == 0 and near[1, 2] == pytest.approx(sim[1, 2]) and near[2, 3] == pytest.approx(sim[2, 3])
