"""Ranking a whole catalogue for a batch of users, with the shop's rules applied as masks.

Batch scoring (:mod:`recsys.scoring.batch`) builds one :class:`ItemRules` on the driver from
``item_profiles`` and the ``scoring`` config, ships it to every Python worker once, and calls
:func:`rank_users` for each batch of users. Everything is a tensor operation over the batch:

- the score matrix is formed ``block_items`` items at a time and only each block's top
  candidates are kept (a running top-C merge), so a 100k-item catalogue never needs a
  (users × items) matrix in memory;
- exclusions (the user's bought or seen items) are scattered into each block's mask from the
  users' padded index lists; the catalogue rules (out of stock, category allow/deny) are one
  (items,) mask;
- at most ``max_per_brand`` items of a brand: a within-brand running count over the
  candidates in score order (a sort, no loop over users or items);
- fewer than K left (a user who has seen most of the catalogue, or one with no history the
  model knows): the rest is filled with the most popular allowed items of the categories the
  user's history leans to, then the shop's most popular ones; each row says which path made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Which path produced a recommendation (the ``source`` column).
MODEL = "model"  # the sequential model, from a history of 3+ events it knows
SHORT_HISTORY = "model_short_history"  # the sequential model, from 1 or 2 events
POPULAR_IN_CATEGORY = "popular_in_category"  # fill: popular in a category the user's history has
POPULAR = "popular"  # fill: popular in the shop (no history, or its categories ran out)
NEW_ITEM = "new_item"  # the model, an item added after training (its vector from its text)
SOURCES = (MODEL, SHORT_HISTORY, POPULAR_IN_CATEGORY, POPULAR, NEW_ITEM)
SHORT = 2  # a history of at most this many known events is "short"


@dataclass(frozen=True)
class ItemRules:
    """The catalogue as the rules see it, indexed by item_idx (0 = padding), numpy arrays of
    ``num_items + 1`` entries: picklable and small (a few bytes per item)."""

    category: np.ndarray  # int64 category_idx (0 = none)
    brand: np.ndarray  # int64 brand_idx (0 = none: never capped)
    allowed: np.ndarray  # bool: may be recommended at all (in stock, category allowed)
    popularity: np.ndarray  # float64: higher is more popular (the fill's order)
    max_per_brand: int = 0  # 0 = no limit
    fill: bool = True  # fill up to K with popular items

    @property
    def num_items(self) -> int:
        return len(self.category) - 1

    def fill_pool(self, k: int) -> np.ndarray:
        """The fill's candidates: the ``k`` most popular allowed items of every category, and
        the ``k`` most popular allowed items overall (item indices, most popular first)."""
        ok = np.flatnonzero(self.allowed)
        ok = ok[ok > 0]
        order = ok[np.argsort(-self.popularity[ok], kind="stable")]
        picked: list[int] = list(order[:k])
        seen: dict[int, int] = {}
        for i in order:
            c = int(self.category[i])
            if seen.get(c, 0) < k:
                seen[c] = seen.get(c, 0) + 1
                picked.append(int(i))
        pool = np.unique(np.asarray(picked, dtype=np.int64))
        return pool[np.argsort(-self.popularity[pool], kind="stable")]


def category_matches(category: str | None, patterns: Sequence[str]) -> bool:
    """``category`` is one of ``patterns`` or below one (``Beauty>Skin`` matches the pattern
    ``Beauty``); case-insensitive, spaces around ``>`` ignored."""
    if not category:
        return False
    path = [p.strip().lower() for p in category.split(">")]
    for pattern in patterns:
        want = [p.strip().lower() for p in pattern.split(">")]
        if path[:len(want)] == want:
            return True
    return False


def padded(lists: Sequence[Sequence[int] | None]):
    """Ragged index lists → (B, W) int64 tensor padded with 0 (W >= 1)."""
    import torch

    width = max([len(x) if x is not None else 0 for x in lists] + [1])
    out = np.zeros((len(lists), width), dtype=np.int64)
    for i, x in enumerate(lists):
        if x is not None and len(x):
            out[i, :len(x)] = x
    return torch.from_numpy(out)


def block_mask(indices, start: int, width: int):
    """(B, width) bool: True where a row's ``indices`` (padded with 0) fall in
    ``[start, start + width)``. One scatter, into a spare last column for the rest."""
    import torch

    local = indices - start
    inside = (indices > 0) & (local >= 0) & (local < width)
    mask = torch.zeros(indices.shape[0], width + 1, dtype=torch.bool)
    mask.scatter_(1, torch.where(inside, local, torch.full_like(local, width)), True)
    return mask[:, :width]


def blocked_topk(h, vectors, banned_items, excluded, c: int, block_items: int):
    """The top ``c`` items of ``h @ vectors.T`` per row, never an item with ``banned_items``
    (N+1,) or in the row's ``excluded`` indices (B, W), computed ``block_items`` columns at a
    time. Returns (scores, items), (B, c), scores descending, -inf where fewer were left."""
    import torch

    B, n = h.shape[0], vectors.shape[0]
    best_s = torch.full((B, 0), float("-inf"))
    best_i = torch.zeros((B, 0), dtype=torch.long)
    for start in range(1, n, block_items):  # column 0 is padding
        end = min(n, start + block_items)
        s = h @ vectors[start:end].T
        s.masked_fill_(banned_items[start:end][None, :] | block_mask(excluded, start, end - start), float("-inf"))
        top_s, top_i = s.topk(min(c, end - start), dim=1)
        best_s = torch.cat([best_s, top_s], 1)
        best_i = torch.cat([best_i, top_i + start], 1)
        if best_s.shape[1] > c:
            best_s, pick = best_s.topk(c, dim=1)
            best_i = best_i.gather(1, pick)
    return best_s, best_i


def earlier_in_group(groups, valid):
    """(B, L) → (B, L) long: for each position, how many earlier valid positions of the
    row share its group. A stable sort by group, a cumulative sum and a gather."""
    import torch

    B, L = groups.shape
    order = torch.sort(groups, dim=1, stable=True).indices
    g = groups.gather(1, order)
    v = valid.gather(1, order).long()
    before_incl = v.cumsum(1)
    pos = torch.arange(L).expand(B, L)
    start = torch.ones(B, L, dtype=torch.bool)
    start[:, 1:] = g[:, 1:] != g[:, :-1]
    first = torch.where(start, pos, torch.zeros_like(pos)).cummax(1).values
    base = (before_incl - v).gather(1, first)
    out = torch.empty_like(before_incl)
    out.scatter_(1, order, before_incl - v - base)
    return out


def readable(items, no_vector):
    """(B, L) bool: the history steps the model can read (an item with a vector)."""
    import torch

    if no_vector is None:
        return torch.ones_like(items, dtype=torch.bool)
    inside = items < len(no_vector)
    return ~(no_vector[items.masked_fill(~inside, 0)] & inside)


def with_new_items(model, vectors, new_idx, text, category, brand, price):
    """``vectors`` (N+1, H) extended to the largest of ``new_idx`` with the vectors of items
    added after training (:meth:`new_item_vectors` of the model), and the (rows,) bool mask of
    rows without a vector (gaps, or items the model cannot place). Unchanged when there are none."""
    import torch

    if new_idx is None or len(new_idx) == 0:
        return vectors, None
    new_idx = torch.as_tensor(new_idx, dtype=torch.long)
    fresh = model.new_item_vectors(torch.as_tensor(text), torch.as_tensor(category), torch.as_tensor(brand),
                                   torch.as_tensor(price)) if hasattr(model, "new_item_vectors") else None
    if fresh is None:
        return vectors, None
    n = int(new_idx.max())
    out = torch.zeros(n + 1, vectors.shape[1], dtype=vectors.dtype)
    out[:vectors.shape[0]] = vectors
    out[new_idx] = fresh.to(vectors.dtype)
    no_vector = torch.ones(n + 1, dtype=torch.bool)
    no_vector[1:vectors.shape[0]] = False
    no_vector[new_idx] = False
    return out, no_vector


def rank_users(model, vectors, rules: ItemRules, items, types, excluded, k: int, *, block_items: int = 8192,
               pool=None, no_vector=None) -> dict[str, Any]:
    """Top-``k`` recommendations for a batch of users after the shop's rules.

    ``items``, ``types``: (B, L) left-padded history (indices may exceed the model's catalogue:
    items added since training; they inform the fill's categories but not the model);
    ``excluded``: (B, W) padded indices never recommended to the row; ``vectors``:
    ``model.item_vectors()``, optionally with rows appended for items added after training
    (:func:`with_new_items`; ``no_vector``: (rows,) bool, True where such an item got no
    vector); ``pool``: ``rules.fill_pool(k)`` as a tensor (computed once).
    Returns tensors ``items`` (B, k), ``scores`` (B, k: the model's score, NaN for fill rows),
    ``reasons`` (B, k: the history item explaining a model row, 0 for fill rows),
    ``reason_types`` (its event type index), ``sources`` (B, k: index into :data:`SOURCES`,
    -1 where the row is empty), ``categories`` (B, k: the category a fill row is popular in).
    """
    import torch

    B = items.shape[0]
    trained = model.spec.num_items  # ids above it were added after training
    n_model = vectors.shape[0] - 1  # ids the model can score and read
    allowed = torch.zeros(max(rules.num_items, n_model) + 1, dtype=torch.bool)
    allowed[:len(rules.allowed)] = torch.from_numpy(rules.allowed)
    if no_vector is not None:
        allowed[:len(no_vector)] &= ~no_vector
    known = (items > 0) & (items <= n_model) & readable(items, no_vector)
    m_items, m_types = items.masked_fill(~known, 0), types.masked_fill(~known, 0)
    n_known = known.sum(1)
    has_history = n_known > 0
    # Model candidates: more than k when a brand cap may drop some.
    c = min(n_model, k if rules.max_per_brand <= 0 else max(4 * k, k + 50))
    cand_s = torch.full((B, c), float("-inf"))
    cand_i = torch.zeros((B, c), dtype=torch.long)
    rows = torch.nonzero(has_history).flatten()
    if len(rows):
        h = model.encode(m_items[rows], m_types[rows], vectors)[:, -1]
        s, i = blocked_topk(h, vectors, ~allowed[:n_model + 1], excluded[rows], c, block_items)
        cand_s[rows], cand_i[rows] = s, i
    model_ok = torch.isfinite(cand_s)

    # The fill: popular allowed items, the categories of the user's history first.
    if pool is None:
        pool = torch.from_numpy(rules.fill_pool(k))
    category = torch.zeros(len(allowed), dtype=torch.long)
    category[:len(rules.category)] = torch.from_numpy(rules.category)
    pool_cat = category[pool]  # (P,)
    in_rules = (items > 0) & (items <= rules.num_items)
    hist_cat = category[items.masked_fill(~in_rules, 0)]  # (B, L); 0 = none
    n_cat = int(category.max()) + 1
    share = torch.zeros(B, n_cat).scatter_add_(1, hist_cat, in_rules.float())
    share[:, 0] = 0.0
    share = share / share.sum(1, keepdim=True).clamp(min=1.0)
    pop_rank = torch.arange(len(pool), dtype=torch.float32)  # pool is most popular first
    fill_key = share[:, pool_cat] * 2.0 - pop_rank[None, :] / max(len(pool), 1)  # (B, P) in (-1, 2]
    # Never an excluded item, nor one the model already proposes: both through the pool's
    # positions (a lookup and a scatter, never a users x items matrix).
    at_pool = torch.full((max(rules.num_items, n_model) + 1,), -1, dtype=torch.long)
    at_pool[pool] = torch.arange(len(pool))
    taken = torch.cat([excluded.clamp(max=len(at_pool) - 1), torch.where(model_ok, cand_i, 0)], 1)
    hit = at_pool[taken].masked_fill(taken == 0, -1)
    fill_ok = block_mask(hit + 1, 1, len(pool)).logical_not() if rules.fill else torch.zeros(B, len(pool), dtype=torch.bool)
    fill_key = fill_key.masked_fill(~fill_ok, float("-inf"))
    fill_key, order = fill_key.sort(dim=1, descending=True, stable=True)
    fill_i = pool.expand(B, -1).gather(1, order)
    fill_ok = torch.isfinite(fill_key)
    fill_in_cat = share.gather(1, category[fill_i]) > 0

    # One list in priority order: the model's picks by score, then the fill.
    all_i = torch.cat([cand_i, fill_i], 1)
    ok = torch.cat([model_ok, fill_ok], 1)
    if rules.max_per_brand > 0:
        brand = torch.zeros(len(allowed), dtype=torch.long)
        brand[:len(rules.brand)] = torch.from_numpy(rules.brand)
        brand = brand[all_i]
        ok &= (brand == 0) | (earlier_in_group(brand, ok) < rules.max_per_brand)
    width = all_i.shape[1]
    position = torch.arange(width, dtype=torch.float32).expand(B, width)
    key = torch.where(ok, -position, torch.full_like(position, float("-inf")))
    kk = min(k, width)
    top_key, pick = key.topk(kk, dim=1)
    filled = torch.isfinite(top_key)
    from_model = pick < c
    out_items = all_i.gather(1, pick).masked_fill(~filled, 0)
    scores = torch.where(from_model, cand_s.gather(1, pick.clamp(max=c - 1)), torch.full_like(top_key, float("nan")))
    scores = scores.masked_fill(~filled, float("nan"))

    # The explanation of a model row: the history item most similar to it (cosine of item
    # vectors), never the item itself unless it is the whole history.
    unit = torch.nn.functional.normalize(vectors, dim=1)
    sim = unit[out_items.clamp(max=n_model) * from_model] @ unit[m_items].transpose(1, 2)  # (B, k, L)
    sim = sim.masked_fill((m_items == 0)[:, None, :], float("-inf"))
    sim = sim.masked_fill(m_items[:, None, :] == out_items[:, :, None], -2.0)
    at = sim.argmax(dim=2)
    reasons = m_items.gather(1, at).masked_fill(~(from_model & filled), 0)
    reason_types = m_types.gather(1, at).masked_fill(~(from_model & filled), 0)

    short = (n_known <= SHORT)[:, None].expand(B, kk)
    in_cat = torch.cat([torch.zeros_like(model_ok), fill_in_cat], 1).gather(1, pick)
    sources = torch.where(from_model, torch.where(out_items > trained, 4, torch.where(short, 1, 0)),
                          torch.where(in_cat, 2, 3))
    sources = sources.masked_fill(~filled, -1)
    categories = torch.where(from_model | ~filled, torch.zeros_like(out_items), category[out_items])
    return {"items": out_items, "scores": scores, "reasons": reasons, "reason_types": reason_types,
            "sources": sources, "categories": categories}
