"""Metric code against rankings computed by hand."""

import math

import numpy as np
import pytest
import torch

from recsys.evaluation.metrics import history_mask, metric_sums, metrics_from_ranks, target_ranks


def test_ranks_by_hand():
    # columns: 0 = padding, items 1..5
    scores = torch.tensor([
        [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 4 (0.7): only item 2 (0.9) above -> rank 1
        [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 2 (0.9): best -> rank 0 (padding never counts)
        [9.0, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 3 (0.1): all 4 others above -> rank 4
    ])
    ranks = target_ranks(scores, torch.tensor([4, 2, 3]))
    assert ranks.tolist() == [1, 0, 4]


def test_ties_count_against_the_target():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5]])
    # target 2 ties with items 1 and 3: both count as ahead -> rank 2
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    # a constant scorer puts the target last among the 4 real items
    const = torch.ones(1, 5)
    assert target_ranks(const, torch.tensor([1])).tolist() == [3]


def test_history_mask_removes_items_but_never_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6]])
    mask = history_mask([[1, 2, 4]], 5)
    assert mask.tolist() == [[False, True, True, False, True]]
    # items 1 and 2 masked: target 3 becomes first
    assert target_ranks(scores, torch.tensor([3]), mask).tolist() == [0]
    # a masked target still ranks (history containing the target must not hide it)
    assert target_ranks(scores, torch.tensor([2]), mask).tolist() == [0]


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks([0, 1, 4, 10, 30], ks=(5, 10))
    assert m["hr_at_5"] == pytest.approx(3 / 5)
    assert m["ndcg_at_5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["hr_at_10"] == pytest.approx(3 / 5)  # rank 10 is the 11th place: a miss at 10
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 11 + 1 / 31) / 5)
    assert m["users"] == 5


def test_metric_sums_agree_with_metrics_from_ranks():
    ranks = np.array([0, 3, 9, 10, 50, 2])
    s = metric_sums(torch.tensor(ranks), 10)
    m = metrics_from_ranks(ranks, ks=(10,))
    assert s[0].item() / s[2].item() == pytest.approx(m["hr_at_10"])
    assert s[1].item() / s[2].item() == pytest.approx(m["ndcg_at_10"])


def test_empty_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks([])
