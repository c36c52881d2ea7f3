"""Loading a registered model in a Spark Python worker, and shaping its inputs; shared by
evaluation and batch scoring."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.models.base import SequentialRecommender

# One model per Python worker process, keyed by URI: mapInPandas calls the function once per
# partition, and loading from MLflow each time would dominate the cost.
_MODELS: dict[str, Any] = {}


def load_model_cached(model_uri: str, tracking_uri: str) -> SequentialRecommender:
    """The torch model behind ``model_uri``, in eval mode, loaded at most once in this process."""
    if model_uri not in _MODELS:
        import mlflow
        import torch

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        model.eval()
        torch.set_num_threads(1)
        _MODELS[model_uri] = model
    return _MODELS[model_uri]


def pad_left(seqs: list, length: int) -> np.ndarray:
    """Ragged int sequences → (B, length) int64, keeping the last ``length`` items, 0-padded."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s if s is not None else [])[-length:]
        if s:
            out[i, length - len(s):] = s
    return out
