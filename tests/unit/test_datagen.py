"""Tests for the synthetic shop generator (recsys.datagen): the raw-log contract, the
injected malformed lines, and the behavioural structure that models are meant to learn."""

from __future__ import annotations

import collections
import datetime as dt
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from recsys import datagen
from recsys.datagen import EVENT_TYPES, MALFORMED_KINDS, QUERY_SYNONYMS, generate_shop

FUNNEL = ("view", "click", "add_to_cart", "purchase")
EVENT_KEYS = {"event_id", "ts", "user_id", "session_id", "event_type", "item_id", "query", "price", "quantity"}
ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# A medium shop: big enough for statistical checks, small enough to stay well under a second.
MEDIUM = dict(users=400, items=600, days=20, seed=11)


# --- helpers -----------------------------------------------------------------------------


def parse_ts(value: Any) -> dt.datetime | None:
    """The two timestamp forms of the contract: ISO-8601 UTC text or epoch milliseconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.timezone.utc)
    if isinstance(value, str) and ISO_TS.match(value):
        try:
            return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            return None
    return None


def classify(line: str, first_seen: dict[str, str]) -> tuple[str | None, dict[str, Any] | None]:
    """(malformed kind or None, parsed record). ``first_seen`` maps good event ids to their line."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "broken_json", None
    if not rec.get("event_id"):
        return "missing_event_id", rec
    if rec.get("user_id") is None:
        return "missing_user_id", rec
    if rec.get("event_type") not in EVENT_TYPES:
        return "unknown_event_type", rec
    if rec.get("price") is not None and rec["price"] < 0:
        return "negative_price", rec
    if parse_ts(rec.get("ts")) is None:
        return "bad_timestamp", rec
    if rec["event_id"] in first_seen:
        assert line == first_seen[rec["event_id"]], "a duplicate must be an exact copy"
        return "duplicate_event_id", rec
    first_seen[rec["event_id"]] = line
    return None, rec


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def event_files(landing: Path) -> list[Path]:
    return sorted((landing / "events").glob("events-*.jsonl"))


def scan(landing: Path) -> tuple[list[tuple[Path, dict[str, Any]]], collections.Counter]:
    """Good events (with their file) in file and line order, and malformed lines by kind."""
    good: list[tuple[Path, dict[str, Any]]] = []
    bad: collections.Counter = collections.Counter()
    first_seen: dict[str, str] = {}
    for path in event_files(landing):
        for line in path.read_text(encoding="utf-8").splitlines():
            kind, rec = classify(line, first_seen)
            if kind is None:
                good.append((path, rec))
            else:
                bad[kind] += 1
    return good, bad


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One medium shop shared by the read-only tests below."""
    landing = tmp_path_factory.mktemp("shop")
    summary = generate_shop(landing, **MEDIUM)
    good, bad = scan(landing)
    catalog = {r["item_id"]: r for r in read_jsonl(landing / "catalog" / "catalog.jsonl")}
    return {"landing": landing, "summary": summary, "good": good, "bad": bad, "catalog": catalog}


def by_user(good: list[tuple[Path, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for _, rec in good:
        out[rec["user_id"]].append(rec)
    return out


# --- determinism and layout --------------------------------------------------------------


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path) -> None:
    args = dict(users=120, items=150, days=6)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert generate_shop(a, seed=3, **args) == generate_shop(b, seed=3, **args)
    generate_shop(c, seed=4, **args)
    assert tree_bytes(a) == tree_bytes(b)
    assert tree_bytes(a) != tree_bytes(c)


def test_layout_and_overwrite(tmp_path: Path) -> None:
    generate_shop(tmp_path, users=50, items=80, days=5, seed=1)
    (tmp_path / "events" / "stale.jsonl").write_text("{}\n")
    (tmp_path / "keep.txt").write_text("not ours")
    summary = generate_shop(tmp_path, users=40, items=60, days=3, seed=1, start=dt.date(2026, 12, 30))
    names = [p.name for p in event_files(tmp_path)]
    assert names == ["events-2026-12-30.jsonl", "events-2026-12-31.jsonl", "events-2027-01-01.jsonl"]
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == names  # stale file gone
    assert (tmp_path / "keep.txt").exists()  # only the three owned folders are replaced
    assert (tmp_path / "catalog" / "catalog.jsonl").is_file()
    assert (tmp_path / "users" / "users.jsonl").is_file()
    assert summary["files"] == 3 and summary["users"] == 40 and summary["items"] == 60
    lines = sum(len(p.read_text().splitlines()) for p in event_files(tmp_path))
    assert summary["events_written"] == lines


def test_catalog_and_users_follow_the_contract(shop: dict[str, Any]) -> None:
    landing, catalog = shop["landing"], shop["catalog"]
    assert len(catalog) == MEDIUM["items"]
    for item_id, r in catalog.items():
        assert set(r) == {"item_id", "title", "description", "category", "brand", "price", "in_stock"}
        assert re.fullmatch(r"i\d{5}", item_id)
        assert r["title"] and r["description"] and r["brand"]
        assert len(r["category"].split(">")) == 3
        assert isinstance(r["price"], float) and r["price"] > 0 and round(r["price"], 2) == r["price"]
        assert isinstance(r["in_stock"], bool)
    assert len({r["category"].split(">")[0] for r in catalog.values()}) >= 8
    users = read_jsonl(landing / "users" / "users.jsonl")
    assert len(users) == MEDIUM["users"]
    assert len({u["user_id"] for u in users}) == len(users)
    for u in users:
        assert set(u) == {"user_id", "age", "gender", "location"}
        assert re.fullmatch(r"u\d{5}", u["user_id"])
        assert isinstance(u["age"], int) and 18 <= u["age"] <= 100
        assert u["gender"] in {"f", "m", "x"} and u["location"]


def test_every_good_event_follows_the_contract(shop: dict[str, Any]) -> None:
    catalog, good = shop["catalog"], shop["good"]
    user_ids = {u["user_id"] for u in read_jsonl(shop["landing"] / "users" / "users.jsonl")}
    assert len(good) == shop["summary"]["good_events"]
    last_ts: dict[Path, dt.datetime] = {}
    epoch = 0
    for path, r in good:
        assert set(r) == EVENT_KEYS
        assert isinstance(r["event_id"], str) and r["event_id"]
        assert r["user_id"] in user_ids
        assert isinstance(r["session_id"], str) and r["session_id"]
        ts = parse_ts(r["ts"])
        assert ts.date().isoformat() == path.stem.removeprefix("events-"), "event in the wrong day file"
        assert ts >= last_ts.get(path, ts), "lines must be sorted by time within a file"
        last_ts[path] = ts
        epoch += isinstance(r["ts"], int)
        if r["event_type"] == "search":
            assert r["item_id"] is None and r["price"] is None and r["quantity"] is None
            assert isinstance(r["query"], str) and 1 <= len(r["query"].split()) <= 6
        else:
            assert r["item_id"] in catalog and r["query"] is None
            assert r["price"] == catalog[r["item_id"]]["price"] >= 0
            if r["event_type"] in ("add_to_cart", "purchase"):
                assert isinstance(r["quantity"], int) and r["quantity"] >= 1
            else:
                assert r["quantity"] is None
    assert 0.05 < epoch / len(good) < 0.15  # about 10% epoch-millisecond timestamps
    assert set(shop["summary"]) >= {"events_written", "malformed_lines", "items", "users", "files"}


# --- malformed lines ---------------------------------------------------------------------


def test_malformed_counts_match_the_files(shop: dict[str, Any]) -> None:
    summary, bad = shop["summary"], shop["bad"]
    assert summary["malformed_lines"] == sum(bad.values()) > 0
    for kind in MALFORMED_KINDS:
        assert summary[f"malformed.{kind}"] == bad[kind] > 0, kind
    assert summary["events_written"] == summary["good_events"] + summary["malformed_lines"]
    share = summary["malformed_lines"] / summary["events_written"]
    assert share == pytest.approx(0.01, abs=0.002)


def test_malformed_lines_are_spread_over_files(tmp_path: Path) -> None:
    generate_shop(tmp_path, users=150, items=120, days=6, seed=5, malformed_rate=0.05)
    files_with_bad = 0
    first_seen: dict[str, str] = {}
    for path in event_files(tmp_path):
        kinds = [classify(line, first_seen)[0] for line in path.read_text().splitlines()]
        files_with_bad += any(k is not None for k in kinds)
    assert files_with_bad >= 5


def test_no_malformed_lines_at_rate_zero(tmp_path: Path) -> None:
    summary = generate_shop(tmp_path, users=100, items=100, days=4, seed=2, malformed_rate=0.0)
    good, bad = scan(tmp_path)
    assert sum(bad.values()) == 0 and summary["malformed_lines"] == 0
    assert all(summary[f"malformed.{kind}"] == 0 for kind in MALFORMED_KINDS)
    assert len(good) == summary["events_written"] == summary["good_events"]


def test_malformed_rate_does_not_change_good_events(tmp_path: Path) -> None:
    args = dict(users=80, items=90, days=4, seed=9)
    generate_shop(tmp_path / "clean", malformed_rate=0.0, **args)
    generate_shop(tmp_path / "dirty", malformed_rate=0.03, **args)
    clean = [r for _, r in scan(tmp_path / "clean")[0]]
    dirty = [r for _, r in scan(tmp_path / "dirty")[0]]
    assert clean == dirty


# --- behaviour ---------------------------------------------------------------------------


def test_funnel_order_within_session_and_item(shop: dict[str, Any]) -> None:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for _, r in shop["good"]:
        if r["item_id"] is not None:
            groups[(r["user_id"], r["session_id"], r["item_id"])].append(r)
    assert groups
    for key, events in groups.items():
        types = tuple(r["event_type"] for r in events)
        # A prefix of the funnel: purchase => add_to_cart => click => view, in that order.
        assert types == FUNNEL[: len(types)], (key, types)
        stamps = [parse_ts(r["ts"]) for r in events]
        assert stamps == sorted(stamps)
        if types[-1] == "purchase":
            assert events[-1]["quantity"] == events[-2]["quantity"]
    counts = collections.Counter(r["event_type"] for _, r in shop["good"])
    assert 0.35 < counts["click"] / counts["view"] < 0.65
    assert 0.15 < counts["add_to_cart"] / counts["click"] < 0.35
    assert 0.35 < counts["purchase"] / counts["add_to_cart"] < 0.65


def test_sessions_are_short_and_mostly_one_subcategory(shop: dict[str, Any]) -> None:
    catalog = shop["catalog"]
    sessions: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for _, r in shop["good"]:
        sessions[r["session_id"]].append(r)
    same = pairs = 0
    for events in sessions.values():
        assert len({r["user_id"] for r in events}) == 1
        span = parse_ts(events[-1]["ts"]) - parse_ts(events[0]["ts"])
        assert span < dt.timedelta(hours=2)
        views = [catalog[r["item_id"]]["category"] for r in events if r["event_type"] == "view"]
        same += sum(a == b for a, b in zip(views, views[1:]))
        pairs += max(0, len(views) - 1)
    assert same / pairs > 0.8


def test_items_per_user_and_rare_repeats(shop: dict[str, Any]) -> None:
    distinct, repeats, views = [], 0, 0
    for events in by_user(shop["good"]).values():
        first_session: dict[str, str] = {}
        for r in events:
            if r["event_type"] != "view":
                continue
            views += 1
            repeats += first_session.setdefault(r["item_id"], r["session_id"]) != r["session_id"]
        distinct.append(len(first_session))
    assert len(distinct) == MEDIUM["users"]
    assert min(distinct) >= 3
    distinct.sort()
    assert distinct[len(distinct) // 2] >= 6
    assert repeats / views < 0.05


def test_long_tail_popularity(shop: dict[str, Any]) -> None:
    views = collections.Counter(r["item_id"] for _, r in shop["good"] if r["event_type"] == "view")
    counts = sorted((views.get(i, 0) for i in shop["catalog"]), reverse=True)
    n, total = len(counts), sum(counts)
    top_decile, bottom_half = sum(counts[: n // 10]) / total, sum(counts[n // 2 :]) / total
    assert top_decile > bottom_half
    assert sum(counts[:10]) / total < 0.25  # a long tail, not a handful of blockbusters


def test_users_keep_their_favourite_category(shop: dict[str, Any]) -> None:
    """Learnability proxy: the top category a user browses most in the first half of their
    history is usually the same in the second half (chance is about 1 in 10)."""
    catalog = shop["catalog"]
    n_tops = len({r["category"].split(">")[0] for r in catalog.values()})
    assert n_tops >= 8
    matches = eligible = 0
    for events in by_user(shop["good"]).values():
        if len(events) < 10:
            continue
        tops = [catalog[r["item_id"]]["category"].split(">")[0] for r in events if r["item_id"]]
        half = len(tops) // 2
        first = collections.Counter(tops[:half]).most_common(1)[0][0]
        second = collections.Counter(tops[half:]).most_common(1)[0][0]
        eligible += 1
        matches += first == second
    assert eligible >= 100
    assert matches / eligible > 0.5


def test_purchases_lead_to_complementary_browsing(shop: dict[str, Any]) -> None:
    """Sequential signal beyond popularity: the session after a purchase browses a leaf
    category that follows the purchased one far more often than the global leaf share."""
    catalog = shop["catalog"]
    leaf = lambda item_id: catalog[item_id]["category"]  # noqa: E731
    transitions: collections.Counter = collections.Counter()
    leaf_views = collections.Counter(leaf(r["item_id"]) for _, r in shop["good"] if r["event_type"] == "view")
    for events in by_user(shop["good"]).values():
        sessions: list[list[dict[str, Any]]] = []
        for r in events:
            if not sessions or sessions[-1][0]["session_id"] != r["session_id"]:
                sessions.append([])
            sessions[-1].append(r)
        for before, after in zip(sessions, sessions[1:]):
            bought = [leaf(r["item_id"]) for r in before if r["event_type"] == "purchase"]
            viewed = [leaf(r["item_id"]) for r in after if r["event_type"] == "view"]
            if bought and viewed:
                transitions[(bought[-1], viewed[0])] += 1
    total = sum(transitions.values())
    assert total >= 50
    (src, dst), top_count = transitions.most_common(1)[0]
    from_src = sum(c for (a, _), c in transitions.items() if a == src)
    assert top_count / from_src > 3 * leaf_views[dst] / sum(leaf_views.values())


# --- searches ----------------------------------------------------------------------------


def normalise(query: str) -> str:
    """Lower case, punctuation other than in-word hyphens and apostrophes dropped, single spaces."""
    return " ".join(re.sub(r"[^\w\s'-]|(?<!\w)['-]|['-](?!\w)", " ", query.lower()).split())


def one_edit(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one dropped, doubled, swapped or substituted letter."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [k for k in range(len(a)) if a[k] != b[k]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:k] + long_[k + 1:] == short for k in range(len(long_)))


def searches(shop: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(raw query, catalogue row of the first item viewed after it in its session) per search."""
    sessions: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for _, r in shop["good"]:
        sessions[r["session_id"]].append(r)
    out = []
    for events in sessions.values():
        for k, r in enumerate(events):
            if r["event_type"] == "search":
                view = next(e for e in events[k + 1:] if e["event_type"] == "view")
                out.append((r["query"], shop["catalog"][view["item_id"]]))
    return out


def vocabulary(item: dict[str, Any]) -> tuple[set[str], set[str], tuple[str, ...]]:
    """An item's own words (title and category), its leaf's synonym words, and the synonyms."""
    own = set(normalise(item["title"] + " " + item["category"].replace(">", " ")).split())
    synonyms = QUERY_SYNONYMS.get(item["category"].split(">")[-1], ())
    return own, {w for phrase in synonyms for w in phrase.split()}, synonyms


def has_phrase(query: str, phrase: str) -> bool:
    return f" {phrase} " in f" {query} "


def test_queries_describe_the_first_viewed_item(shop: dict[str, Any]) -> None:
    """Every query word is one of the item's title or category words, a synonym word of its
    leaf, or one typo away from one of those; most queries share a word with the item itself."""
    pairs = searches(shop)
    assert len(pairs) > 300
    sharing = 0
    for raw, item in pairs:
        query = normalise(raw)
        own, synonym_words, _ = vocabulary(item)
        known = own | synonym_words
        assert query, raw
        for word in query.split():
            assert word in known or any(one_edit(k, word) for k in known), (raw, item["title"])
        sharing += bool(set(query.split()) & own)
    assert sharing / len(pairs) > 0.85


def test_query_synonyms_typos_and_noise_rates(shop: dict[str, Any]) -> None:
    """About 15% of queries use a synonym (or the other number) of the noun, about 7% carry a
    typo and about 5% need normalising (case, spaces, punctuation)."""
    pairs = searches(shop)
    n = len(pairs)
    synonym = typo = noisy = 0
    for raw, item in pairs:
        query = normalise(raw)
        own, synonym_words, synonyms = vocabulary(item)
        synonym += any(has_phrase(query, phrase) for phrase in synonyms)
        typo += any(w not in own | synonym_words for w in query.split())
        noisy += raw != query
    assert 0.08 < synonym / n < 0.22  # 0.11 measured (0.15 drawn, some hidden by typos)
    assert 0.04 < typo / n < 0.10  # 0.07 measured
    assert 0.02 < noisy / n < 0.09  # 0.056 measured


def test_query_popularity_is_long_tailed(shop: dict[str, Any]) -> None:
    """A few queries (bare nouns) are very frequent, most distinct queries are rare."""
    pairs = searches(shop)
    counts = collections.Counter(normalise(raw) for raw, _ in pairs)
    top = counts.most_common(10)
    leaf_nouns = {r["category"].split(">")[-1].lower() for r in shop["catalog"].values()}
    assert sum(c for _, c in top) / len(pairs) > 0.15  # 0.205 measured, of 674 searches
    assert top[0][0] in leaf_nouns and sum(q in leaf_nouns for q, _ in top) >= 8
    assert sum(c <= 2 for c in counts.values()) / len(counts) > 0.6  # 0.86 measured
    assert len(counts) > len(pairs) / 4
    words = collections.Counter(min(len(q.split()), 4) for q in counts.elements())
    assert words[1] + words[2] > 0.6 * len(pairs) and words[4] < 0.1 * len(pairs)


def test_same_seed_same_queries(tmp_path: Path) -> None:
    args = dict(users=150, items=150, days=8, seed=13)
    queries = []
    for name in ("a", "b"):
        generate_shop(tmp_path / name, **args)
        queries.append([r["query"] for _, r in scan(tmp_path / name)[0] if r["event_type"] == "search"])
    assert queries[0] == queries[1] and len(queries[0]) > 20


def test_query_wording_leaves_other_events_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wording is drawn from its own stream: other query knobs, same sessions and events."""
    args = dict(users=150, items=150, days=8, seed=13)
    generate_shop(tmp_path / "plain", **args)
    monkeypatch.setattr(datagen, "QUERY_FORM_PROBS", (0.0, 0.0, 0.0, 1.0))
    monkeypatch.setattr(datagen, "QUERY_SYNONYM_PROB", 1.0)
    monkeypatch.setattr(datagen, "QUERY_TYPO_PROB", 1.0)
    monkeypatch.setattr(datagen, "QUERY_NOISE_PROB", 1.0)
    generate_shop(tmp_path / "wordy", **args)
    plain, wordy = scan(tmp_path / "plain")[0], scan(tmp_path / "wordy")[0]
    strip = lambda good: [dict(r, query=None) for _, r in good]  # noqa: E731
    assert strip(plain) == strip(wordy)
    q_plain = [r["query"] for _, r in plain if r["event_type"] == "search"]
    q_wordy = [r["query"] for _, r in wordy if r["event_type"] == "search"]
    assert len(q_plain) == len(q_wordy) > 20
    assert sum(a != b for a, b in zip(q_plain, q_wordy)) > 0.9 * len(q_plain)


def test_typos_are_one_edit_and_noise_normalises_away() -> None:
    rnd = random.Random(5)
    for word in ("serum", "moisturiser", "t-shirt", "headphones", "collector's"):
        for _ in range(50):
            typo = datagen._with_typo(word, rnd)
            assert one_edit(word, typo), (word, typo)
    assert datagen._with_typo("tee mug", rnd) == "tee mug"  # no word of 4+ letters
    for _ in range(50):
        noisy = datagen._with_noise("vitamin c serum", rnd)
        assert noisy != "vitamin c serum" and normalise(noisy) == "vitamin c serum"
