"""A causal transformer recommender (SASRec family) with side information.

An item's vector fuses its id embedding with embeddings of its category, brand and price
bucket (and, optionally, a projected text embedding); the same vectors score the output
(tied weights), so ranking the whole catalogue is one matmul. Each input position also
gets a position embedding and an event-type embedding (view, click, add_to_cart, purchase).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from recsys.config import ModelConfig
    from recsys.models.base import Catalogue


class ByteDropout(nn.Module):
    """Dropout whose mask comes from random bytes: ``p`` is rounded to a multiple of 1/256.

    On the CPU, ``nn.Dropout`` draws one Bernoulli number per element and took a quarter of
    a training step; a byte per element is about three times faster. Same contract: identity
    in eval mode, kept values scaled by 1 / (1 - p) in training.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.cut = min(255, round(p * 256))  # drop a value when its byte is below cut
        self.p = self.cut / 256
        self.scale = 1.0 / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == 0:
            return x
        keep = torch.randint(0, 256, x.shape, dtype=torch.uint8, device=x.device) >= self.cut
        return x * keep.to(x.dtype) * self.scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class SASRecSpec:
    """Everything needed to rebuild the network (stored with the model)."""

    num_items: int  # ids 1..num_items, 0 = padding
    max_len: int
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    item_dropout: float = 0.0  # training only: share of input steps whose item vector is blanked
    num_categories: int = 0
    num_brands: int = 0
    num_price_buckets: int = 0
    num_event_types: int = 5
    text_dim: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class SASRec(nn.Module):
    """Inputs ``items``, ``types``: (B, L) int64, left-padded with 0. Output hidden (B, L, H)."""

    def __init__(self, spec: SASRecSpec, item_category: torch.Tensor | None = None,
                 item_brand: torch.Tensor | None = None, item_price: torch.Tensor | None = None,
                 item_text: torch.Tensor | None = None) -> None:
        super().__init__()
        self.spec = spec
        n, h = spec.num_items + 1, spec.hidden
        self.item_emb = nn.Embedding(n, h, padding_idx=0)
        self.pos_emb = nn.Embedding(spec.max_len, h)
        self.type_emb = nn.Embedding(spec.num_event_types + 1, h, padding_idx=0)
        # Side features: one lookup table per feature, indexed through per-item buffers.
        self.side = nn.ModuleDict()
        for name, size, table in (
            ("category", spec.num_categories, item_category),
            ("brand", spec.num_brands, item_brand),
            ("price", spec.num_price_buckets, item_price),
        ):
            if size > 0:
                if table is None or table.shape != (n,):
                    raise ValueError(f"item_{name} must be a ({n},) tensor when num_{name}>0")
                self.side[name] = nn.Embedding(size + 1, h, padding_idx=0)
                self.register_buffer(f"item_{name}", table.long().clone(), persistent=True)
        if spec.text_dim > 0:
            if item_text is None or item_text.shape != (n, spec.text_dim):
                raise ValueError(f"item_text must be a ({n}, {spec.text_dim}) tensor when text_dim>0")
            self.register_buffer("item_text", item_text.float().clone(), persistent=True)
            self.text_proj = nn.Linear(spec.text_dim, h, bias=False)
        self.emb_dropout = ByteDropout(spec.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=h, nhead=spec.heads, dim_feedforward=h * 4 if h < 128 else h * 2,
            dropout=spec.dropout, activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=spec.blocks, enable_nested_tensor=False)
        for block in self.encoder.layers:  # no parameters, so saved weights are unaffected
            block.dropout, block.dropout1, block.dropout2 = (ByteDropout(spec.dropout) for _ in range(3))
        self.final_norm = nn.LayerNorm(h)
        # K > 0: sampled softmax over K shared negatives when the catalogue has more than K
        # items; otherwise (or K = 0) the full-catalogue softmax.
        self.num_negatives = 0
        # With ``item_log_share`` ((N+1,) log of each item's share of the training targets) the
        # sampled softmax adds the batch's own targets as negatives (see mixed_softmax_loss).
        self.item_log_share: torch.Tensor | None = None
        self.register_buffer(
            "causal", torch.triu(torch.ones(spec.max_len, spec.max_len, dtype=torch.bool), diagonal=1),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in [self.item_emb, self.pos_emb, self.type_emb, *self.side.values()]:
            nn.init.normal_(emb.weight, std=0.02)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The fused vectors of ``ids`` (any shape → shape + (H,)), or of every item when
        ``ids`` is None ((N+1, H), row 0 = padding). Fusing only the ids a batch uses is what
        makes a sampled softmax cheap: the text projection of the whole catalogue costs as
        much as a few thousand negatives' logits."""
        pick = (lambda table: table) if ids is None else (lambda table: table[ids])  # noqa: E731
        v = self.item_emb.weight if ids is None else self.item_emb(ids)  # the lookup keeps padding_idx
        for name, emb in self.side.items():
            v = v + emb(pick(getattr(self, f"item_{name}")))
        if self.spec.text_dim > 0:
            v = v + self.text_proj(pick(self.item_text))
        return v

    def new_item_vectors(self, text: torch.Tensor, category: torch.Tensor, brand: torch.Tensor,
                         price: torch.Tensor) -> torch.Tensor | None:
        """Vectors for items added after training, (M, H), from what they have without any
        interaction: the text embedding through the learned text projection plus the side
        embeddings of their category, brand and price bucket (ids the model never saw count as
        none). No id embedding: that is what interactions would have taught. None when the
        model was trained without text features (a new item is then left to the fill)."""
        if self.spec.text_dim <= 0 or text.shape[-1] != self.spec.text_dim:
            return None
        v = self.text_proj(text.float())
        for name, ids in (("category", category), ("brand", brand), ("price", price)):
            if name in self.side:
                emb = self.side[name]
                ids = ids.long()
                v = v + emb(ids.masked_fill((ids < 0) | (ids >= emb.num_embeddings), 0))
        return v

    def encode(self, items: torch.Tensor, types: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids and event types → (B, L, H) causal hidden states. ``vectors``: the
        precomputed (N+1, H) ``item_vectors()``, or None to fuse only the ids in ``items``."""
        B, L = items.shape
        if L > self.spec.max_len:
            raise ValueError(f"sequence length {L} > max_len {self.spec.max_len}")
        # Positions count from the right (the newest step is always max_len - 1) and padding is
        # masked out of attention, so a left-padded batch cut to its longest sequence
        # (see trim_padding) gives exactly the same outputs, for less work.
        pos = torch.arange(self.spec.max_len - L, self.spec.max_len, device=items.device)
        emb = self.item_vectors(items) if vectors is None else vectors[items]
        if self.training and self.spec.item_dropout > 0:
            # Blank whole items (their position and event type stay): the model learns to rely
            # on the rest of the history rather than on any single step.
            blank = torch.rand(B, L, 1, device=items.device) < self.spec.item_dropout
            emb = emb.masked_fill(blank, 0.0)
        x = emb * math.sqrt(self.spec.hidden) + self.pos_emb(pos)[None] + self.type_emb(types)
        real = items != 0
        keep = real.unsqueeze(-1)  # (B, L, 1): padding stays zero, as in SASRec
        x = self.emb_dropout(x) * keep
        # A query sees earlier real steps; a padding query sees only itself (no empty softmax row).
        diag = torch.eye(L, dtype=torch.bool, device=items.device)
        allowed = ~self.causal[:L, :L] & (real[:, None, :] | diag)
        mask = torch.zeros(B, L, L, device=items.device).masked_fill(~allowed, float("-inf"))
        x = self.encoder(x, mask=mask.repeat_interleave(self.spec.heads, dim=0))
        return self.final_norm(x) * keep

    def forward(self, items: torch.Tensor, types: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Without ``targets``: scores of every item after the last position, (B, N+1), column
        0 = -inf. With ``targets`` (B, L): the full-softmax training loss (a scalar), so that
        training goes through ``forward`` and DDP's gradient hooks fire."""
        if targets is not None:
            k = getattr(self, "num_negatives", 0)
            unseen = getattr(self, "mask_history", False)
            if 0 < k < self.spec.num_items:  # a catalogue no larger than K: the exact softmax is cheaper
                share = getattr(self, "item_log_share", None)
                if share is not None:
                    return mixed_softmax_loss(self, items, types, targets, k, share, mask_history=unseen)
                return sampled_softmax_loss(self, items, types, targets, k, mask_history=unseen)
            return full_softmax_loss(self, items, types, targets, mask_history=unseen)
        vectors = self.item_vectors()
        h = self.encode(items, types, vectors)[:, -1]  # (B, H)
        scores = h @ vectors.T
        scores[:, 0] = float("-inf")
        return scores


def build(cfg: ModelConfig, catalogue: Catalogue, max_len: int) -> SASRec:
    """The untrained network for ``model.family: sasrec`` (see :func:`recsys.models.build_model`).

    Side features are used when ``cfg.side_features`` is on, the text vectors when
    ``cfg.text_features`` is on and the catalogue has them.
    """
    side = cfg.side_features
    text = catalogue.text if cfg.text_features and catalogue.text else None
    spec = SASRecSpec(
        num_items=catalogue.num_items, max_len=max_len, hidden=cfg.hidden, blocks=cfg.blocks, heads=cfg.heads,
        dropout=cfg.dropout, item_dropout=cfg.item_dropout,
        num_categories=catalogue.num_categories if side else 0,
        num_brands=catalogue.num_brands if side else 0,
        num_price_buckets=catalogue.num_price_buckets if side else 0,
        text_dim=len(text[0]) if text else 0,
    )
    longs = lambda xs, used: torch.tensor(xs, dtype=torch.long) if used else None  # noqa: E731
    return SASRec(
        spec,
        item_category=longs(catalogue.category, spec.num_categories),
        item_brand=longs(catalogue.brand, spec.num_brands),
        item_price=longs(catalogue.price, spec.num_price_buckets),
        item_text=torch.tensor(text, dtype=torch.float32) if text else None,
    )


def trim_padding(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cut left-padded (B, L) tensors to the longest sequence in the batch (the first tensor's
    non-zero columns); the model's outputs for the kept columns do not change."""
    used = (tensors[0] != 0).any(dim=0).nonzero()
    start = int(used[0]) if len(used) else tensors[0].shape[1] - 1
    return tuple(t[:, start:] for t in tensors)


class CatalogueCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ vectors.T`` against ``targets``, column 0 (padding) excluded.

    The same value and gradients as ``F.cross_entropy`` on the logits, with less traffic over
    the (P, N+1) logits, which dominate a step on a large catalogue: the forward turns the
    logits into exp(logit - row max) in place and keeps them with their row sums, so the
    exponentials are computed once; the backward divides them into the softmax in place (no
    log-softmax copy, no zero-filled one-hot gradient). On Yelp's shapes (P = 550,
    N = 20,034, H = 128, one CPU thread) the loss's forward and backward took about 72% of
    the time of ``F.cross_entropy``'s. The graph can be backpropagated once. ``excluded``
    (P, W) lists items that are no candidates of their row (see :func:`seen_items`); a row's
    target must not be among them.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, vectors: torch.Tensor, targets: torch.Tensor,
                excluded: torch.Tensor | None = None) -> torch.Tensor:
        logits = h @ vectors.T  # (P, N+1)
        if excluded is not None:  # (P, W) item indices that are no candidates of their row (0 = none)
            logits.scatter_(1, excluded, float("-inf"))
        logits[:, 0] = float("-inf")
        target_logit = logits.gather(1, targets[:, None]).squeeze(1)
        top = logits.max(dim=1).values
        e = logits.sub_(top[:, None]).exp_()  # in place: exp(logit - max), column 0 = 0
        total = e.sum(dim=1)
        loss = (top + total.log() - target_logit).mean()
        ctx.save_for_backward(h, vectors, targets, e, total)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, vectors, targets, e, total = ctx.saved_tensors
        g = e.div_(total[:, None])  # the softmax, in place
        g[torch.arange(len(targets), device=g.device), targets] -= 1.0
        scale = grad / len(targets)
        return (g @ vectors) * scale, (g.T @ h) * scale, None, None


def seen_items(items: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What each target position has already seen, for a loss that ranks unseen items only.

    items, targets: (B, L). Returns ``seen`` (P, L), the input items up to and including
    each position that has a target (0 = none), and ``fresh`` (P,) bool, False where the
    target is one of them (a repeat). P = the non-zero targets, in ``targets[targets != 0]``
    order.
    """
    L = items.shape[1]
    upto = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()  # [t, s]: s <= t
    seen = items[:, None, :].masked_fill(~upto[None], 0)[targets != 0]  # (P, L)
    fresh = ~(seen == targets[targets != 0][:, None]).any(dim=1)
    return seen, fresh


def _no_positions(model: SASRec, h: torch.Tensor) -> torch.Tensor:
    """A zero loss that still reaches the weights (DDP expects a gradient for every one)."""
    return h.sum() * 0.0 + sum(p.sum() for p in model.parameters()) * 0.0


def full_softmax_loss(model: SASRec, items: torch.Tensor, types: torch.Tensor, targets: torch.Tensor,
                      *, mask_history: bool = False) -> torch.Tensor:
    """Mean cross-entropy of the next item over the whole catalogue at every non-pad position.

    items, types, targets: (B, L) int64; targets 0 = no target at that position.
    ``mask_history``: rank the items the position has not seen yet, as the headline protocol
    does (``evaluation.protocol=history_masked``): its input items are no candidates, and a
    position whose target repeats one of them is left out (it could only be a miss there).
    """
    vectors = model.item_vectors()
    h = model.encode(items, types, vectors)  # (B, L, H)
    sel = targets != 0
    if not mask_history:
        return CatalogueCrossEntropy.apply(h[sel], vectors, targets[sel])
    seen, fresh = seen_items(items, targets)
    if not fresh.any():
        return _no_positions(model, h)
    return CatalogueCrossEntropy.apply(h[sel][fresh], vectors, targets[sel][fresh], seen[fresh])


def seen_columns(columns: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a row's seen items stand among sorted candidate columns: ``(rows, cols)``, every
    pair with ``columns[col]`` one of the items of ``seen[row]``.

    columns: (K,) sorted item indices, repeats allowed (sampled candidates have them); seen:
    (P, W) item indices, 0 = none. Each seen item finds its run of equal columns by binary
    search and the runs are listed, so the cost is O(P·W·log K + hits), not that of a dense
    (P, K) mask (which cost more than the loss's own matrix product on Yelp's shapes). A
    row that saw an item twice lists its pairs twice.
    """
    row, at = (seen != 0).nonzero(as_tuple=True)
    items = seen[row, at]
    lo = torch.searchsorted(columns, items)
    counts = torch.searchsorted(columns, items, right=True) - lo
    rows = row.repeat_interleave(counts)
    run_start = torch.cumsum(counts, 0) - counts  # where each (row, item)'s pairs begin in the list
    offset = torch.arange(len(rows), device=seen.device) - run_start.repeat_interleave(counts)
    return rows, lo.repeat_interleave(counts) + offset


def sampled_softmax_loss(model: SASRec, items: torch.Tensor, types: torch.Tensor, targets: torch.Tensor,
                         num_negatives: int, log_share: torch.Tensor | None = None, *,
                         mask_history: bool = False) -> torch.Tensor:
    """Cross-entropy over the target and ``num_negatives`` uniformly sampled items (shared by the batch).

    For catalogues too large for a full softmax; log-Q correction for uniform sampling is a
    constant and cancels. With ``log_share`` the batch's own targets join the candidates:
    see :func:`mixed_softmax_loss`. A candidate equal to a row's target is no negative of it.
    ``mask_history``: as in :func:`full_softmax_loss`, a candidate the position has seen is no
    negative of it, and positions with a repeated target are left out.
    """
    h = model.encode(items, types)  # fuses only the batch's own item vectors
    sel = targets != 0
    hs, ts = h[sel], targets[sel]  # (P, H), (P,)
    seen = None
    if mask_history:
        seen, fresh = seen_items(items, targets)
        if not fresh.any():
            return _no_positions(model, h)
        hs, ts, seen = hs[fresh], ts[fresh], seen[fresh]
    P, N = len(ts), model.spec.num_items
    cand = torch.randint(1, N + 1, (num_negatives,), device=items.device)
    if log_share is not None:
        cand = torch.cat([cand, ts])  # (K + P,): the in-batch negatives
    if seen is not None:
        cand = cand.sort().values  # the order of the candidates does not matter; see seen_columns
    vec = model.item_vectors(torch.cat([ts, cand]))  # one fusion for targets and candidates
    pos_logit = (hs * vec[:P]).sum(-1, keepdim=True)  # (P, 1)
    neg_logit = hs @ vec[P:].T  # (P, K [+ P])
    if log_share is not None:
        log_q = torch.log(num_negatives / N + P * log_share.to(hs.device).exp())  # (N+1,)
        pos_logit = pos_logit - log_q[ts][:, None]
        neg_logit = neg_logit - log_q[cand][None, :]
    neg_logit = neg_logit.masked_fill(cand[None, :] == ts[:, None], float("-inf"))
    if seen is not None:
        neg_logit.index_put_(seen_columns(cand, seen), torch.tensor(float("-inf"), device=hs.device))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return F.cross_entropy(logits, torch.zeros(P, dtype=torch.long, device=items.device))


def mixed_softmax_loss(model: SASRec, items: torch.Tensor, types: torch.Tensor, targets: torch.Tensor,
                       num_negatives: int, log_share: torch.Tensor, *, mask_history: bool = False) -> torch.Tensor:
    """Sampled softmax over ``num_negatives`` uniform items plus the batch's own targets
    (in-batch negatives), with the log-Q correction (Bengio & Senécal; Yi et al. 2019).

    Uniform negatives alone are almost never the popular items a model must learn to rank
    below the right one; the batch's targets are drawn in proportion to popularity, so they
    are exactly those. Each candidate j is expected Q_j = K / N + P * share_j times among the
    K + P candidates (P = target positions in the batch, share_j = j's share of the training
    targets), and every logit, the target's included, is lowered by log Q_j, which makes the
    sampled softmax's gradient an estimate of the full softmax's. A candidate equal to a
    row's target is masked out of that row's negatives.

    log_share: (N+1,) float, log of each item's share of the training targets.
    """
    return sampled_softmax_loss(model, items, types, targets, num_negatives, log_share, mask_history=mask_history)


def target_log_share(targets: torch.Tensor, num_items: int, *, counts: bool = False) -> torch.Tensor:
    """(N+1,) log of each item's share of the non-zero ``targets`` (or, with ``counts``, of
    ``targets`` read as (N+1,) occurrence counts). Items never seen count as half an
    occurrence, so that no log-Q correction is infinite."""
    if counts:
        c = targets.double().clone()
    else:
        c = torch.bincount(targets[targets != 0].flatten(), minlength=num_items + 1).double()
    c[1:] = c[1:].clamp_min(0.5)
    c[0] = 0.0
    return (c / c[1:].sum()).clamp_min(1e-30).log().float()
