"""The model interface: one factory keyed by model.family, and the protocol every family meets."""

import dataclasses
from pathlib import Path

import pytest
import torch

from recsys.config import ConfigError, ModelConfig, ModelFamily, load_config
from recsys.models import FAMILIES, Catalogue, SequentialRecommender, build_model
from recsys.models.sasrec import SASRec

CONF = Path(__file__).resolve().parents[2] / "conf"


def catalogue(n: int = 20, text_dim: int = 0) -> Catalogue:
    gen = torch.Generator().manual_seed(0)
    return Catalogue(
        num_items=n, category=[0] + [1 + i % 3 for i in range(n)], brand=[0] + [1 + i % 4 for i in range(n)],
        price=[0] + [1 + i % 5 for i in range(n)], num_categories=3, num_brands=4, num_price_buckets=5,
        text=torch.randn(n + 1, text_dim, generator=gen).tolist() if text_dim else None,
    )


def test_every_family_in_the_config_has_a_builder():
    assert sorted(FAMILIES) == sorted(f.value for f in ModelFamily)


def test_unknown_family_is_a_config_error_naming_the_allowed_values():
    with pytest.raises(ConfigError, match="'model.family': 'bert4rec' is not a model family; allowed values: sasrec"):
        build_model(dataclasses.replace(ModelConfig(), family="bert4rec"), catalogue(), 8)
    # the config loader refuses it before anything is built
    with pytest.raises(ConfigError, match="allowed values: sasrec"):
        load_config(CONF / "local.yaml", ["model.family=bert4rec"])
    assert load_config(CONF / "local.yaml").model.family is ModelFamily.SASREC


def test_the_factory_builds_the_configured_network():
    cfg = ModelConfig(hidden=16, blocks=1, heads=2, dropout=0.1, item_dropout=0.2)
    torch.manual_seed(0)
    m = build_model(cfg, catalogue(text_dim=6), 8)
    assert isinstance(m, SASRec)
    s = m.spec
    assert (s.num_items, s.max_len, s.hidden, s.blocks, s.heads, s.dropout, s.item_dropout) == (20, 8, 16, 1, 2, 0.1, 0.2)
    assert (s.num_categories, s.num_brands, s.num_price_buckets, s.text_dim) == (3, 4, 5, 6)
    assert m.item_category.tolist() == catalogue().category
    # the switches turn the side and text features off whatever the catalogue holds
    bare = build_model(dataclasses.replace(cfg, side_features=False, text_features=False), catalogue(text_dim=6), 8)
    assert (bare.spec.num_categories, bare.spec.num_brands, bare.spec.num_price_buckets, bare.spec.text_dim) == (0, 0, 0, 0)
    assert len(bare.side) == 0 and not hasattr(bare, "item_text")
    # same seed, same initial weights: every rank builds the same network
    torch.manual_seed(0)
    again = build_model(cfg, catalogue(text_dim=6), 8)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


def test_a_built_model_meets_the_protocol_the_stages_use():
    m = build_model(ModelConfig(hidden=16, blocks=1, heads=1, dropout=0.0), catalogue(), 8).eval()
    assert isinstance(m, SequentialRecommender)
    items = torch.tensor([[0, 0, 3, 5, 7], [0, 0, 0, 1, 4]])
    types = (items != 0).long()
    vectors = m.item_vectors()
    assert vectors.shape == (21, 16)
    h = m.encode(items, types, vectors)[:, -1]  # how evaluation and scoring score the catalogue
    scores = m(items, types)
    assert scores.shape == (2, 21) and torch.isinf(scores[:, 0]).all()
    assert torch.allclose((h @ vectors.T)[:, 1:], scores[:, 1:], atol=1e-5)
    assert m.spec.to_dict()["num_items"] == 20 and m.num_negatives == 0 and m.item_log_share is None


def test_the_catalogue_checks_its_lists():
    with pytest.raises(ValueError, match="Catalogue.brand must have num_items \\+ 1 = 21 entries, got 3"):
        dataclasses.replace(catalogue(), brand=[0, 1, 2])
