"""Metric code against rankings computed by hand."""

import math

import numpy as np
import pytest
import torch

from recsys.metrics import history_mask, metric_sums, metrics_from_ranks, target_ranks


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


def test_history_mask_removes_history_items_and_a_repeated_target_is_a_miss():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6]])
    mask = history_mask([[1, 2, 4]], 5)
    assert mask.tolist() == [[False, True, True, False, True]]
    # items 1 and 2 masked: target 3 becomes first
    assert target_ranks(scores, torch.tensor([3]), mask).tolist() == [0]
    # a target already in the history stays masked: rank 4 = N, past every real place
    assert target_ranks(scores, torch.tensor([2]), mask).tolist() == [4]
    # without a mask (the unmasked protocol) it competes with every item
    assert target_ranks(scores, torch.tensor([2])).tolist() == [1]


def _repeat_shop(users: int = 400, items: int = 60, seed: int = 0):
    """Synthetic leave-one-out rows where a third of the targets repeat a history item.

    Returns (histories, targets, popularity): item i is drawn with weight 1/i (Zipf), each
    user has 3-8 distinct history items, and the target is a history item with probability
    1/3, else a new item drawn by popularity."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1)
    weights /= weights.sum()
    histories, targets = [], []
    for _ in range(users):
        h = rng.choice(np.arange(1, items + 1), size=rng.integers(3, 9), replace=False, p=weights)
        if rng.random() < 1 / 3:
            t = int(rng.choice(h))
        else:
            fresh = np.setdiff1d(np.arange(1, items + 1), h)
            t = int(rng.choice(fresh, p=weights[fresh - 1] / weights[fresh - 1].sum()))
        histories.append(h.tolist())
        targets.append(t)
    popularity = np.zeros(items + 1)
    for h in histories:
        popularity[h] += 1
    return histories, torch.tensor(targets), torch.from_numpy(popularity)


def test_the_answer_never_changes_the_mask():
    """Issue 25: a "history first, then popularity" scorer knows nothing the popularity
    scorer does not, beyond the history the mask removes. Under the headline protocol it must
    gain nothing; the old rule (every history item masked except the target) leaked the
    answer and gave it a gain on every repeated target."""
    histories, targets, popularity = _repeat_shop()
    n = len(popularity)
    mask = history_mask(histories, n)
    rows = torch.arange(len(targets))
    repeated = mask[rows, targets]
    assert 0.2 < repeated.float().mean() < 0.5  # the data has repeated targets

    pop = popularity.expand(len(targets), -1)
    history_first = pop + mask * (popularity.max() + 1)  # every history item above every other one

    def figures(scores, m):
        return metrics_from_ranks(target_ranks(scores, targets, m).numpy(), ks=(10,))

    # Headline protocol: the same figures, rank for rank; a repeated target is a miss (rank N).
    ranks_pop, ranks_hf = target_ranks(pop, targets, mask), target_ranks(history_first, targets, mask)
    assert torch.equal(ranks_pop, ranks_hf)
    assert (ranks_pop[repeated] == n - 1).all() and (ranks_pop[~repeated] < n - 1).all()
    assert figures(history_first, mask) == figures(pop, mask)

    # The old rule, rebuilt: the target taken out of the mask. It hands the history-first
    # scorer a hit on (nearly) every repeated target.
    leaky = mask.clone()
    leaky[rows, targets] = False
    old_pop, old_hf = figures(pop, leaky), figures(history_first, leaky)
    assert old_hf["ndcg_at_10"] > old_pop["ndcg_at_10"] + 0.05
    assert old_hf["hr_at_10"] > figures(history_first, mask)["hr_at_10"]

    # Unmasked protocol, reported apart: nothing is masked, so a repeated target competes
    # with every item and the history-first scorer finds it among its <= 8 history items.
    unmasked = target_ranks(history_first, targets)
    assert (unmasked[repeated] < 8).all()


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
