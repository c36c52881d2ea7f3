"""Model families and the one factory that training builds them with.

A family is a module with ``build(cfg: ModelConfig, catalogue: Catalogue, max_len: int)``
returning a :class:`~recsys.models.base.SequentialRecommender`; adding one is that module
plus one line in :data:`FAMILIES` (and a member of :class:`recsys.config.ModelFamily`).
The modules are imported on first use, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from recsys.errors import ConfigError
from recsys.models.base import Catalogue, SequentialRecommender  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from recsys.config import ModelConfig

# model.family → the module that builds it
FAMILIES: dict[str, str] = {
    "sasrec": "recsys.models.sasrec",
}


def build_model(cfg: ModelConfig, catalogue: Catalogue, max_len: int) -> SequentialRecommender:
    """The untrained network of family ``cfg.family`` for ``catalogue`` and inputs of up to
    ``max_len`` steps. Its initial weights come from torch's global random generator.

    Raises:
        ConfigError: ``cfg.family`` is not one of :data:`FAMILIES`.
    """
    family = getattr(cfg.family, "value", cfg.family)
    if family not in FAMILIES:
        raise ConfigError(f"config key 'model.family': {family!r} is not a model family; "
                          f"allowed values: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[family]).build(cfg, catalogue, max_len)
