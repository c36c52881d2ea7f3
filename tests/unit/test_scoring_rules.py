"""The catalogue ranking with the shop's rules (recsys.scoring.ranking), on a small untrained
network: blocked top-K equals the full matrix, exclusions, stock and category rules, the
brand cap, the fill and the path each row took."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models.loading import pad_left
from recsys.models.sasrec import SASRec, SASRecSpec
from recsys.models.serving import exclusion_mask, rank_catalogue
from recsys.scoring.ranking import (MODEL, POPULAR, POPULAR_IN_CATEGORY, SHORT_HISTORY, SOURCES, ItemRules,
                                    blocked_topk, category_matches, earlier_in_group, padded, rank_users)

N = 60


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = SASRec(SASRecSpec(num_items=N, max_len=8, hidden=16, blocks=1, heads=1, dropout=0.0))
    return net.eval()


def rules(n=N, **kw) -> ItemRules:
    base = dict(category=np.r_[0, np.arange(n) % 4 + 1], brand=np.r_[0, np.arange(n) % 5 + 1],
                allowed=np.r_[False, np.ones(n, bool)], popularity=np.r_[0.0, np.arange(n, 0, -1.0)])
    base.update(kw)
    return ItemRules(**base)


HIST = [[3, 7, 11, 12], [5], [], [1, 2, 3, 4, 5, 6, 7, 8]]


def run(model, r, k=5, hist=HIST, excluded=None, block=7):
    items = torch.from_numpy(pad_left(hist, 8))
    types = (items > 0).long()
    with torch.no_grad():
        return rank_users(model, model.item_vectors(), r, items, types, padded(excluded or hist), k,
                          block_items=block)


def test_blocked_topk_equals_the_full_matrix_and_masks():
    torch.manual_seed(1)
    h, v = torch.randn(6, 8), torch.randn(101, 8)
    banned = torch.zeros(101, dtype=torch.bool)
    banned[[0, 5, 50]] = True
    excl = padded([[1, 2], [], [100], [3, 3], [99, 98, 97], [4]])
    full = h @ v.T
    full[:, banned] = float("-inf")
    full.masked_fill_(exclusion_mask([[1, 2], [], [100], [3, 3], [99, 98, 97], [4]], 101), float("-inf"))
    want_s, want_i = full.topk(10, dim=1)
    for block in (1, 7, 100, 1000):
        s, i = blocked_topk(h, v, banned, excl, 10, block)
        assert torch.equal(i, want_i) and torch.allclose(s, want_s)


def test_earlier_in_group_counts_only_valid_earlier_positions():
    g = torch.tensor([[1, 2, 1, 1, 2, 3, 1]])
    valid = torch.tensor([[True, True, False, True, True, True, True]])
    assert earlier_in_group(g, valid).tolist() == [[0, 0, 1, 1, 1, 0, 2]]


def test_no_rules_gives_the_served_models_ranking(model):
    r = rules(fill=False)
    out = run(model, r, hist=HIST[:2] + HIST[3:])
    items = torch.from_numpy(pad_left(HIST[:2] + HIST[3:], 8))
    with torch.no_grad():
        want_i, want_s, want_r = rank_catalogue(model, model.item_vectors(), items, (items > 0).long(),
                                                exclusion_mask(HIST[:2] + HIST[3:], N + 1), 5)
    assert torch.equal(out["items"], want_i) and torch.equal(out["reasons"], want_r)
    assert torch.allclose(out["scores"], want_s)
    assert set(out["sources"][0].tolist()) == {SOURCES.index(MODEL)}
    assert set(out["sources"][1].tolist()) == {SOURCES.index(SHORT_HISTORY)}  # one event


def test_exclusions_stock_and_category_rules(model):
    allowed = np.r_[False, np.ones(N, bool)]
    allowed[1::2] = False  # odd items out of stock or in a denied category
    out = run(model, rules(allowed=allowed))
    got = out["items"][out["sources"] >= 0]
    assert len(got) == 4 * 5 and (got % 2 == 0).all()  # every row full, only allowed items
    for row, hist in zip(out["items"].tolist(), HIST):
        assert not set(row) & set(hist) and len(set(row)) == 5


def test_brand_cap(model):
    out = run(model, rules(max_per_brand=1), k=5)
    brands = torch.from_numpy(rules().brand)[out["items"]]
    for row in brands.tolist():
        assert len(set(row)) == 5  # five brands exist: one item of each
    out = run(model, rules(max_per_brand=2), k=10)
    for row in torch.from_numpy(rules().brand)[out["items"]].tolist():
        assert max(row.count(b) for b in set(row)) == 2


def test_fill_from_the_users_categories_then_the_shop(model):
    allowed = np.r_[False, np.zeros(N, bool)]
    allowed[[20, 24, 28, 21, 22, 23]] = True  # model candidates run out after 6 items
    r = rules(allowed=allowed)
    out = run(model, r, k=8, hist=[[4, 8], []])
    src = out["sources"].tolist()
    # Item i is in category (i - 1) % 4 + 1: the model ranks all six allowed items for [4, 8].
    assert src[0][:6] == [SOURCES.index(SHORT_HISTORY)] * 6 and src[0][6:] == [-1, -1]
    assert sorted(out["items"][0, :6].tolist()) == [20, 21, 22, 23, 24, 28]
    assert src[1][:6] == [SOURCES.index(POPULAR)] * 6  # no history: the shop's most popular
    assert out["items"][1, :6].tolist() == [20, 21, 22, 23, 24, 28]  # popularity falls with the index
    assert torch.isnan(out["scores"][1, :6]).all() and (out["reasons"][1] == 0).all()

    out = run(model, rules(), k=8, hist=[[4, 8, 12]], excluded=[list(range(1, N + 1))[:-2]])
    # nearly everything excluded: the model finds the last two, nothing is left to fill
    assert out["items"][0, :2].tolist() in ([59, 60], [60, 59]) and out["sources"][0, 2:].eq(-1).all()


def test_fill_prefers_the_users_categories(model):
    allowed = np.r_[False, np.zeros(N, bool)]
    allowed[[1, 2, 3, 4, 8]] = True  # 1..4: one of each category, most popular first; 8: category 4
    r = rules(allowed=allowed)
    hist = [[12, 16]]  # category 4
    out = run(model, r, k=5, hist=hist, excluded=[[1, 2, 3, 4, 8, 12, 16]])
    assert out["sources"][0].eq(-1).all()  # everything excluded: an empty row, not a crash
    out = run(model, r, k=5, hist=[[60]], excluded=[[1, 2, 3, 4, 8, 60]])
    assert out["sources"][0].eq(-1).all()
    # The model knows nothing of item 61 (category 4, added after training): the fill, category 4 first.
    r2 = rules(n=N + 1, allowed=np.r_[allowed, False], category=np.r_[0, np.arange(N) % 4 + 1, 4])
    out = run(model, r2, k=5, hist=[[61]], excluded=[[61]])
    src = out["sources"][0].tolist()
    assert src[:2] == [SOURCES.index(POPULAR_IN_CATEGORY)] * 2 and src[2:] == [SOURCES.index(POPULAR)] * 3
    assert out["items"][0].tolist() == [4, 8, 1, 2, 3]
    assert out["categories"][0].tolist() == [4, 4, 1, 2, 3]


def test_category_matches():
    assert category_matches("Beauty > Skin Care>Eyes", ["beauty>skin care"])
    assert category_matches("Beauty>Skin", ["Beauty"]) and not category_matches("Beauty>Skin", ["Beau"])
    assert not category_matches(None, ["Beauty"]) and not category_matches("Toys", [])


def test_new_items_are_placed_by_their_text(model):
    """An item added after training (id 61, item 5's text and side features) gets item 5's
    vector without the id embedding, is ranked by the model (source new_item, explained by the
    history), and is read in a history; an added item without text gets no vector."""
    from recsys.scoring.ranking import NEW_ITEM, with_new_items

    torch.manual_seed(2)
    cat, brand, price, text = (torch.randint(1, 4, (N + 1,)), torch.randint(1, 4, (N + 1,)),
                               torch.randint(1, 3, (N + 1,)), torch.randn(N + 1, 6))
    for t in (cat, brand, price, text):
        t[0] = 0
    spec = SASRecSpec(num_items=N, max_len=8, hidden=16, blocks=1, heads=1, dropout=0.0, num_categories=3,
                      num_brands=3, num_price_buckets=2, text_dim=6)
    net = SASRec(spec, cat, brand, price, text).eval()
    assert model.new_item_vectors(text[:1], cat[:1], brand[:1], price[:1]) is None  # no text features
    with torch.no_grad():
        vectors, no_vector = with_new_items(net, net.item_vectors(), [61, 63], text[[5, 6]], cat[[5, 6]],
                                            brand[[5, 6]], price[[5, 6]])
        assert vectors.shape == (64, 16) and no_vector.tolist() == [True] + [False] * 61 + [True, False]
        assert torch.allclose(vectors[61], net.item_vectors()[5] - net.item_emb.weight[5], atol=1e-6)
        r = rules(n=63, category=np.r_[0, np.arange(63) % 4 + 1])
        items = torch.from_numpy(pad_left([[5], [61, 7]], 8))
        out = rank_users(net, vectors, r, items, (items > 0).long(), padded([[5], [61, 7]]), 62,
                         no_vector=no_vector)
    row = dict(zip(out["items"][0].tolist(), zip(out["sources"][0].tolist(), out["reasons"][0].tolist())))
    assert row[61] == (SOURCES.index(NEW_ITEM), 5) and row[63][0] == SOURCES.index(NEW_ITEM)
    # no vector: never scored by the model; only the fill may add it (last, the least popular)
    assert row[62][0] in (SOURCES.index(POPULAR_IN_CATEGORY), SOURCES.index(POPULAR))
    assert out["items"][0, -1] == 62 and set(row) == set(range(1, 64)) - {5}
    # the second user's history holds the new item 61: the model reads it (two known events)
    assert SOURCES.index(MODEL) not in out["sources"][1].tolist() and 61 in out["reasons"][1].tolist()
