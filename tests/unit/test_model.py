"""The transformer recommender: shapes, causality, side features, losses, a tiny fit."""

import torch

from torch.nn import functional as F

from recsys.models.sasrec import (CatalogueCrossEntropy, SASRec, SASRecSpec, full_softmax_loss,
                                  mixed_softmax_loss, sampled_softmax_loss, seen_columns, seen_items, target_log_share)


def make(side: bool = True, **kw) -> SASRec:
    torch.manual_seed(0)
    n = 20
    spec = SASRecSpec(num_items=n, max_len=8, hidden=16, blocks=2, heads=2, dropout=0.0,
                      num_categories=3 if side else 0, num_brands=4 if side else 0,
                      num_price_buckets=5 if side else 0, **kw)
    cat = torch.tensor([0] + [1 + i % 3 for i in range(n)])
    brand = torch.tensor([0] + [1 + i % 4 for i in range(n)])
    price = torch.tensor([0] + [1 + i % 5 for i in range(n)])
    return SASRec(spec, cat if side else None, brand if side else None, price if side else None)


def batch():
    items = torch.tensor([[0, 0, 0, 3, 5, 7, 2, 9], [0, 0, 0, 0, 0, 0, 1, 4]])
    types = torch.tensor([[0, 0, 0, 1, 2, 1, 4, 1], [0, 0, 0, 0, 0, 0, 1, 3]])
    return items, types


def test_shapes_and_padding_column():
    m = make().eval()
    items, types = batch()
    assert m.encode(items, types).shape == (2, 8, 16)
    scores = m(items, types)
    assert scores.shape == (2, 21)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert m.item_vectors().shape == (21, 16)


def test_causal_earlier_positions_ignore_later_inputs():
    m = make().eval()
    items, types = batch()
    h1 = m.encode(items, types)
    items2 = items.clone()
    items2[0, -1] = 11  # change only the last input
    h2 = m.encode(items2, types)
    assert torch.allclose(h1[0, :-1], h2[0, :-1], atol=1e-5)
    assert not torch.allclose(h1[0, -1], h2[0, -1])


def test_side_features_change_item_vectors():
    with_side, without = make(True), make(False)
    assert len(with_side.side) == 3 and len(without.side) == 0
    assert not torch.allclose(with_side.item_vectors(), with_side.item_emb.weight)


def test_full_softmax_loss_matches_cross_entropy_by_hand():
    m = make().eval()
    items, types = batch()
    targets = torch.zeros_like(items)
    targets[0, -1], targets[1, -1] = 6, 8
    loss = full_softmax_loss(m, items, types, targets)
    scores = m(items, types)
    expected = -(scores.log_softmax(1)[0, 6] + scores.log_softmax(1)[1, 8]) / 2
    assert torch.allclose(loss, expected, atol=1e-5)
    # forward(..., targets) is the same loss (it is how DDP calls it)
    assert torch.allclose(m(items, types, targets), loss)


def test_catalogue_cross_entropy_has_the_value_and_gradients_of_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(12, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1, 3, 3, 11, 5, 2, 7])  # a repeated target, never the padding column 0
    logits = h @ v.T
    expected = F.cross_entropy(torch.cat([torch.full_like(logits[:, :1], float("-inf")), logits[:, 1:]], 1), t)
    gh, gv = torch.autograd.grad(expected * 3.0, (h, v))
    loss = CatalogueCrossEntropy.apply(h, v, t)
    assert torch.allclose(loss, expected)
    ch, cv = torch.autograd.grad(loss * 3.0, (h, v))  # an upstream gradient other than 1
    assert torch.allclose(ch, gh) and torch.allclose(cv, gv)
    assert torch.all(cv[0] == 0)  # the padding row gets no gradient


def test_sampled_softmax_is_finite_and_trainable():
    m = make()
    items, types = batch()
    targets = torch.roll(items, -1, dims=1) * (items != 0)
    loss = sampled_softmax_loss(m, items, types, targets, num_negatives=10)
    assert torch.isfinite(loss)
    loss.backward()
    assert m.item_emb.weight.grad is not None


def test_learns_a_deterministic_next_item_rule():
    """Item i is always followed by i+1: a few hundred steps must make that the top pick."""
    torch.manual_seed(0)
    m = make(False)
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    starts = torch.randint(1, 12, (64,))
    seq = starts[:, None] + torch.arange(9)[None]  # (64, 9) values up to 20
    items, targets = seq[:, :-1], seq[:, 1:]
    types = torch.ones_like(items)
    for _ in range(200):
        opt.zero_grad()
        loss = full_softmax_loss(m, items, types, targets)
        loss.backward()
        opt.step()
    m.eval()
    pred = m(items, types).argmax(1)
    assert (pred == targets[:, -1]).float().mean() > 0.9


def test_text_embeddings_are_projected_into_item_vectors():
    torch.manual_seed(0)
    spec = SASRecSpec(num_items=5, max_len=4, hidden=8, text_dim=6)
    text = torch.randn(6, 6)
    m = SASRec(spec, item_text=text)
    v = m.item_vectors()
    assert v.shape == (6, 8)
    assert torch.allclose(v - m.item_emb.weight, m.text_proj(text))
    try:
        SASRec(spec, item_text=torch.randn(6, 5))
    except ValueError as e:
        assert "item_text" in str(e)
    else:
        raise AssertionError("a wrongly shaped text matrix must be refused")


def test_forward_switches_to_sampled_softmax():
    m = make()
    items, types = batch()
    targets = torch.roll(items, -1, dims=1) * (items != 0)
    full = m(items, types, targets)
    assert torch.allclose(full, full_softmax_loss(m, items, types, targets))
    m.num_negatives = 5
    torch.manual_seed(1)
    sampled = m(items, types, targets)
    torch.manual_seed(1)
    assert torch.allclose(sampled, sampled_softmax_loss(m, items, types, targets, 5))
    # fewer classes than the full catalogue: the sampled loss is the smaller one here
    assert sampled < full


def test_cutting_padding_changes_nothing():
    from recsys.models.sasrec import trim_padding

    m = make().eval()
    items, types = batch()
    cut_items, cut_types = trim_padding(items, types)
    assert cut_items.shape == (2, 5)
    with torch.no_grad():
        full, cut = m.encode(items, types), m.encode(cut_items, cut_types)
        assert torch.allclose(full[:, -5:], cut, atol=1e-5)
        assert torch.allclose(m(items, types)[:, 1:], m(cut_items, cut_types)[:, 1:], atol=1e-5)


def test_byte_dropout_drops_p_and_keeps_the_mean():
    from recsys.models.sasrec import ByteDropout
    torch.manual_seed(0)
    d = ByteDropout(0.5)
    x = torch.ones(200_000)
    y = d(x)
    assert abs((y == 0).float().mean().item() - 0.5) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    d.eval()
    assert torch.equal(d(x), x)
    assert ByteDropout(0.0)(x) is x
    torch.manual_seed(0)
    m = SASRec(SASRecSpec(num_items=5, max_len=4, hidden=8, dropout=0.3))
    drops = [mod for mod in m.modules() if isinstance(mod, ByteDropout)]
    assert len(drops) == 1 + 3 * m.spec.blocks and all(abs(mod.p - 0.3) < 1 / 256 for mod in drops)
    assert not any(isinstance(mod, torch.nn.Dropout) for mod in m.modules())


def test_item_vectors_of_some_ids_match_the_whole_catalogue_rows():
    torch.manual_seed(0)
    n = 20
    spec = SASRecSpec(num_items=n, max_len=8, hidden=16, dropout=0.0, num_categories=3, text_dim=6)
    m = SASRec(spec, item_category=torch.tensor([0] + [1 + i % 3 for i in range(n)]),
               item_text=torch.randn(n + 1, 6)).eval()
    everything = m.item_vectors()
    ids = torch.tensor([[3, 0, 20], [7, 7, 1]])
    assert torch.allclose(m.item_vectors(ids), everything[ids], atol=1e-6)
    items, types = batch()
    assert torch.allclose(m.encode(items, types), m.encode(items, types, everything), atol=1e-5)


def test_forward_uses_the_sampled_softmax_only_for_catalogues_larger_than_k():
    m = make().eval()  # 20 items
    items, types = batch()
    targets = torch.roll(items, -1, dims=1) * (items != 0)
    full = full_softmax_loss(m, items, types, targets)
    m.num_negatives = 20  # K >= catalogue: the exact loss
    assert torch.allclose(m(items, types, targets), full)
    m.num_negatives = 5  # K < catalogue: 6-way cross-entropy, smaller than the 20-way loss
    torch.manual_seed(1)
    sampled = m(items, types, targets)
    torch.manual_seed(1)
    assert torch.allclose(sampled, sampled_softmax_loss(m, items, types, targets, 5))
    assert sampled < full


def test_mixed_softmax_is_the_log_q_corrected_loss_over_uniform_and_in_batch_candidates():
    """Recomputed by hand, row by row: the candidates are K uniform draws plus every target of
    the batch; a candidate equal to the row's own target is left out; every logit, the
    target's included, is lowered by log(K/N + P * share)."""
    m = make().eval()  # 20 items, no dropout
    items, types = batch()
    targets = torch.roll(items, -1, dims=1) * (items != 0)
    counts = torch.bincount(targets[targets != 0], minlength=21)
    share = target_log_share(targets, 20)
    assert torch.allclose(share.exp()[1:].sum(), torch.tensor(1.0))
    assert torch.allclose(share, target_log_share(counts, 20, counts=True))
    k = 6
    torch.manual_seed(3)
    got = mixed_softmax_loss(m, items, types, targets, k, share)
    torch.manual_seed(3)
    uniform = torch.randint(1, 21, (k,))

    with torch.no_grad():
        h = m.encode(items, types)[targets != 0].double()
        ts = targets[targets != 0]
        vec = m.item_vectors().double()
        p = len(ts)
        log_q = torch.log(k / 20 + p * share.double().exp())
        cands = torch.cat([uniform, ts]).tolist()
        losses = []
        for row, t in enumerate(ts.tolist()):
            logit = lambda j: float(h[row] @ vec[j] - log_q[j])  # noqa: E731
            others = [logit(c) for c in cands if c != t]
            losses.append(-logit(t) + torch.logsumexp(torch.tensor([logit(t)] + others), 0).item())
    assert abs(got.item() - sum(losses) / len(losses)) < 1e-4

    # the forward takes this path when the model holds the target shares
    m.num_negatives, m.item_log_share = k, share
    torch.manual_seed(3)
    assert torch.allclose(m(items, types, targets), got)
    got.backward()  # and it trains the item vectors
    assert m.item_emb.weight.grad[ts].abs().sum() > 0


def test_item_dropout_blanks_whole_input_items_in_training_only():
    """With item_dropout, training blanks the chosen steps' item vectors and keeps their
    position and event type: the same as feeding, in eval mode, an item whose vector is zero
    at those steps. Eval mode is untouched."""
    m = make(side=False, item_dropout=0.5)
    blank_id = 20
    with torch.no_grad():
        m.item_emb.weight[blank_id].zero_()
    items, types = batch()
    items = items.clamp_max(blank_id - 1)
    real = items != 0
    torch.manual_seed(3)
    blank = torch.rand(2, 8, 1) < 0.5  # the draw encode makes (no other dropout: p = 0)
    torch.manual_seed(3)
    trained = m.train().encode(items, types)
    expected = m.eval().encode(torch.where(blank.squeeze(-1) & real, blank_id, items), types)
    assert (blank.squeeze(-1) & real).any() and not (blank.squeeze(-1) & real).all()
    assert torch.allclose(trained, expected, atol=1e-6)
    plain = make(side=False)
    plain.load_state_dict(m.state_dict())
    assert torch.equal(plain.eval()(items, types), m.eval()(items, types))


def repeat_batch():
    """Row 0 repeats item 3 as the target of its third position (3 is among its inputs)."""
    items = torch.tensor([[0, 0, 0, 0, 3, 5, 7, 2], [0, 0, 0, 0, 0, 0, 1, 4]])
    targets = torch.tensor([[0, 0, 0, 0, 5, 3, 2, 9], [0, 0, 0, 0, 0, 0, 4, 6]])
    types = (items != 0).long()
    return items, types, targets


def test_seen_items_lists_each_positions_inputs_so_far():
    items, _, targets = repeat_batch()
    seen, fresh = seen_items(items, targets)
    assert seen.shape == (6, 8)
    assert [sorted(int(i) for i in row if i) for row in seen] == [[3], [3, 5], [3, 5, 7], [2, 3, 5, 7], [1], [1, 4]]
    assert fresh.tolist() == [True, False, True, True, True, True]  # 3 after 3, 5: a repeat


def test_history_masked_full_softmax_matches_cross_entropy_by_hand():
    m = make()
    items, types, targets = repeat_batch()
    h = m.encode(items, types)
    logits = h @ m.item_vectors().T
    rows = []
    for b in range(2):
        for t in range(8):
            y = int(targets[b, t])
            seen = {int(i) for i in items[b, : t + 1] if i}
            if not y or y in seen:
                continue  # no target, or a repeat: left out
            row = logits[b, t].clone()
            row[0] = float("-inf")
            row[list(seen)] = float("-inf")
            rows.append(F.cross_entropy(row[None], torch.tensor([y])))
    expected = torch.stack(rows).mean()
    got = full_softmax_loss(m, items, types, targets, mask_history=True)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, full_softmax_loss(m, items, types, targets), atol=1e-3)
    got.backward()
    assert torch.isfinite(m.item_emb.weight.grad).all()


def test_seen_columns_lists_every_copy_of_a_seen_item():
    torch.manual_seed(3)
    columns = torch.randint(1, 15, (40,)).sort().values  # with repeats
    seen = torch.randint(0, 15, (7, 5))
    seen[0] = 0  # a row that has seen nothing
    rows, cols = seen_columns(columns, seen)
    got = torch.zeros(7, 40, dtype=torch.bool)
    got[rows, cols] = True
    brute = ((columns[None, :, None] == seen[:, None, :]) & (seen[:, None, :] != 0)).any(dim=2)
    assert torch.equal(got, brute)


def test_history_masked_sampled_softmax_drops_seen_candidates():
    m = make()
    items, types, targets = repeat_batch()
    share = target_log_share(targets, 20)
    torch.manual_seed(5)
    got = mixed_softmax_loss(m, items, types, targets, 6, share, mask_history=True)
    # the same draw by hand
    torch.manual_seed(5)
    h = m.encode(items, types)
    seen, fresh = seen_items(items, targets)
    hs, ts, seen = h[targets != 0][fresh], targets[targets != 0][fresh], seen[fresh]
    cand = torch.cat([torch.randint(1, 21, (6,)), ts])
    vec = m.item_vectors()
    log_q = torch.log(6 / 20 + len(ts) * share.exp())
    logits = hs @ vec[cand].T - log_q[cand][None]
    pos = (hs * vec[ts]).sum(-1) - log_q[ts]
    banned = (cand[None, :] == ts[:, None]) | (cand[None, :, None] == seen[:, None, :]).any(2)
    logits = torch.cat([pos[:, None], logits.masked_fill(banned, float("-inf"))], 1)
    assert torch.allclose(got, F.cross_entropy(logits, torch.zeros(len(ts), dtype=torch.long)), atol=1e-5)
    got.backward()
    assert torch.isfinite(m.item_emb.weight.grad).all()


def test_a_batch_of_repeats_only_gives_a_zero_loss_that_backpropagates():
    m = make()
    items = torch.tensor([[0, 0, 0, 0, 0, 0, 3, 5]])
    targets = torch.tensor([[0, 0, 0, 0, 0, 0, 3, 3]])
    types = (items != 0).long()
    for loss in (full_softmax_loss(m, items, types, targets, mask_history=True),
                 sampled_softmax_loss(m, items, types, targets, 4, mask_history=True)):
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert m.item_emb.weight.grad is not None
