"""Shaping a model's inputs; shared by training's data, evaluation, batch scoring and the
served model (which loads through :func:`recsys.models.serving.load_network`)."""

from __future__ import annotations

import numpy as np


def pad_left(seqs: list, length: int) -> np.ndarray:
    """Ragged int sequences → (B, length) int64, keeping the last ``length`` items, 0-padded."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s if s is not None else [])[-length:]
        if s:
            out[i, length - len(s):] = s
    return out
