"""Marketing audiences: the users most likely to engage next with an item, a category or a
brand, from the same model that ranks items for users, the matrix product the other way round.

For a target set S of items (one item, or every item of a category or brand), a user's score
is the model's probability that their next item is in S:

    log P(next ∈ S | history) = logsumexp_{i ∈ S} h·v_i − logsumexp_{i ∈ catalogue} h·v_i

with ``h`` the user's vector (the encoded history) and ``v_i`` the item vectors. The
normaliser matters: ranking users by the raw logit h·v_i favours users whose vectors are
long, not those for whom the item is a likely next step. Both sums come from one pass over
the catalogue in blocks of items, with a running maximum (the "online softmax"), so neither
a (users × items) matrix nor a second pass is needed; many targets share the pass.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def membership(targets: Sequence[Sequence[int]], num_items: int):
    """(T, ·) target item lists → the (item_idx, target) pairs as two int64 tensors, sorted
    by item (items outside 1..num_items dropped)."""
    import torch

    items, owners = [], []
    for t, members in enumerate(targets):
        for i in set(int(x) for x in members):
            if 0 < i <= num_items:
                items.append(i)
                owners.append(t)
    order = np.argsort(np.asarray(items, dtype=np.int64), kind="stable")
    return (torch.as_tensor(np.asarray(items, dtype=np.int64)[order]),
            torch.as_tensor(np.asarray(owners, dtype=np.int64)[order]))


def audience_log_probs(h, vectors, targets: Sequence[Sequence[int]], *, block_items: int = 8192):
    """(B, T): log P(the next item is in target t | history) for each user row of ``h``
    (B, H) and each target item list (item indices into ``vectors``, (N+1, H), row 0 =
    padding). -inf for an empty target. One blocked pass over the catalogue."""
    import torch

    B, n = h.shape[0], vectors.shape[0] - 1
    T = len(targets)
    item_of, target_of = membership(targets, n)
    run_max = torch.full((B, 1), float("-inf"))
    total = torch.zeros(B, 1)  # Σ exp(logit - run_max) over the catalogue
    mass = torch.zeros(B, T)  # Σ exp(logit - run_max) over each target
    for start in range(1, n + 1, block_items):
        end = min(n + 1, start + block_items)
        logits = h @ vectors[start:end].T  # (B, block)
        new_max = torch.maximum(run_max, logits.max(dim=1, keepdim=True).values)
        scale = torch.exp(run_max - new_max)
        scale = torch.where(torch.isfinite(run_max), scale, torch.zeros_like(scale))
        e = torch.exp(logits - new_max)
        total = total * scale + e.sum(dim=1, keepdim=True)
        mass = mass * scale
        lo = int(torch.searchsorted(item_of, torch.tensor(start)))
        hi = int(torch.searchsorted(item_of, torch.tensor(end)))
        if hi > lo:
            cols = item_of[lo:hi] - start
            mass.index_add_(1, target_of[lo:hi], e[:, cols])
        run_max = new_max
    with torch.no_grad():
        out = torch.log(mass) - torch.log(total)
    return out


def top_users(scores, user_ids: Sequence[str], size: int, excluded=None):
    """For each target column of ``scores`` (B, T): the ``size`` best rows as
    (user_id, score) lists, best first; ``excluded`` (B, T) bool rows never chosen (for
    example users who already bought the item). Ties keep the row order."""
    import torch

    s = scores.clone()
    if excluded is not None:
        s = s.masked_fill(excluded, float("-inf"))
    k = min(size, s.shape[0])
    best, rows = s.topk(k, dim=0)  # (k, T)
    out = []
    for t in range(s.shape[1]):
        keep = torch.isfinite(best[:, t])
        out.append([(user_ids[r], float(v)) for r, v in zip(rows[keep, t].tolist(), best[keep, t].tolist())])
    return out
