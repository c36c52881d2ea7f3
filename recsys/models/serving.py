"""The recommender as an MLflow model, and the ranking code it shares with batch scoring.

Training logs the network as an MLflow ``pyfunc`` (:class:`RecommenderModel`): the pickled
torch module and the item vocabulary as artifacts, a signature, an input example, the pinned
pip requirements of the stack it ran on, and the ``recsys`` package as code. So the registered
model works the MLflow way::

    model = mlflow.pyfunc.load_model("models:/recsys-sasrec@champion")
    model.predict(pd.DataFrame({"item_ids": [["B0001", "B0002"]], "event_types": [["view", "purchase"]]}),
                  params={"top_k": 10, "exclude": "purchased"})

and equally through ``mlflow.pyfunc.spark_udf`` and ``mlflow models serve``. Input: one row
per user, the raw item ids of the recent history (oldest first) and optionally the event type
of each (view, click, add_to_cart, purchase; default view). Output per row: the top-K raw item
ids, their scores (NaN for a row the popularity fill added), the history item that explains
each and the path that produced it (``sources``: model, model_short_history,
popular_in_category, popular). Batch scoring (:mod:`recsys.scoring.batch`) loads the same
network and goes through the same :func:`recsys.scoring.ranking.rank_users`, so both give the
same recommendations for the same history; the served model applies the catalogue's business
rules (stock, categories, brand cap, fill) as they were at training (``rules.npz``), batch
scoring as they are on its run date. :func:`rank_catalogue` is the model's ranking without
rules (evaluation and the training run's samples).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from recsys.events import EVENT_TYPE_INDEX

NETWORK = "network.pt"  # the pickled torch module
VOCABULARY = "vocabulary.json"  # {"items": [null, id of item 1, …]}
RULES = "rules.npz"  # the catalogue's business rules (recsys.scoring.ranking.ItemRules) at training time
EXCLUDE = ("purchased", "interacted", "none")
# What a served model needs: the stack it was trained with, pinned to the versions used.
REQUIREMENTS = ("torch", "mlflow", "numpy", "pandas", "pyyaml", "cloudpickle")

# One network per process and model URI: Spark workers score many partitions.
_NETWORKS: dict[str, tuple[Any, list]] = {}


def exclusion_mask(lists: Sequence[Sequence[int] | None], num_columns: int):
    """(B, num_columns) bool mask, True at each row's listed item indices (ids beyond the
    catalogue are ignored). One scatter for the batch, no loop over items."""
    import torch

    lengths = [len(x) if x is not None else 0 for x in lists]
    width = max(lengths, default=0)
    mask = torch.zeros(len(lists), num_columns, dtype=torch.bool)
    if width == 0:
        return mask
    idx = np.zeros((len(lists), width), dtype=np.int64)
    for i, x in enumerate(lists):
        if lengths[i]:
            idx[i, :lengths[i]] = x
    idx_t = torch.from_numpy(idx)
    idx_t[idx_t >= num_columns] = 0
    mask.scatter_(1, idx_t, True)
    mask[:, 0] = False
    return mask


def rank_catalogue(model, vectors, items, types, excluded, k: int):
    """Top-``k`` items after each (B, L) left-padded history, with the history item that
    best explains each pick.

    ``vectors``: ``model.item_vectors()``; ``excluded``: (B, N+1) bool mask of items never
    recommended. Items unknown to the model (ids beyond its catalogue) are dropped from the
    input. Returns (top item indices, their scores, reason item indices), each (B, k).
    """
    import torch

    unknown = items > model.spec.num_items
    items, types = items.masked_fill(unknown, 0), types.masked_fill(unknown, 0)
    h = model.encode(items, types, vectors)[:, -1]
    scores = h @ vectors.T  # (B, N+1)
    scores[:, 0] = float("-inf")
    scores = scores.masked_fill(excluded[:, :scores.shape[1]], float("-inf"))
    k = min(k, scores.shape[1] - 1)
    top_scores, top_items = scores.topk(k, dim=1)
    # The explanation: the history item most similar (cosine of item vectors) to each pick.
    unit = torch.nn.functional.normalize(vectors, dim=1)
    sim = unit[top_items] @ unit[items].transpose(1, 2)  # (B, k, L)
    sim = sim.masked_fill((items == 0)[:, None, :], float("-inf"))
    # An item is no explanation of itself, unless it is all the history there is.
    sim = sim.masked_fill(items[:, None, :] == top_items[:, :, None], -2.0)
    reason = items.gather(1, sim.argmax(dim=2))
    return top_items, top_scores, reason


def load_network(model_uri: str, tracking_uri: str = "") -> tuple[Any, list]:
    """``(network in eval mode, item vocabulary)`` of a registered recommender, loaded at
    most once per process: the artifacts the pyfunc model serves with."""
    if model_uri not in _NETWORKS:
        import mlflow

        if tracking_uri:
            from recsys.tracking import registry_uri

            mlflow.set_tracking_uri(tracking_uri)
            name = model_uri[len("models:/"):].split("/")[0].split("@")[0] if model_uri.startswith("models:/") else ""
            mlflow.set_registry_uri(registry_uri(tracking_uri, name))
        local = Path(mlflow.artifacts.download_artifacts(model_uri))
        _NETWORKS[model_uri] = _read_artifacts(local / "artifacts" / NETWORK, local / "artifacts" / VOCABULARY)
    return _NETWORKS[model_uri]


def _read_artifacts(network: Path, vocabulary: Path) -> tuple[Any, list]:
    import torch

    model = torch.load(network, map_location="cpu", weights_only=False)
    model.eval()
    torch.set_num_threads(int(os.environ.get("RECSYS_SERVING_THREADS", "1")))
    return model, json.loads(vocabulary.read_text())["items"]


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency; this keeps the module importable
    PythonModel = object  # type: ignore[misc,assignment]


class RecommenderModel(PythonModel):
    """The MLflow pyfunc face of a trained recommender (see the module docstring)."""

    def load_context(self, context) -> None:
        self.model, self.items = _read_artifacts(Path(context.artifacts["network"]),
                                                 Path(context.artifacts["vocabulary"]))
        self.index = {item: i for i, item in enumerate(self.items) if i > 0}
        self.vectors = None
        self.rules = read_rules(Path(context.artifacts["rules"])) if "rules" in context.artifacts \
            else neutral_rules(self.model.spec.num_items)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        from recsys.models.loading import pad_left
        from recsys.scoring.ranking import SOURCES, padded, rank_users

        params = params or {}
        top_k = int(params.get("top_k", 10))
        exclude = str(params.get("exclude", "purchased"))
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if exclude not in EXCLUDE:
            raise ValueError(f"exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "item_ids" not in frame:
            raise ValueError("the input needs an 'item_ids' column: the raw item ids of each user's history")
        ids, kinds, seen = [], [], []
        for n, history in enumerate(frame["item_ids"]):
            history = [] if history is None else list(history)
            types = frame["event_types"].iloc[n] if "event_types" in frame else None
            types = list(types) if types is not None else ["view"] * len(history)
            if len(types) != len(history):
                raise ValueError(f"row {n}: {len(history)} item ids but {len(types)} event types")
            pairs = [(self.index[i], EVENT_TYPE_INDEX.get(t, EVENT_TYPE_INDEX["view"]))
                     for i, t in zip(history, types) if i in self.index]
            ids.append([p[0] for p in pairs])
            kinds.append([p[1] for p in pairs])
            bought = EVENT_TYPE_INDEX["purchase"]
            seen.append([] if exclude == "none" else [i for i, t in pairs if exclude == "interacted" or t == bought])
        L = self.model.spec.max_len
        with torch.no_grad():
            if self.vectors is None:
                self.vectors = self.model.item_vectors()
            items = torch.from_numpy(pad_left(ids, L))
            types = torch.from_numpy(pad_left(kinds, L))
            out = rank_users(self.model, self.vectors, self.rules, items, types, padded(seen), top_k)
        # Fewer than top_k items left after the exclusions and rules: only those.
        rows = []
        for t, s, r, src in zip(out["items"].tolist(), out["scores"].tolist(), out["reasons"].tolist(),
                                out["sources"].tolist()):
            k = sum(1 for x in src if x >= 0)
            rows.append((t[:k], s[:k], r[:k], src[:k]))
        return pd.DataFrame({
            "item_ids": [[self.items[i] for i in t] for t, _, _, _ in rows],
            "scores": [list(map(float, s)) for _, s, _, _ in rows],
            "reason_item_ids": [[self.items[i] if i > 0 else None for i in r] for _, _, r, _ in rows],
            "sources": [[SOURCES[x] for x in src] for _, _, _, src in rows],
        })


def neutral_rules(num_items: int):
    """No rules: every item allowed, no brand cap, no fill (a model logged without rules)."""
    from recsys.scoring.ranking import ItemRules

    n = num_items + 1
    allowed = np.ones(n, dtype=bool)
    allowed[0] = False
    return ItemRules(category=np.zeros(n, np.int64), brand=np.zeros(n, np.int64), allowed=allowed,
                     popularity=np.zeros(n), fill=False)


def write_rules(rules, path: Path) -> None:
    np.savez(path, category=rules.category, brand=rules.brand, allowed=rules.allowed, popularity=rules.popularity,
             max_per_brand=rules.max_per_brand, fill=rules.fill)


def read_rules(path: Path):
    from recsys.scoring.ranking import ItemRules

    with np.load(path) as z:
        return ItemRules(category=z["category"], brand=z["brand"], allowed=z["allowed"], popularity=z["popularity"],
                         max_per_brand=int(z["max_per_brand"]), fill=bool(z["fill"]))


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("string"), "event_types", required=False)]),
        outputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores"),
                        ColSpec(Array("string"), "reason_item_ids"), ColSpec(Array("string"), "sources")]),
        params=ParamSchema([ParamSpec("top_k", "long", 10), ParamSpec("exclude", "string", "purchased")]),
    )


def pip_requirements() -> list[str]:
    """The serving stack pinned to the versions installed here."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def log_recommender(model, item_ids: list, registered_model_name: str | None, workdir: Path, rules=None):
    """Log ``model`` (a trained network, eval mode, on the CPU) as the pyfunc model "model" of
    the active run, registered as ``registered_model_name``; returns MLflow's ModelInfo.
    ``rules``: the catalogue's :class:`~recsys.scoring.ranking.ItemRules` the served model
    applies as batch scoring does (stock, categories, brand cap, fill) as of training."""
    import mlflow
    import torch

    import recsys

    workdir.mkdir(parents=True, exist_ok=True)
    network, vocabulary = workdir / NETWORK, workdir / VOCABULARY
    torch.save(model, network)
    vocabulary.write_text(json.dumps({"items": item_ids}))
    artifacts = {"network": str(network), "vocabulary": str(vocabulary)}
    if rules is not None:
        write_rules(rules, workdir / RULES)
        artifacts["rules"] = str(workdir / RULES)
    example_items = [i for i in item_ids[1:4] if i is not None]
    example = pd.DataFrame({"item_ids": [example_items], "event_types": [["view"] * len(example_items)]})
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=RecommenderModel(),
        artifacts=artifacts,
        code_paths=[str(Path(recsys.__file__).parent)],
        signature=signature(),
        input_example=(example, {"top_k": 10}),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name or None,
    )
