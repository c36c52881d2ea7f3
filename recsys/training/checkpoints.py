"""Training checkpoints on storage every rank reaches, and warm starts from a trained model.

Rank 0 writes ``checkpoint.pt`` (model, optimiser, epoch, step, best score and weights,
early-stopping counter, history, elapsed time, every rank's RNG state) after each epoch to
``<train.checkpoint_dir>/<run id>/``, replacing the previous one only once the new one is
whole, and ``checkpoint.json`` beside it (epoch and best score, for people and tests). A
resumed run reads it on every rank.

The folder is any location the training processes can open with fsspec: a local folder (the
embedded default: ``<lakehouse>/_checkpoints``), ``file:///``, ``s3a://``/``s3://`` (with
s3fs), ``abfss://`` (adlfs), ``gs://`` (gcsfs), or ``dbfs:/`` (read through Databricks'
``/dbfs`` mount). The training processes have no JVM, so Hadoop's FileSystem is not there.
"""

from __future__ import annotations

import io
import json
from typing import Any

CHECKPOINT = "checkpoint.pt"
SUMMARY = "checkpoint.json"


def _fs_url(url: str) -> str:
    """What fsspec opens for a Spark-style URI."""
    from recsys.storage import for_python

    url = for_python(url)  # s3a:// and s3n:// are s3:// to s3fs
    if url.startswith("dbfs:/"):
        return "/dbfs/" + url[len("dbfs:/"):].lstrip("/")
    return url


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def save(folder: str, state: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write ``state`` (torch-saveable) and its ``summary`` (JSON) into ``folder``; a reader
    never sees a half-written checkpoint (written aside, then moved over the old one)."""
    import fsspec
    import torch

    fs, path = fsspec.core.url_to_fs(_fs_url(folder))
    fs.makedirs(path, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp = _join(path, CHECKPOINT + ".tmp")
    with fs.open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    fs.mv(tmp, _join(path, CHECKPOINT))
    with fs.open(_join(path, SUMMARY), "w") as f:
        f.write(json.dumps(summary))


def _read(folder: str, name: str) -> bytes | None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(_fs_url(folder))
    target = _join(path, name)
    if not fs.exists(target):
        return None
    with fs.open(target, "rb") as f:
        return f.read()


def load(folder: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder``, or None if there is none."""
    import torch

    data = _read(folder, CHECKPOINT)
    return None if data is None else torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def summary(folder: str) -> dict[str, Any] | None:
    """``checkpoint.json`` of ``folder`` (epoch, best score), or None."""
    data = _read(folder, SUMMARY)
    return None if data is None else json.loads(data)


def warm_state(model, trained: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """``model``'s state dict with the values of a ``trained`` state dict where they fit: a
    tensor of the same shape is taken whole; one that differs in its first dimension only
    (the rows of items, categories, brands: the catalogue grew or shrank) has its shared
    leading rows taken and keeps its fresh initial values for the rest.

    Only learned parameters are carried over: buffers (the item text vectors, say) describe
    the new catalogue and stay as the new model built them.

    Returns (state, counts of tensors taken whole / in part / left fresh)."""
    state = model.state_dict()
    learned = {name for name, _ in model.named_parameters()}
    counts = {"whole": 0, "rows": 0, "fresh": 0}
    for name, value in state.items():
        if name not in learned:
            continue
        old = trained.get(name)
        if old is None or old.dim() != value.dim():
            counts["fresh"] += 1
        elif old.shape == value.shape:
            state[name] = old.clone().to(value.dtype)
            counts["whole"] += 1
        elif old.dim() >= 1 and old.shape[1:] == value.shape[1:]:
            n = min(old.shape[0], value.shape[0])
            merged = value.clone()
            merged[:n] = old[:n].to(value.dtype)
            state[name] = merged
            counts["rows"] += 1
        else:
            counts["fresh"] += 1
    return state, counts
