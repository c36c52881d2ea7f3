"""Query normalisation, prefixes and one-typo variants (recsys.search.text)."""

from __future__ import annotations

import pytest

from recsys.search.text import (MAX_QUERY_CHARS, describe_bad_query, fold_plural, normalise_query, one_edit_variants,
                                prefixes, tokens, within_one_edit)


@pytest.mark.parametrize("raw, normal", [
    ("Coffee Maker", "coffee maker"),
    ("  coffee   MAKERS!! ", "coffee maker"),
    ("Café crème", "cafe creme"),
    ("eye-shadow, 2-pack", "eye shadow 2 pack"),
    ("BATTERIES", "battery"),
    ("boxes brushes watches", "box brush watch"),
    ("glass bus kits", "glass bus kit"),
    ("tab\tnew\nline", "tab new line"),
    ("Ölbild\u0000", "olbild"),
])
def test_normalise_query(raw, normal):
    assert normalise_query(raw) == normal
    assert normalise_query(normal) == normal  # idempotent
    assert tokens(raw) == normal.split()


def test_plural_folding_keeps_short_words_and_non_plurals():
    assert [fold_plural(w) for w in ("gas", "bus", "dress", "analysis", "toys", "berries", "ss")] == \
        ["gas", "bus", "dress", "analysis", "toy", "berry", "ss"]


@pytest.mark.parametrize("raw", ["", "   ", None, "!!!", "\x00\x01\x02", "—…¿?"])
def test_nothing_searchable_is_empty_and_said_why(raw):
    assert normalise_query(raw) == ""
    assert describe_bad_query(raw)


def test_long_and_foreign_queries_are_cut_or_kept_not_refused():
    assert len(normalise_query("x" * 10_000)) == MAX_QUERY_CHARS
    assert describe_bad_query("x" * 10_000) is None
    assert normalise_query("ほうじ茶 ラテ") and describe_bad_query("ほうじ茶") is None


def test_prefixes_skip_trailing_spaces():
    assert prefixes("eye cream", 6) == ["e", "ey", "eye", "eye c", "eye cr"]
    assert prefixes("tv", 8) == ["t", "tv"]


def test_one_edit_variants_cover_each_kind_of_typo():
    v = one_edit_variants("cofe")
    assert {"coffe", "cofee", "coe", "ocfe", "cafe"} <= v  # insertion, deletion, transposition, substitution
    assert "cofe" not in v and not any(x.startswith(" ") or x.endswith(" ") for x in v)


def test_within_one_edit_agrees_with_the_variants():
    for word in ("cofe", "eye c", "tent"):
        for v in one_edit_variants(word):
            assert within_one_edit(word, v) and within_one_edit(v, word)
    assert within_one_edit("tent", "tent") and not within_one_edit("tent", "tnet s")
    assert not within_one_edit("coffee", "cafeee") and not within_one_edit("ab", "ba c")
