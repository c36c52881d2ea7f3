"""The search engine on a generated catalogue with the real sentence encoder: retrieval,
typo tolerance, bad queries, unknown users, personal features, suggestions and the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config import load_config
from recsys.datagen import build_catalog, catalogue_profiles
from recsys.features.text import load_encoder
from recsys.search.engine import FEATURES, SearchEngine, UserState
from recsys.search.ranker import graded_metrics
from recsys.search.service import query_encoder


@pytest.fixture(scope="module")
def engine():
    items = catalogue_profiles(build_catalog(300, np.random.default_rng(3)))
    encode = query_encoder(load_config(None))
    texts = [f"{r.title} . {r.category.replace('>', ' ')} . {r.brand} . {r.description}" for r in items.itertuples()]
    emb = load_encoder(encode.model_path).encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    suggestions = {
        "c": [("coffee maker", 9.0, 12, 8), ("cookbook", 5.0, 6, 5), ("cat food", 4.0, 5, 4)],
        "ca": [("cat food", 4.0, 5, 4)],
        "co": [("coffee maker", 9.0, 12, 8), ("cookbook", 5.0, 6, 5)],
        "cook": [("cookbook", 5.0, 6, 5)],
        "cookb": [("cookbook", 5.0, 6, 5)],
    }
    leaf = items["category"].str.split(">").str[-1]
    query_items = {q: [(i, 3.0) for i in items.item_id[leaf.str.lower() == q][:3]] for q in ("cookbook", "cat food")}
    return SearchEngine(items, emb, encode, suggestions=suggestions, query_items=query_items, candidates=50)


def _leaf(engine, p):
    return engine.category[p].split(">")[-1].strip().lower()


def test_a_query_finds_its_products_and_says_why(engine):
    res = engine.search("Coffee Makers", top_k=6)
    assert res.normalised == "coffee maker" and len(res.items) == 6
    makers = sum(c.lower().endswith("coffee maker") for c in engine.category)  # 4 in this catalogue
    assert all(it["category"].lower().endswith("coffee maker") for it in res.items[:makers])
    assert all("coffee" in it["title"].lower() for it in res.items)
    assert all(it["reason"] == "matches 'coffee', 'maker'" for it in res.items[:makers])
    assert not res.personalised and res.note == "unknown user: results are not personalised"


def test_one_typo_in_a_word_still_matches(engine):
    res = engine.search("cofee maker", top_k=4)
    assert "(for 'cofee')" in res.items[0]["reason"]
    assert [it["item_id"] for it in res.items] == [it["item_id"] for it in engine.search("coffee maker", top_k=4).items]
    assert "(for 'cofee')" in res.items[0]["reason"]


@pytest.mark.parametrize("query", ["", "   ", None, "!!!?", "\x00\x07\x1b", "x" * 10_000, "ほうじ茶 ラテ"])
def test_absurd_queries_get_an_answer_not_a_crash(engine, query):
    res = engine.search(query, top_k=5)
    if res.items:  # long or foreign text: closest in meaning, said so
        assert "no product has these words" in res.note
    else:
        assert res.note and res.items == []


def test_personal_features_follow_the_history(engine):
    r = engine.retrieve("coffee maker")
    seen = [p for p in r["candidates"] if _leaf(engine, p) == "coffee maker"][0]
    brand = engine.brand_idx[seen]
    user = engine.user_states([([engine.item_idx[seen]] * 3, [1, 2, 4])])[0]
    f = engine.features(r, user)
    assert list(f.columns) == list(FEATURES)
    row = f.iloc[list(r["candidates"]).index(seen)]
    assert row["seen_funnel"] == 4 and row["category_affinity"] == 1.0 and row["has_user"] == 1
    same_brand = f["brand_affinity"].to_numpy()[engine.brand_idx[r["candidates"]] == brand]
    assert (same_brand == 1.0).all()
    anonymous = engine.features(r, UserState(known=False))
    assert anonymous["has_user"].eq(0).all() and anonymous["category_affinity"].isna().all()


def test_suggestions_popular_typo_tolerant_and_personal(engine):
    mpc = engine.suggest("c", top_k=3)
    assert [s["query"] for s in mpc["suggestions"]] == ["coffee maker", "cookbook", "cat food"]
    assert not mpc["personalised"]
    typo = engine.suggest("cpok")  # one substitution away from "cook"
    assert typo["typo"] and [s["query"] for s in typo["suggestions"]] == ["cookbook"]
    assert not engine.suggest("cpo")["suggestions"]  # shorter than 4 characters: no typo allowed
    assert [s["query"] for s in engine.suggest("Cookbooks")["suggestions"]] == ["cookbook"]  # longer than kept
    assert [s["query"] for s in engine.suggest("cookbokk")["suggestions"]] == ["cookbook"]  # a typo past the key
    assert engine.suggest("cookbkzzz")["suggestions"] == []  # nothing within one typo of what was typed
    cat_food = [p for p in range(engine.n) if _leaf(engine, p) == "cat food"][:3]
    fan = engine.user_states([([engine.item_idx[p] for p in cat_food], [1] * len(cat_food))], [["cat food"]])[0]
    personal = engine.suggest("c", fan, top_k=3)
    assert personal["personalised"] and personal["suggestions"][0]["query"] == "cat food"
    assert personal["suggestions"][0]["reason"] == "you searched it before"
    assert engine.suggest("", top_k=3)["suggestions"] == [] and engine.suggest("zzzz")["suggestions"] == []
    assert "no popular query" in engine.suggest("zzzz")["note"]


def test_graded_metrics():
    rel = {"a": 4, "b": 1}
    perfect = graded_metrics(["a", "b", "c"], rel)
    assert perfect == {"ndcg@10": 1.0, "mrr": 1.0, "hr@10": 1.0}
    swapped = graded_metrics(["b", "a"], rel)
    assert swapped["mrr"] == 1.0 and 0.5 < swapped["ndcg@10"] < 1.0
    assert graded_metrics(["x"] * 10 + ["a"], rel) == {"ndcg@10": 0.0, "mrr": 1 / 11, "hr@10": 0.0}


def test_the_one_query_encoder_gives_the_pipelines_vectors():
    """The direct tokenizer + transformer + mean pooling path for one query equals
    sentence-transformers' encode (the vectors the items were encoded with)."""
    from recsys.search.service import _mean_pooled

    encode = query_encoder(load_config(None))
    model = load_encoder(encode.model_path)
    assert _mean_pooled(model) is not None  # all-MiniLM-L6-v2: Transformer, mean Pooling, Normalize
    for text in ("coffee maker", "Crème brûlée TORCH!", "", "eye cream " * 300, "кофеварка"):
        want = model.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[0]
        got = encode(text)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5), text
