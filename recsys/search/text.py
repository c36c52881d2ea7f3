"""Query text: the one normalisation every search table, index and request goes through,
tokens, and the one-typo variants that make prefix lookup tolerant.

Pure Python (no Spark, no numpy): the Spark jobs call it through a UDF, the search engine
directly, so a query is normalised the same way when it is logged and when it is typed.
"""

from __future__ import annotations

import re
import unicodedata

MAX_QUERY_CHARS = 200  # longer queries are cut here (after normalising): nobody types more
_PUNCT = re.compile(r"[^\w]+", re.UNICODE)
_SPACES = re.compile(r"\s+")
_ES_AFTER = ("s", "x", "z", "ch", "sh")
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


def fold_plural(word: str) -> str:
    """A simple English plural to its singular: ``batteries`` → ``battery``, ``boxes`` →
    ``box``, ``brushes`` → ``brush``, ``kits`` → ``kit``; ``glass``, ``bus`` and words of
    three letters or fewer are kept."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(_ES_AFTER):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise_query(text: str | None) -> str:
    """The normal form of a query: accents stripped (NFKD), case folded, punctuation and
    control characters turned into spaces, whitespace collapsed, simple plurals folded
    (``fold_plural``), cut to ``MAX_QUERY_CHARS``. ``""`` when nothing searchable is left.

    >>> normalise_query("  Café  CREMES, 2-Pack!! ")
    'cafe creme 2 pack'
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", str(text)[: MAX_QUERY_CHARS * 4])
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = _PUNCT.sub(" ", text.replace("_", " "))
    words = [fold_plural(w) for w in _SPACES.split(text) if w]
    return " ".join(words)[:MAX_QUERY_CHARS].strip()


def tokens(text: str | None) -> list[str]:
    """The words of ``normalise_query(text)``."""
    normal = normalise_query(text)
    return normal.split() if normal else []


def prefixes(query: str, max_len: int) -> list[str]:
    """The prefixes of a normalised query, 1 to ``max_len`` characters, without a trailing
    space (``"eye c"`` but not ``"eye "``), each once."""
    out: list[str] = []
    for n in range(1, min(max_len, len(query)) + 1):
        p = query[:n]
        if not p.endswith(" ") and p not in out:
            out.append(p)
    return out


def one_edit_variants(prefix: str) -> set[str]:
    """Every string one edit (deletion, substitution, insertion, transposition) away from
    ``prefix`` over lower-case letters, digits and space: the prefixes a shopper may have
    meant when they typed ``prefix`` with one typo."""
    out: set[str] = set()
    for i in range(len(prefix) + 1):
        left, right = prefix[:i], prefix[i:]
        if right:
            out.add(left + right[1:])
            if len(right) > 1:
                out.add(left + right[1] + right[0] + right[2:])
        for ch in ALPHABET:
            out.add(left + ch + right)
            if right:
                out.add(left + ch + right[1:])
    out.discard(prefix)
    return {v for v in out if v and not v.startswith(" ") and not v.endswith(" ")}


def within_one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are equal or one edit apart (a deletion, insertion,
    substitution or transposition of neighbours): the one-typo rule of ``one_edit_variants``."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1:] == b[i + 1:] or (a[i + 2:] == b[i + 2:] and a[i:i + 2] == b[i:i + 2][::-1])
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1:] == shorter[i:]


def describe_bad_query(text: str | None) -> str | None:
    """Why ``text`` cannot be searched (a sentence for the shopper), or None when it can."""
    if text is None or not str(text).strip():
        return "the query is empty: type a few words, e.g. a product name"
    if not normalise_query(text):
        if any(unicodedata.category(ch).startswith("C") for ch in str(text)):
            return "the query holds only control characters and punctuation: type a few words"
        return "the query holds only punctuation or symbols: type a few words"
    return None
