"""Audience scores (recsys.scoring.audiences): the blocked one-pass log-probability of the
next item falling in a target set equals the plain log-softmax, and the audience is the top
users by it, with exclusions."""

from __future__ import annotations

import pytest
import torch

from recsys.scoring.audiences import audience_log_probs, top_users


def test_one_blocked_pass_equals_the_log_softmax():
    torch.manual_seed(0)
    h, v = torch.randn(7, 16) * 3, torch.randn(51, 16)
    targets = [[5], [1, 2, 3, 50], [], [10, 10, 11], [0, 99]]  # a padding id and an unknown one are dropped
    want = torch.log_softmax(h @ v[1:].T, dim=1)  # over items 1..50
    for block in (1, 7, 50, 1000):
        got = audience_log_probs(h, v, targets, block_items=block)
        assert got.shape == (7, 5)
        assert torch.allclose(got[:, 0], want[:, 4], atol=1e-5)
        assert torch.allclose(got[:, 1], torch.logsumexp(want[:, [0, 1, 2, 49]], dim=1), atol=1e-5)
        assert torch.isinf(got[:, 2]).all() and torch.isinf(got[:, 4]).all()
        assert torch.allclose(got[:, 3], torch.logsumexp(want[:, [9, 10]], dim=1), atol=1e-5)


def test_the_audience_is_the_most_likely_users_without_the_excluded():
    scores = torch.tensor([[-1.0, -5.0], [-0.5, -4.0], [-3.0, -0.1], [-2.0, float("-inf")]])
    ids = ["a", "b", "c", "d"]
    assert top_users(scores, ids, 2) == [[("b", -0.5), ("a", -1.0)], [("c", pytest.approx(-0.1)), ("b", -4.0)]]
    excluded = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    assert top_users(scores, ids, 3, excluded) == [[("a", -1.0), ("d", -2.0), ("c", -3.0)],
                                                   [("c", pytest.approx(-0.1)), ("b", -4.0), ("a", -5.0)]]
    # d's -inf (the model gives that target no chance) never enters an audience
