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


# --- the audience job's scoring of user batches (recsys.scoring.audience_job.best_users) ---

def _frames(rows, chunk):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["user_id", "seq_item_idx", "seq_type_idx", "purchased_item_idx"])
    return [frame.iloc[i:i + chunk] for i in range(0, len(frame), chunk)]


def test_best_users_are_the_top_of_the_full_log_softmax_with_buyers_left_out():
    import numpy as np

    from recsys.models.loading import pad_left
    from recsys.models.sasrec import SASRec, SASRecSpec
    from recsys.scoring.audience_job import best_users

    torch.manual_seed(0)
    n = 30
    model = SASRec(SASRecSpec(num_items=n, max_len=6, hidden=16, blocks=1, heads=1, dropout=0.0)).eval()
    rng = np.random.default_rng(0)
    rows = []
    for u in range(23):
        hist = rng.integers(1, n + 1, size=int(rng.integers(1, 7))).tolist()
        rows.append((f"u{u:02d}", hist, [1 + int(x % 4) for x in hist], hist[:1]))
    rows.append(("new", [], [], []))  # no history: no score, in no audience
    rows.append(("unknown", [n + 5], [1], []))  # only an item the model does not know
    targets = [[4], [1, 2, 3, 9], [17]]
    exclude = [True, False, True]
    with torch.no_grad():
        vectors = model.item_vectors()
        got = pd_concat(best_users(model, vectors, None, iter(_frames(rows, 5)), targets, exclude, size=4, batch_size=3,
                                   block_items=7))
        known = rows[:23]
        items = torch.from_numpy(pad_left([r[1] for r in known], 6))
        types = torch.from_numpy(pad_left([r[2] for r in known], 6))
        full = torch.log_softmax(model.encode(items, types, vectors)[:, -1] @ vectors[1:].T, dim=1)
    assert set(got["user_id"]) <= {r[0] for r in known}
    for t, members in enumerate(targets):
        want = torch.logsumexp(full[:, [i - 1 for i in members]], dim=1).double()
        if exclude[t]:
            bought = torch.tensor([members[0] in r[3] for r in known])
            want = want.masked_fill(bought, float("-inf"))
        best = want.topk(4).indices.tolist()
        mine = got[got["target_idx"] == t].sort_values("score", ascending=False)
        assert mine["user_id"].tolist() == [known[i][0] for i in best]
        assert mine["score"].to_numpy() == pytest.approx(want[best].numpy(), abs=1e-5)
        for _, r in mine.iterrows():  # the reason is an item of the user's own history
            hist = dict((row[0], row[1]) for row in known)[r["user_id"]]
            assert r["reason_item_idx"] in hist and r["reason_event"] in ("view", "click", "add_to_cart", "purchase")


def pd_concat(frames):
    import pandas as pd

    return pd.concat(list(frames), ignore_index=True)


def test_targets_resolve_by_id_category_path_and_brand_with_clear_errors():
    import pandas as pd

    from recsys.config import load_config
    from recsys.errors import UsageError
    from recsys.scoring.audience_job import resolve_targets

    items = pd.DataFrame({
        "item_idx": [1, 2, 3, 4], "item_id": ["a", "b", "c", "d"], "title": ["A", "B", "C", "D"],
        "category": ["Beauty > Skin", "Beauty > Hair", "Home > Bath", "Beauty > Skin > Face"],
        "top_category": ["Beauty", "Beauty", "Home", "Beauty"], "brand": ["Acme", "acme", "Zed", None],
        "popularity_rank": [3, 1, 2, 4],
    })
    cfg = load_config(None, ["audiences.auto_items=2", "audiences.auto_categories=1"])
    got = resolve_targets(items, [("item", "c"), ("category", "Beauty>Skin"), ("brand", "ACME")], cfg)
    assert [(t.label, t.name, t.items) for t in got] == [
        ("item:c", "C", (3,)), ("category:Beauty>Skin", "Beauty>Skin", (1, 4)), ("brand:ACME", "Acme", (1, 2))]
    auto = resolve_targets(items, [], cfg)  # the two most popular items, the largest top-level category
    assert [t.label for t in auto] == ["item:b", "item:c", "category:Beauty"]
    assert auto[2].items == (1, 2, 4)
    with pytest.raises(UsageError, match="no item 'zz'"):
        resolve_targets(items, [("item", "zz")], cfg)
    with pytest.raises(UsageError, match="top-level categories: Beauty, Home"):
        resolve_targets(items, [("category", "Garden")], cfg)
    with pytest.raises(UsageError, match="no item of brand 'Nope'"):
        resolve_targets(items, [("brand", "Nope")], cfg)


def test_audience_targets_in_config_are_checked():
    from recsys.config import ConfigError, load_config

    assert load_config(None, ['audiences.targets=["item:x", "brand:Acme"]']).audiences.targets == ["item:x", "brand:Acme"]
    with pytest.raises(ConfigError, match="'item:<item_id>', 'category:<path>', 'brand:<name>'"):
        load_config(None, ['audiences.targets=["shop:x"]'])
    with pytest.raises(ConfigError, match="audiences.size must be >= 1"):
        load_config(None, ["audiences.size=0"])
