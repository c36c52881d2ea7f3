"""What the rest of recsys needs from a sequential recommender, whatever its family.

Training, evaluation and scoring only use the members of :class:`SequentialRecommender`;
:func:`recsys.models.build_model` builds one from the model config and the
:class:`Catalogue` the data gives. Nothing here imports torch at run time, so the driver can
describe a model without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Catalogue:
    """What the data tells a model about the items, indexed by item_idx (0 = padding).

    Built on the driver from ``item_profiles`` (and ``item_text_embeddings``); picklable, so
    it travels to the training processes.
    """

    num_items: int  # ids 1..num_items
    category: list[int]  # (N+1,) category_idx of each item
    brand: list[int]  # (N+1,) brand_idx
    price: list[int]  # (N+1,) price_bucket
    num_categories: int
    num_brands: int
    num_price_buckets: int
    text: list[list[float]] | None = None  # (N+1, dim) item text vectors, or None

    def __post_init__(self) -> None:
        for name in ("category", "brand", "price"):
            if len(getattr(self, name)) != self.num_items + 1:
                raise ValueError(f"Catalogue.{name} must have num_items + 1 = {self.num_items + 1} entries, "
                                 f"got {len(getattr(self, name))}")


class ModelSpec(Protocol):
    """The sizes a trained model carries with it (stored with the model)."""

    num_items: int  # the catalogue the model was trained on: ids 1..num_items
    max_len: int  # the longest input sequence

    def to_dict(self) -> dict: ...


@runtime_checkable
class SequentialRecommender(Protocol):
    """A network that reads a user's left-padded history and scores the whole catalogue.

    Inputs are ``items`` and ``types``: (B, L) int64 item ids and event types, left-padded
    with 0, L <= ``spec.max_len``. Cutting leading all-padding columns (see
    :func:`recsys.models.sasrec.trim_padding`) must not change the outputs of the kept ones.
    The model is a ``torch.nn.Module``: ``to``, ``train``, ``eval``, ``parameters``,
    ``state_dict`` behave as usual.
    """

    spec: ModelSpec
    # Training only: K > 0 samples the loss over K negatives (0 = the full softmax) and, with
    # item_log_share ((N+1,) log share of each item among the training targets), adds the
    # batch's own targets as log-Q corrected negatives.
    num_negatives: int
    item_log_share: torch.Tensor | None

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N+1, H) output vectors of every item (row 0 = padding), or those of ``ids``."""
        ...

    def new_item_vectors(self, text: torch.Tensor, category: torch.Tensor, brand: torch.Tensor,
                         price: torch.Tensor) -> torch.Tensor | None:
        """(M, H) vectors for M items added after training, from their (M, text_dim) text
        embeddings and (M,) category, brand and price-bucket ids; None when the model cannot
        place an item without interactions (no text features). Rows appended to
        ``item_vectors()`` (ids N+1…) score and encode like trained items."""
        ...

    def encode(self, items: torch.Tensor, types: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids and types → (B, L, H) hidden states; position t sees steps <= t only.
        ``vectors``: the precomputed ``item_vectors()``, to reuse across batches. A state
        · ``item_vectors().T`` scores the catalogue."""
        ...

    def __call__(self, items: torch.Tensor, types: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Without ``targets``: (B, N+1) scores after the last position, column 0 = -inf.
        With (B, L) next-item ``targets`` (0 = none): the scalar training loss."""
        ...
