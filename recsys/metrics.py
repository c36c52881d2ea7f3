"""Full-ranking metrics: HR@K, NDCG@K and MRR with one held-out target per user.

Shared by the evaluation (every scorer) and by validation during training (early stopping).

The target's rank counts every unmasked item scoring *at least* as high as the target
(ties are broken against the target, so a constant scorer earns nothing from ties).

Two protocols (``evaluation.protocol``), reported separately and never mixed:

* ``history_masked`` (the headline, the one published results use): every item of the
  user's history is excluded from the ranking. The mask depends on the history only, never
  on the target: a target the user already had is excluded like any other history item and
  counts as a miss (rank "beyond the catalogue").
* ``unmasked``: nothing is excluded; items the user already had compete with the rest.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each target among the items the mask leaves in.

    Every scorer's ranks go through here (the model, the baselines, validation during
    training), so the protocol is the same for all of them.

    Args:
        scores: (B, N+1) item scores (column 0 is padding and never counts).
        targets: (B,) target item index per row, in 1..N.
        mask: (B, N+1) bool, True = item excluded; it must come from the history alone (see
            :func:`history_mask`). A target that is itself masked (the user already had it)
            gets rank N, one past the last place an item can take: a miss at every K and
            1/(N+1) in MRR. ``None`` excludes nothing (the ``unmasked`` protocol).
    Returns:
        (B,) int64 ranks: 0 means the target is first.
    """
    scores = scores.clone().float()
    scores[:, 0] = float("-inf")
    rows = torch.arange(len(targets), device=scores.device)
    t = scores[rows, targets]
    ahead = scores >= t[:, None]
    ahead[rows, targets] = False  # the target does not outrank itself
    if mask is None:
        return ahead.sum(dim=1)
    ranks = (ahead & ~mask).sum(dim=1)
    beyond = scores.shape[1] - 1  # N: no unmasked target can rank there
    return torch.where(mask[rows, targets], torch.full_like(ranks, beyond), ranks)


def history_mask(histories: Sequence[Iterable[int]], num_columns: int) -> torch.Tensor:
    """(B, N+1) bool mask with True at every item index in each row's history."""
    mask = torch.zeros(len(histories), num_columns, dtype=torch.bool)
    for i, h in enumerate(histories):
        idx = [int(x) for x in h if 0 < int(x) < num_columns]
        if idx:
            mask[i, idx] = True
    return mask


def metrics_from_ranks(ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """``{"hr_at_10": …, "ndcg_at_10": …, "mrr": …}`` from 0-based target ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks given: the evaluation set is empty")
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"hr_at_{k}"] = float(hit.mean())
        out[f"ndcg_at_{k}"] = float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (r + 1.0)).mean())
    out["users"] = int(r.size)
    return out


def metric_sums(ranks: torch.Tensor, k: int = 10) -> torch.Tensor:
    """(3,) float64 tensor [hits@k, ndcg@k sum, count], for all-reduce across ranks."""
    r = ranks.double()
    hit = r < k
    return torch.stack([hit.sum().double(), torch.where(hit, 1.0 / torch.log2(r + 2.0), 0.0).sum(), torch.tensor(float(len(r)), dtype=torch.float64)])
