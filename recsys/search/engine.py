"""The search engine: retrieval, features, ranking, reasons and query suggestions, in one
warm process (no Spark at request time).

A query goes through :func:`recsys.search.text.normalise_query`, then two retrievers over the
whole catalogue: BM25 (``bm25s``) over each item's title, brand, category path and
description, and the cosine of the query's sentence embedding (the same offline encoder as
``item_text_embeddings``) with every item's. Their top ``search.candidates`` are merged and
ranked by the learned ranker (:mod:`recsys.search.ranker`) over :data:`FEATURES`; without a
ranker, by reciprocal-rank fusion of the two lists (the "hybrid"). Both retrievers are exact,
brute-force scores over the catalogue (sparse for BM25, one matrix-vector product for the
embeddings): fast enough up to the 100k items benchmarked in ``bench/search.py``; beyond a
few million items the embedding side would go to an approximate index (FAISS/HNSW).

Personal features come from the user's steps (``user_profiles``) as of the request: the
share of their steps in the item's category and brand, the price fit, whether they saw the
item already, and the sequential recommender's score of the item for their history (the
same network and item vectors as batch scoring). An unknown user gets the non-personal
features only (the personal ones missing, as for a user without history in training).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from recsys.search.text import describe_bad_query, normalise_query, one_edit_variants, tokens, within_one_edit

# The ranker's features, in the order of its input columns. The first block needs no user.
BASE_FEATURES = ("bm25", "bm25_rel", "bm25_rank", "cosine", "cosine_rel", "cosine_rank", "title_cover",
                 "category_cover", "brand_match", "log_users", "ctr", "conversion", "in_stock")
USER_FEATURES = ("has_user", "price_gap", "category_affinity", "top_category_affinity", "brand_affinity",
                 "seen_funnel", "rec_score", "rec_rel", "rec_rank")
FEATURES = BASE_FEATURES + USER_FEATURES
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
TYPO_MIN_CHARS = 4  # prefixes and words this long tolerate one typo
SUGGEST_PRIOR_STEPS = 5.0  # personalised suggestions: the shop's top-category mix counts as this many of the user's steps
SUGGEST_RECENT = 1.0  # log-boost of a query the user typed before
EVENT_WORDS = {1: "viewed", 2: "clicked", 3: "added to your cart", 4: "bought"}


@dataclass
class UserState:
    """What the engine knows of one user at request time. ``known`` False: an unknown user."""

    known: bool
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # item_idx, oldest first
    types: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # event type index
    queries: tuple[str, ...] = ()  # normalised queries typed before, newest last
    vector: np.ndarray | None = None  # the recommender's hidden state after the history (H,)
    explain: Any = field(default=None, repr=False, compare=False)  # (history (idx, type), unit vectors), built once

    @property
    def has_history(self) -> bool:
        return self.known and len(self.items) > 0


@dataclass
class SearchResult:
    query: str
    normalised: str
    personalised: bool
    note: str  # why results are not personalised, or why there are none ("" = nothing to say)
    items: list[dict[str, Any]]
    seconds: float = 0.0


class SearchEngine:
    """Retrieval, ranking and suggestions over one catalogue snapshot.

    Args:
        items: one row per item: ``item_id``, ``item_idx`` (the recommender's index),
            ``title``, ``description``, ``category``, ``top_category``, ``category_idx``,
            ``brand``, ``brand_idx``, ``price_bucket``, ``in_stock``, ``users``, ``ctr``,
            ``conversion``.
        embeddings: (len(items), D) unit-norm text embeddings in ``items``' order.
        encode_query: text → (D,) unit-norm embedding (the same encoder as the items').
        recommender: ``(network, item vectors (N+1, H))`` or None.
        ranker: a LightGBM booster over :data:`FEATURES` (or :data:`BASE_FEATURES`), or None
            for the hybrid (reciprocal-rank fusion).
        suggestions: prefix → [(query, weight, searches, users)], best first.
        query_items: normalised query → [(item_id, score)], the items its searches engaged.
        candidates: per retriever.
    """

    def __init__(self, items: pd.DataFrame, embeddings: np.ndarray, encode_query, *,
                 recommender: tuple[Any, Any] | None = None, ranker: Any = None,
                 ranker_features: Sequence[str] = FEATURES,
                 suggestions: dict[str, list[tuple[str, float, int, int]]] | None = None,
                 query_items: dict[str, list[tuple[str, float]]] | None = None,
                 candidates: int = 200, cache_size: int = 4096) -> None:
        import bm25s

        self.items = items.reset_index(drop=True)
        n = len(self.items)
        if embeddings.shape[0] != n:
            raise ValueError(f"{embeddings.shape[0]} embeddings for {n} items")
        self.n = n
        self.item_ids = self.items["item_id"].to_numpy()
        self.pos_of = {item: p for p, item in enumerate(self.item_ids)}
        self.item_idx = self.items["item_idx"].to_numpy().astype(np.int64)
        self.titles = self.items["title"].fillna("").to_numpy()
        self.category = self.items["category"].fillna("").to_numpy()
        self.category_idx = self.items["category_idx"].fillna(0).to_numpy().astype(np.int64)
        self.top_category = self.items["top_category"].fillna("").to_numpy()
        self.top_codes, top_names = pd.factorize(self.items["top_category"].fillna(""))
        self.brand_idx = self.items["brand_idx"].fillna(0).to_numpy().astype(np.int64)
        self.price_bucket = self.items["price_bucket"].fillna(0).to_numpy().astype(np.float64)
        self.n_categories, self.n_tops, self.n_brands = (int(a.max(initial=0)) + 1 for a in
                                                         (self.category_idx, self.top_codes, self.brand_idx))
        self.static = {
            "log_users": np.log1p(self.items["users"].fillna(0).to_numpy(np.float64)),
            "ctr": self.items["ctr"].fillna(0.5).to_numpy(np.float64),
            "conversion": self.items["conversion"].fillna(0.5).to_numpy(np.float64),
            "in_stock": self.items["in_stock"].fillna(True).astype(bool).to_numpy(np.float64),
        }
        # item_idx → position, for the recommender's indices and the users' histories
        self.max_idx = int(self.item_idx.max(initial=0))
        self.pos_by_idx = np.full(self.max_idx + 1, -1, dtype=np.int64)
        self.pos_by_idx[self.item_idx] = np.arange(n)

        self.title_tokens = [set(tokens(t)) for t in self.titles]
        self.category_tokens = [set(tokens(c.replace(">", " "))) for c in self.category]
        self.brand_tokens = [set(tokens(b)) for b in self.items["brand"].fillna("")]
        corpus = [tokens(" ".join(str(x) for x in (r.title, r.brand, str(r.category).replace(">", " "), r.description)
                                  if isinstance(x, str)))
                  for r in self.items[["title", "brand", "category", "description"]].itertuples(index=False)]
        self.bm25 = bm25s.BM25()
        self.bm25.index(corpus, show_progress=False)
        self.doc_freq: dict[str, int] = {}
        for doc in corpus:
            for w in set(doc):
                self.doc_freq[w] = self.doc_freq.get(w, 0) + 1

        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.encode_query = encode_query
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size
        self.recommender = recommender
        self.ranker = ranker
        self.ranker_features = tuple(ranker_features)
        self.candidates = candidates
        self.suggestions = suggestions or {}
        self.prefix_len = max((len(k) for k in self.suggestions), default=0)  # the longest prefix stored
        self.query_items = query_items or {}
        # The shop's top-category mix (items weighted by their users): what a user's mix is compared to.
        self.shop_categories = self._category_shares(list(range(n)), np.exp(self.static["log_users"]))
        # A query's top categories: their shares of the items its searches engaged.
        self.query_categories = {q: self._category_shares([self.pos_of[i] for i, _ in lst if i in self.pos_of],
                                                          [s for i, s in lst if i in self.pos_of])
                                 for q, lst in self.query_items.items()}

    # -- users ----------------------------------------------------------------------------

    def user_states(self, histories: Sequence[tuple[Sequence[int], Sequence[int]] | None],
                    queries: Sequence[Sequence[str]] | None = None) -> list[UserState]:
        """One :class:`UserState` per ``(item_idx history, event type history)`` (None: an
        unknown user), with the recommender's vector of each history in one batch."""
        states = []
        for i, h in enumerate(histories):
            q = tuple(queries[i]) if queries is not None and queries[i] is not None else ()
            if h is None:
                states.append(UserState(known=False, queries=q))
            else:
                states.append(UserState(True, np.asarray(h[0], dtype=np.int64), np.asarray(h[1], dtype=np.int64), q))
        if self.recommender is not None:
            with_history = [s for s in states if s.has_history]
            for start in range(0, len(with_history), 512):
                batch = with_history[start:start + 512]
                for s, v in zip(batch, self._encode_users(batch)):
                    s.vector = v
        return states

    def _encode_users(self, states: list[UserState]) -> np.ndarray:
        import torch

        from recsys.models.loading import pad_left

        model, vectors = self.recommender
        L = model.spec.max_len
        items = torch.from_numpy(pad_left([s.items for s in states], L))
        types = torch.from_numpy(pad_left([s.types for s in states], L))
        unknown = items > model.spec.num_items
        items, types = items.masked_fill(unknown, 0), types.masked_fill(unknown, 0)
        with torch.no_grad():
            return model.encode(items, types, vectors)[:, -1].numpy()

    def _positions(self, user: UserState) -> tuple[np.ndarray, np.ndarray]:
        """The positions of the user's history items in this catalogue and their event
        types (items the catalogue does not hold are left out)."""
        inside = user.items <= self.max_idx
        pos = self.pos_by_idx[np.where(inside, user.items, 0)]
        keep = inside & (pos >= 0)
        return pos[keep], user.types[keep]

    def _category_shares(self, positions: Sequence[int], weights: Sequence[float] | None = None) -> dict[int, float]:
        """Top category (code) → its share of the items at ``positions`` (weighted).

        Suggestions compare users and queries by top category (Home, Beauty, ...): a shopper's
        next search is often for a product type new to them, but mostly in departments they
        already shop in."""
        if not len(positions):
            return {}
        w = np.ones(len(positions)) if weights is None else np.asarray(weights, dtype=np.float64)
        counts = np.bincount(self.top_codes[list(positions)], weights=w)
        total = counts.sum()
        return {int(c): float(counts[c] / total) for c in np.flatnonzero(counts)} if total > 0 else {}

    # -- retrieval ------------------------------------------------------------------------

    def _corrected(self, words: list[str]) -> tuple[list[str], dict[str, str]]:
        """Words unknown to the index replaced by a known word one typo away (the most
        common one), for words of TYPO_MIN_CHARS or more; the corrections made."""
        out, fixed = [], {}
        for w in words:
            if w in self.doc_freq or len(w) < TYPO_MIN_CHARS:
                out.append(w)
                continue
            options = [v for v in one_edit_variants(w) if v in self.doc_freq]
            if options:
                best = max(options, key=lambda v: (self.doc_freq[v], v))
                fixed[w] = best
                out.append(best)
            else:
                out.append(w)
        return out, fixed

    def clear_cache(self) -> None:
        """Forget every cached query vector (the next request for each runs the encoder)."""
        self._query_cache.clear()

    def query_vector(self, normalised: str) -> np.ndarray:
        v = self._query_cache.get(normalised)
        if v is None:
            v = np.asarray(self.encode_query(normalised), dtype=np.float32)
            self._query_cache[normalised] = v
            while len(self._query_cache) > self.cache_size:
                self._query_cache.popitem(last=False)
        else:
            self._query_cache.move_to_end(normalised)
        return v

    def retrieve(self, normalised: str) -> dict[str, Any]:
        """Scores of every item for the query: ``bm25`` and ``cosine`` ((n,) float32), the
        query words after typo correction, and the merged candidate positions."""
        words, fixed = self._corrected(normalised.split())
        bm25 = self.bm25.get_scores(words) if words else np.zeros(self.n, dtype=np.float32)
        # The corrected words for the embedding too: a typo moves a sentence vector a long way.
        cosine = self.embeddings @ self.query_vector(" ".join(words) if fixed else normalised)
        c = min(self.candidates, self.n)
        by_bm25 = _top(bm25, c)
        by_bm25 = by_bm25[bm25[by_bm25] > 0]
        by_cos = _top(cosine, c)
        merged = np.union1d(by_bm25, by_cos)
        return {"bm25": bm25, "cosine": cosine, "words": words, "fixed": fixed,
                "by_bm25": by_bm25, "by_cosine": by_cos, "candidates": merged}

    # -- features -------------------------------------------------------------------------

    def features(self, r: dict[str, Any], user: UserState, cand: np.ndarray | None = None) -> pd.DataFrame:
        """The ranker's features (:data:`FEATURES`) of the candidates ``cand`` (positions;
        default the merged candidates of ``r``) for one query and one user."""
        cand = r["candidates"] if cand is None else cand
        m = len(cand)
        bm25, cos = r["bm25"][cand].astype(np.float64), r["cosine"][cand].astype(np.float64)
        words = set(r["words"])
        nw = max(len(words), 1)
        f: dict[str, np.ndarray] = {
            "bm25": bm25,
            "bm25_rel": bm25 / bm25.max() if m and bm25.max() > 0 else np.zeros(m),
            "bm25_rank": _ranks(bm25),
            "cosine": cos,
            "cosine_rel": cos - (cos.max() if m else 0.0),
            "cosine_rank": _ranks(cos),
            "title_cover": np.fromiter((len(words & self.title_tokens[p]) for p in cand), np.float64, m) / nw,
            "category_cover": np.fromiter((len(words & self.category_tokens[p]) for p in cand), np.float64, m) / nw,
            "brand_match": np.fromiter((bool(words & self.brand_tokens[p]) for p in cand), np.float64, m),
        }
        for k, v in self.static.items():
            f[k] = v[cand]
        f.update(self._user_features(user, cand))
        return pd.DataFrame(np.column_stack([f[k] for k in FEATURES]) if m else np.zeros((0, len(FEATURES))),
                            columns=list(FEATURES))

    def _user_features(self, user: UserState, cand: np.ndarray) -> dict[str, np.ndarray]:
        m = len(cand)
        nan = np.full(m, np.nan)
        if not user.has_history:
            return {"has_user": np.full(m, float(user.known)), **{k: nan for k in USER_FEATURES[1:]}}
        pos, types = self._positions(user)
        steps = max(len(pos), 1)
        cat = np.bincount(self.category_idx[pos], minlength=self.n_categories) / steps
        top = np.bincount(self.top_codes[pos], minlength=self.n_tops) / steps
        brand = np.bincount(self.brand_idx[pos], minlength=self.n_brands) / steps
        priced = self.price_bucket[pos][self.price_bucket[pos] > 0]
        level = priced.mean() if len(priced) else np.nan
        deepest: dict[int, int] = {}  # the deepest funnel stage (1 view .. 4 purchase) the user reached per item
        for p, t in zip(pos.tolist(), np.minimum(types, 4).tolist()):
            deepest[p] = max(deepest.get(p, 0), t)
        seen = np.fromiter((deepest.get(p, 0) for p in cand.tolist()), np.float64, m)
        out = {
            "has_user": np.ones(m),
            "price_gap": np.abs(self.price_bucket[cand] - level) if not np.isnan(level) else nan,
            "category_affinity": cat[self.category_idx[cand]],
            "top_category_affinity": top[self.top_codes[cand]],
            "brand_affinity": brand[self.brand_idx[cand]],
            "seen_funnel": seen,
        }
        if self.recommender is not None and user.vector is not None:
            model, vectors = self.recommender
            idx = self.item_idx[cand]
            ok = idx <= model.spec.num_items
            score = np.full(m, np.nan)
            score[ok] = vectors[idx[ok]].numpy() @ user.vector
            best = np.nanmax(score) if ok.any() else np.nan
            out["rec_score"] = score
            out["rec_rel"] = score - best
            out["rec_rank"] = _ranks(score)
        else:
            out.update({"rec_score": nan, "rec_rel": nan, "rec_rank": nan})
        return out

    # -- ranking --------------------------------------------------------------------------

    def rank(self, r: dict[str, Any], user: UserState, method: str = "ranker") -> tuple[np.ndarray, np.ndarray, pd.DataFrame | None]:
        """Candidate positions best first, their scores and (for the ranker) their features.

        ``method``: ``bm25`` or ``embeddings`` (one retriever's full-catalogue order),
        ``hybrid`` (reciprocal-rank fusion of both lists) or ``ranker``."""
        if method == "bm25":
            order = np.argsort(-r["bm25"], kind="stable")
            return order, r["bm25"][order], None
        if method == "embeddings":
            order = np.argsort(-r["cosine"], kind="stable")
            return order, r["cosine"][order], None
        cand = r["candidates"]
        if method == "hybrid" or self.ranker is None:
            score = np.zeros(self.n)
            for lst in (r["by_bm25"], r["by_cosine"]):
                score[lst] += 1.0 / (RRF_K + np.arange(1, len(lst) + 1))
            s = score[cand]
            order = np.argsort(-s, kind="stable")
            return cand[order], s[order], None
        feats = self.features(r, user, cand)
        s = self.ranker.predict(feats[list(self.ranker_features)].to_numpy(np.float64))
        order = np.argsort(-s, kind="stable")
        return cand[order], s[order], feats.iloc[order].reset_index(drop=True)

    def search(self, query: str | None, user: UserState | None = None, top_k: int = 10) -> SearchResult:
        """The top ``top_k`` items for ``query`` and ``user`` (None: unknown), with reasons."""
        t0 = time.perf_counter()
        user = user or UserState(known=False)
        bad = describe_bad_query(query)
        if bad:
            return SearchResult(str(query or "")[:80], "", False, bad, [], time.perf_counter() - t0)
        normalised = normalise_query(query)
        r = self.retrieve(normalised)
        order, scores, feats = self.rank(r, user)
        personalised = user.has_history and self.ranker is not None and "has_user" in self.ranker_features
        note = "" if personalised else (
            "unknown user: results are not personalised" if not user.known else
            "no history for this user yet: results are not personalised" if not user.has_history else
            "no search ranker registered yet: results are not personalised (run `recsys train-search-ranker`)")
        lexical = r["bm25"][order[:top_k]].max(initial=0) > 0
        if not lexical:
            note = (note + "; " if note else "") + "no product has these words; closest in meaning instead"
        out = []
        for i, p in enumerate(order[:top_k]):
            row = feats.iloc[i] if feats is not None else None
            out.append({"rank": i + 1, "item_id": self.item_ids[p], "title": self.titles[p],
                        "category": self.category[p], "price_bucket": int(self.price_bucket[p]),
                        "score": round(float(scores[i]), 4), "reason": self.reason(p, r, user, row)})
        return SearchResult(str(query), normalised, personalised, note, out, time.perf_counter() - t0)

    def reason(self, p: int, r: dict[str, Any], user: UserState, row: pd.Series | None) -> str:
        """A short reason for showing item ``p``: the history item it is closest to, the
        user's category, or the matched words."""
        if row is not None and user.has_history:
            if row["seen_funnel"] > 0:
                return f"you {EVENT_WORDS.get(int(row['seen_funnel']), 'viewed')} it before"
            if row["rec_rank"] <= 0.05 and self.recommender is not None:
                because = self._closest_history_item(p, user)
                if because is not None:
                    q, t = because
                    return f"because you {EVENT_WORDS.get(int(min(t, 4)), 'viewed')} {self.titles[q]}"
            if row["category_affinity"] >= 0.2:
                return f"popular in your category {self.category[p].split('>')[-1].strip()}"
        matched = [w for w in r["words"] if w in self.title_tokens[p] or w in self.category_tokens[p]
                   or w in self.brand_tokens[p]]
        fixed = {v: k for k, v in r["fixed"].items()}
        if matched:
            shown = ", ".join(f"'{w}'" + (f" (for '{fixed[w]}')" if w in fixed else "") for w in matched)
            return f"matches {shown}"
        return "close in meaning to your query"

    def _closest_history_item(self, p: int, user: UserState) -> tuple[int, int] | None:
        """(position, event type) of the history step whose item vector is closest (cosine)
        to item ``p``'s, leaving out ``p`` itself; None when there is none."""
        import torch

        model, vectors = self.recommender
        if user.explain is None:
            L, N = model.spec.max_len, model.spec.num_items
            hist = [(int(i), int(t)) for i, t in zip(user.items[-L:], user.types[-L:])
                    if 0 < i <= N and i <= self.max_idx and self.pos_by_idx[i] >= 0]
            unit = torch.nn.functional.normalize(vectors[[i for i, _ in hist]], dim=1) if hist else None
            user.explain = (hist, unit)
        hist, unit = user.explain
        idx = int(self.item_idx[p])
        if unit is None or idx > model.spec.num_items:
            return None
        sim = unit @ torch.nn.functional.normalize(vectors[idx], dim=0)
        sim[torch.tensor([i == idx for i, _ in hist])] = float("-inf")
        best = int(sim.argmax())
        if not torch.isfinite(sim[best]):
            return None
        return int(self.pos_by_idx[hist[best][0]]), hist[best][1]

    # -- suggestions ----------------------------------------------------------------------

    def complete(self, prefix: str) -> tuple[str, list[tuple[str, float, int, int]], bool]:
        """The normalised prefix and its most-popular completions (query, weight, searches,
        users), best first; True when they come from one-typo variants of the prefix."""
        p = normalise_query(prefix)
        if prefix and prefix[-1:].isspace() and p:
            p += " "  # "eye " asks for the next word
        key = p[:self.prefix_len].rstrip()
        found = [c for c in self.suggestions.get(key, []) if c[0].startswith(p)]
        if found or len(p) < TYPO_MIN_CHARS:
            return p, found, False
        weights: dict[str, tuple[str, float, int, int]] = {}
        for v in one_edit_variants(key):
            for c in self.suggestions.get(v, []):
                if c[0] not in weights or weights[c[0]][1] < c[1]:
                    weights[c[0]] = c
        # A prefix longer than the stored keys: keep the completions that start within one typo of it.
        close = [c for c in weights.values() if len(p) <= self.prefix_len
                 or any(within_one_edit(p, c[0][:n]) for n in (len(p) - 1, len(p), len(p) + 1))]
        ranked = sorted(close, key=lambda c: (-c[1], -c[2], c[0]))
        return p, ranked, bool(ranked)

    def suggest(self, prefix: str | None, user: UserState | None = None, top_k: int = 10,
                personalise: bool = True) -> dict[str, Any]:
        """Query completions for ``prefix``: most popular (recency-weighted) first, re-ranked
        for a known user by their affinity to each query's categories and their own recent
        queries."""
        t0 = time.perf_counter()
        user = user or UserState(known=False)
        if prefix is None or not normalise_query(prefix):
            return {"prefix": str(prefix or "")[:80], "normalised": "", "personalised": False, "typo": False,
                    "note": "type a letter or more to get suggestions", "suggestions": [],
                    "seconds": time.perf_counter() - t0}
        p, found, typo = self.complete(prefix)
        personal = personalise and user.known and (user.has_history or bool(user.queries))
        cat_share = self._user_category_share(user) if personal else {}
        scored = [(c, self._suggest_score(c, user, cat_share) if personal else math.log(c[1] + 1e-9)) for c in found]
        scored.sort(key=lambda cs: (-cs[1], -cs[0][1], cs[0][0]))
        out = []
        for c, s in scored[:top_k]:
            why = "popular"
            if personal and c[0] in user.queries:
                why = "you searched it before"
            elif personal and cat_share and self._affinity(c[0], cat_share) >= 0.2:
                why = "popular in your categories"
            out.append({"query": c[0], "score": round(float(s), 4), "searches": int(c[2]), "reason": why})
        note = "" if personal else ("unknown user: suggestions are not personalised" if not user.known else
                                    "no history for this user yet: suggestions are not personalised")
        if typo:
            note = (note + "; " if note else "") + "nothing starts with this; allowing one typo"
        if not out:
            note = (note + "; " if note else "") + "no popular query starts with this"
        return {"prefix": str(prefix)[:80], "normalised": p, "personalised": personal, "typo": typo, "note": note,
                "suggestions": out, "seconds": time.perf_counter() - t0}

    def _user_category_share(self, user: UserState) -> dict[int, float]:
        return self._category_shares(self._positions(user)[0].tolist()) if user.has_history else {}

    def _affinity(self, query: str, cat_share: dict[int, float]) -> float:
        """How much of the user's history lies in the categories the query's searches led to."""
        return sum(w * cat_share.get(c, 0.0) for c, w in self.query_categories.get(query, {}).items())

    def _suggest_score(self, c: tuple[str, float, int, int], user: UserState, cat_share: dict[int, float]) -> float:
        """log P(query | prefix) + log P(query's categories | user) / P(query's categories | shop):
        the popular completion, re-weighted by how much more than the average shopper this user
        is into what the query finds (their mix smoothed towards the shop's by
        SUGGEST_PRIOR_STEPS steps), plus a boost for a query they typed before."""
        score = math.log(c[1] + 1e-9) + SUGGEST_RECENT * (c[0] in user.queries)
        shop = self._affinity(c[0], self.shop_categories)
        if shop <= 0:
            return score
        steps = float(len(user.items))
        mine = (steps * self._affinity(c[0], cat_share) + SUGGEST_PRIOR_STEPS * shop) / (steps + SUGGEST_PRIOR_STEPS)
        return score + math.log(mine / shop)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, best first (ties by position)."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
    return part[np.lexsort((part, -scores[part]))]


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among ``scores`` (1 = best, ties share the best rank; NaN last), as
    a share of their number."""
    m = len(scores)
    if m == 0:
        return np.zeros(0)
    s = np.where(np.isnan(scores), -np.inf, scores)
    ordered = np.sort(s)[::-1]
    return (np.searchsorted(-ordered, -s, side="left") + 1) / m
