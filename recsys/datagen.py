"""Synthetic e-commerce shop: a catalogue, users and raw event logs for the landing folder.

``generate_shop`` writes what a web shop's tracking would drop into the landing zone::

    landing/catalog/catalog.jsonl           one item per line
    landing/users/users.jsonl               one user per line
    landing/events/events-YYYY-MM-DD.jsonl  one file per day, lines sorted by time

The data is random but *learnable*, so that models trained on it can beat a popularity
baseline and their metrics mean something:

* a three-level taxonomy (``Beauty>Skin>Serum``) with brands tied to a few top categories and
  prices drawn around a per-leaf, per-brand level;
* long-tailed (Zipf-like) item popularity within each leaf;
* users with 1-3 preferred top categories, favourite brands and a price level, whose
  interests drift slowly;
* sessions that stay within one leaf, and "complementary next" leaves: after buying a serum
  the next session likely browses moisturisers;
* a view → click → add_to_cart → purchase funnel per item, seconds apart, and rare repeats of
  items from earlier sessions (evaluation masks history items, so repeats are unreachable);
* searches at the start of some sessions, describing the item the user then views (chosen by
  their tastes, so which of the many matching items a searcher engages with is learnable):
  mostly the bare product noun ("serum"), often with one of the item's adjectives or
  attributes ("vitamin c serum"), sometimes its brand, rarely three parts, so a few queries are
  very frequent and most are rare; with everyday synonyms ("trainers"), typos ("seurm") and
  the odd capitalisation, spacing or punctuation ("  Vitamin C Serum!") to normalise.

A share ``malformed_rate`` of the event lines is deliberately broken in one of
:data:`MALFORMED_KINDS` ways so that ingest validation has something to quarantine. Broken
lines are *extra* lines next to good ones: removing them leaves a clean, consistent log.

Everything is drawn from ``seed`` (numpy for bulk draws, :class:`random.Random` for the
scalar-heavy session loop because it is much faster per draw), so a seed gives the same files
byte for byte. Independent random streams are used for the catalogue, users, sessions,
search wording and malformed lines, so e.g. changing ``malformed_rate`` does not change the
good events, nor the query knobs any event but the searches' text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import shutil
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recsys.events import EVENT_TYPES  # noqa: F401 (re-exported: the generator writes these)

ITEM_EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
MALFORMED_KINDS: tuple[str, ...] = (
    "broken_json",
    "missing_event_id",
    "missing_user_id",
    "unknown_event_type",
    "negative_price",
    "bad_timestamp",
    "duplicate_event_id",
)

# --- taxonomy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A leaf category (``top>mid>name``) with the words its item titles are built from."""

    top: str
    mid: str
    name: str  # also the noun at the end of titles ("Serum")
    base_price: float  # typical price of a mid-range item
    adjectives: tuple[str, ...]
    attributes: tuple[str, ...]
    variants: tuple[str, ...]  # sizes or colours, the last word of a title
    complements: tuple[str, ...]  # leaf names a user likely browses after buying here

    @property
    def path(self) -> str:
        return f"{self.top}>{self.mid}>{self.name}"


_COLOURS = ("Black", "White", "Silver", "Blue", "Green", "Red")


def _leaf(top: str, mid: str, name: str, price: float, adjectives: str, attributes: str,
          variants: Sequence[str] | str, complements: str) -> Leaf:
    """Compact constructor: word lists are comma-separated strings to keep the table short."""
    split = lambda s: tuple(w.strip() for w in s.split(",") if w.strip())  # noqa: E731
    return Leaf(top, mid, name, price, split(adjectives), split(attributes),
                split(variants) if isinstance(variants, str) else tuple(variants), split(complements))


# Complements mostly stay within the top category (a sequence signal that does not wash out
# users' category preferences) with a few realistic cross-category ones (coffee maker → beans).
TAXONOMY: tuple[Leaf, ...] = (
    _leaf("Beauty", "Skin", "Serum", 28, "Hydrating, Brightening, Firming, Soothing, Renewing",
          "Vitamin C, Hyaluronic Acid, Retinol, Niacinamide, Peptide", "15ml, 30ml, 50ml", "Moisturiser"),
    _leaf("Beauty", "Skin", "Moisturiser", 24, "Nourishing, Lightweight, Rich, Calming, Daily",
          "Ceramide, Shea Butter, SPF 30, Aloe, Squalane", "50ml, 75ml, 100ml", "Serum"),
    _leaf("Beauty", "Hair", "Shampoo", 12, "Volumising, Repairing, Clarifying, Gentle, Smoothing",
          "Argan Oil, Keratin, Tea Tree, Coconut, Biotin", "250ml, 400ml, 500ml", "Conditioner"),
    _leaf("Beauty", "Hair", "Conditioner", 13, "Detangling, Repairing, Silky, Gentle, Moisturising",
          "Argan Oil, Keratin, Avocado, Coconut, Silk Protein", "200ml, 350ml, 500ml", "Shampoo"),
    _leaf("Electronics", "Audio", "Headphones", 120, "Wireless, Noise-Cancelling, Over-Ear, Studio, Compact",
          "Bluetooth, Hi-Res, 40h Battery, Foldable, Low-Latency", _COLOURS, "Charger, Speaker"),
    _leaf("Electronics", "Audio", "Speaker", 80, "Portable, Waterproof, Smart, Rugged, Mini",
          "Bluetooth, Wi-Fi, 360 Sound, Deep Bass, Stereo", _COLOURS, "Headphones"),
    _leaf("Electronics", "Phones", "Smartphone", 450, "Flagship, Slim, Lite, Ultra, Compact",
          "128GB, 256GB, Dual SIM, OLED, 50MP Camera", _COLOURS, "Phone Case, Charger"),
    _leaf("Electronics", "Phones", "Phone Case", 18, "Slim, Rugged, Clear, Leather, Magnetic",
          "Shockproof, Kickstand, Card Slot, Matte, Recycled", _COLOURS, "Charger"),
    _leaf("Electronics", "Accessories", "Charger", 25, "Fast, Compact, Travel, Dual-Port, Wireless",
          "USB-C, 65W, GaN, Qi, Braided Cable", ("Black", "White"), "Phone Case"),
    _leaf("Home", "Kitchen", "Coffee Maker", 90, "Programmable, Compact, Classic, Smart, Barista",
          "Drip, Espresso, Pour-Over, Thermal Carafe, Grinder", ("Black", "Silver", "White"),
          "Coffee Beans, Mug"),
    _leaf("Home", "Kitchen", "Mug", 12, "Ceramic, Insulated, Handmade, Classic, Oversized",
          "Stoneware, Double-Wall, Matte Glaze, Enamel, Porcelain", "300ml, 350ml, 450ml", "Coffee Maker"),
    _leaf("Home", "Bedding", "Duvet", 70, "Lightweight, All-Season, Cosy, Hypoallergenic, Luxury",
          "Down, Microfibre, Organic Cotton, Wool, Bamboo", "Single, Double, King", "Pillow"),
    _leaf("Home", "Bedding", "Pillow", 30, "Soft, Firm, Cooling, Orthopaedic, Plush",
          "Memory Foam, Feather, Latex, Bamboo, Microfibre", "Standard, King", "Duvet"),
    _leaf("Fashion", "Shoes", "Sneakers", 85, "Classic, Retro, Lightweight, Chunky, Everyday",
          "Leather, Canvas, Knit, Suede, Recycled", "EU 38, EU 40, EU 42, EU 44", "Socks, T-Shirt"),
    _leaf("Fashion", "Clothing", "Socks", 10, "Cushioned, Ankle, Crew, Thermal, Everyday",
          "Cotton, Merino, Bamboo, Organic Cotton, Wool", "3-Pack, 5-Pack", "Sneakers"),
    _leaf("Fashion", "Clothing", "T-Shirt", 20, "Relaxed, Slim, Oversized, Classic, Boxy",
          "Organic Cotton, Linen, Jersey, Pima Cotton, Heavyweight", "S, M, L, XL", "Backpack, Sneakers"),
    _leaf("Fashion", "Bags", "Backpack", 55, "Urban, Travel, Rolltop, Compact, Commuter",
          "Water-Resistant, Laptop Sleeve, Recycled, Canvas, Leather", _COLOURS, "T-Shirt"),
    _leaf("Sports", "Fitness", "Yoga Mat", 35, "Non-Slip, Extra-Thick, Travel, Eco, Cushioned",
          "Cork, TPE, Natural Rubber, Alignment Lines, Jute", "4mm, 6mm, 8mm", "Resistance Bands"),
    _leaf("Sports", "Fitness", "Resistance Bands", 20, "Heavy, Light, Adjustable, Premium, Travel",
          "Latex, Fabric, Door Anchor, Handles, 5-Level", "Set of 3, Set of 5", "Yoga Mat"),
    _leaf("Sports", "Outdoor", "Tent", 160, "Lightweight, Pop-Up, Family, Ultralight, Storm",
          "2-Person, 4-Person, Waterproof, Freestanding, Aluminium Poles", ("Green", "Orange", "Grey"),
          "Sleeping Bag"),
    _leaf("Sports", "Outdoor", "Sleeping Bag", 75, "Mummy, Compact, Warm, Ultralight, Summer",
          "Down, Synthetic, 3-Season, Zip-Together, Compression Sack", ("Green", "Blue", "Grey"), "Tent"),
    _leaf("Books", "Fiction", "Novel", 14, "Bestselling, Acclaimed, Epic, Gripping, Heartwarming",
          "Hardcover, Paperback, Illustrated, Collector's, Annotated", "Edition, Volume 1, Volume 2",
          "Novel, Thriller"),
    _leaf("Books", "Fiction", "Thriller", 13, "Gripping, Dark, Twisty, Bestselling, Chilling",
          "Hardcover, Paperback, Large Print, Signed, Special", "Edition, Volume 1, Volume 2", "Novel"),
    _leaf("Books", "Non-Fiction", "Cookbook", 25, "Seasonal, Quick, Family, Vegan, Italian",
          "Hardcover, Illustrated, Spiral-Bound, Paperback, Photographic", "Edition, Volume 1",
          "Olive Oil, Novel"),
    _leaf("Toys", "Building", "Building Set", 45, "Creative, Classic, Deluxe, Starter, Themed",
          "Castle, Spaceship, City, Robot, Dinosaur", "250 Pieces, 500 Pieces, 1000 Pieces", "Board Game"),
    _leaf("Toys", "Games", "Board Game", 30, "Family, Strategy, Cooperative, Party, Classic",
          "Fantasy, Trading, Adventure, Word, Detective", "2-4 Players, 2-6 Players", "Puzzle"),
    _leaf("Toys", "Games", "Puzzle", 18, "Jigsaw, Scenic, Classic, Challenging, Family",
          "Landscape, Animal, Map, Art, Space", "500 Pieces, 1000 Pieces", "Board Game"),
    _leaf("Grocery", "Coffee", "Coffee Beans", 14, "Single-Origin, Dark, Medium, Decaf, Organic",
          "Arabica, Espresso Roast, Ethiopian, Colombian, Fairtrade", "250g, 500g, 1kg", "Granola"),
    _leaf("Grocery", "Snacks", "Granola", 6, "Crunchy, Honey, Low-Sugar, Nutty, Organic",
          "Almond, Oat, Chocolate, Berry, Coconut", "400g, 750g", "Coffee Beans"),
    _leaf("Grocery", "Pantry", "Olive Oil", 11, "Extra Virgin, Cold-Pressed, Organic, Fruity, Mild",
          "Greek, Italian, Spanish, Single-Estate, Unfiltered", "500ml, 750ml, 1L", "Granola"),
    _leaf("Pets", "Dogs", "Dog Food", 40, "Grain-Free, Adult, Puppy, Senior, Sensitive",
          "Chicken, Salmon, Lamb, Duck, Turkey", "2kg, 6kg, 12kg", "Dog Toy"),
    _leaf("Pets", "Dogs", "Dog Toy", 10, "Squeaky, Durable, Chew, Interactive, Plush",
          "Rope, Rubber, Ball, Treat-Dispensing, Tug", "Small, Medium, Large", "Dog Food"),
    _leaf("Pets", "Cats", "Cat Food", 22, "Grain-Free, Adult, Kitten, Indoor, Sensitive",
          "Tuna, Chicken, Salmon, Rabbit, Turkey", "1kg, 2kg, 4kg", "Cat Litter"),
    _leaf("Pets", "Cats", "Cat Litter", 18, "Clumping, Unscented, Odour-Control, Lightweight, Natural",
          "Clay, Pine, Silica, Tofu, Recycled Paper", "5L, 10L, 20L", "Cat Food"),
    _leaf("Garden", "Tools", "Pruner", 25, "Bypass, Anvil, Ratchet, Ergonomic, Heavy-Duty",
          "Steel Blade, Carbon Steel, Soft Grip, Titanium, Safety Lock", ("Red", "Green", "Black"),
          "Garden Gloves"),
    _leaf("Garden", "Tools", "Garden Gloves", 12, "Thorn-Proof, Breathable, Waterproof, Padded, Everyday",
          "Leather, Nitrile, Bamboo, Cotton, Touchscreen", "S, M, L", "Pruner"),
    _leaf("Garden", "Plants", "Seeds", 4, "Heirloom, Organic, Easy-Grow, Perennial, Wildflower",
          "Tomato, Basil, Sunflower, Lavender, Chilli", "Pack of 50, Pack of 100", "Planter"),
    _leaf("Garden", "Plants", "Planter", 28, "Self-Watering, Hanging, Tall, Rustic, Modern",
          "Terracotta, Ceramic, Wooden, Recycled Plastic, Concrete", "Small, Medium, Large", "Seeds"),
)

# Everyday alternatives a shopper types for a leaf's noun (``Leaf.name``): synonyms and the
# other grammatical number. Many share no word with the item's title, so matching them takes
# more than word overlap.
QUERY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Serum": ("face serum", "serums"),
    "Moisturiser": ("moisturizer", "face cream", "moisturisers"),
    "Shampoo": ("hair wash", "shampoos"),
    "Conditioner": ("hair conditioner", "conditioners"),
    "Headphones": ("earphones", "headset", "headphone"),
    "Speaker": ("loudspeaker", "speakers"),
    "Smartphone": ("mobile phone", "cell phone", "smartphones"),
    "Phone Case": ("phone cover", "phone cases"),
    "Charger": ("power adapter", "chargers"),
    "Coffee Maker": ("coffee machine", "coffee makers"),
    "Mug": ("cup", "mugs"),
    "Duvet": ("comforter", "quilt", "duvets"),
    "Pillow": ("bed pillow", "pillows"),
    "Sneakers": ("trainers", "sneaker"),
    "Socks": ("sock",),
    "T-Shirt": ("tee", "tshirt", "t-shirts"),
    "Backpack": ("rucksack", "backpacks"),
    "Yoga Mat": ("exercise mat", "yoga mats"),
    "Resistance Bands": ("exercise bands", "resistance band"),
    "Tent": ("camping tent", "tents"),
    "Sleeping Bag": ("sleeping bags",),
    "Novel": ("fiction book", "novels"),
    "Thriller": ("crime novel", "thrillers"),
    "Cookbook": ("recipe book", "cookbooks"),
    "Building Set": ("building blocks", "building sets"),
    "Board Game": ("tabletop game", "board games"),
    "Puzzle": ("puzzles",),
    "Coffee Beans": ("whole bean coffee", "coffee bean"),
    "Granola": ("muesli",),
    "Olive Oil": ("cooking oil", "evoo"),
    "Dog Food": ("dog kibble",),
    "Dog Toy": ("chew toy", "dog toys"),
    "Cat Food": ("cat kibble",),
    "Cat Litter": ("kitty litter",),
    "Pruner": ("secateurs", "pruning shears", "pruners"),
    "Garden Gloves": ("gardening gloves", "work gloves"),
    "Seeds": ("plant seeds", "seed"),
    "Planter": ("plant pot", "flower pot", "planters"),
}

# QWERTY rows and their horizontal offsets, for "neighbouring key" typos.
_KEY_ROWS: tuple[tuple[str, float], ...] = (("qwertyuiop", 0.0), ("asdfghjkl", 0.25), ("zxcvbnm", 0.75))

BRAND_NAMES: tuple[str, ...] = (
    "Lumina", "Nordvik", "Aurelia", "Kestrel", "Solace", "Verdant", "Halcyon", "Brightwell",
    "Oakhurst", "Tidewater", "Emberly", "Quartzline", "Pinecrest", "Northstar", "Bluefin",
    "Copperleaf", "Silverline", "Wildroot", "Fernhill", "Stonebridge", "Sunmeadow", "Cobaltis",
    "Arcadia", "Meridel", "Willowby", "Harborne", "Summitra", "Pebblo", "Zephyra", "Orchidia",
    "Juniper", "Vantago", "Alderwood", "Bramblix", "Crestview", "Driftwood", "Evergrove",
    "Foxglove", "Glimmer", "Hollowell",
)

CITIES: tuple[str, ...] = (
    "London", "Manchester", "Birmingham", "Leeds", "Glasgow", "Edinburgh", "Bristol", "Liverpool",
    "Cardiff", "Belfast", "Dublin", "Paris", "Lyon", "Berlin", "Hamburg", "Munich", "Amsterdam",
    "Rotterdam", "Madrid", "Barcelona", "Lisbon", "Milan", "Rome", "Vienna", "Stockholm",
)

# Relative traffic by hour of day (UTC): quiet at night, peaks at lunch and in the evening.
HOUR_WEIGHTS: tuple[float, ...] = (
    1.0, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.2, 1.8, 2.0, 2.0, 2.2,
    2.6, 2.4, 2.1, 2.0, 2.2, 2.6, 3.2, 3.8, 4.0, 3.6, 2.6, 1.6,
)

# --- behaviour knobs (tuned so that the default size gives ~60k-150k events) -------------
ZIPF_EXPONENT = 1.5  # within-leaf popularity ~ 1 / rank**a
BRAND_PRICE_SIGMA = 0.35  # log-scale spread of brand price levels
ITEM_PRICE_SIGMA = 0.25  # log-scale spread of items around their brand/leaf level
PRICE_Z_SCALE = math.hypot(BRAND_PRICE_SIGMA, ITEM_PRICE_SIGMA)
USER_PRICE_LEVELS = (-0.9, 0.0, 0.9)  # budget / mid / premium, in units of PRICE_Z_SCALE
USER_PRICE_PROBS = (0.35, 0.45, 0.20)
PRICE_BIAS = 0.6  # how strongly users avoid items far from their price level
BRAND_BOOST = 3.0  # weight multiplier for a user's favourite brands
OUT_OF_STOCK_RATE = 0.06

SESSIONS_MEDIAN_PER_30_DAYS = 5.5  # light users dominate ...
SESSIONS_SIGMA = 0.8  # ... with a lognormal long tail of heavy users
MAX_SESSIONS_PER_30_DAYS = 40  # a cap: no one browses the whole catalogue
TOP_POPULARITY_SIGMA = 0.6  # log-spread of shop-wide traffic between top categories
LEAF_POPULARITY_SIGMA = 0.7  # ... and between leaves
ITEMS_PER_SESSION_EXTRA = 3.5  # items viewed per session = 1 + Poisson(this), capped
MAX_ITEMS_PER_SESSION = 10
FIRST_SESSION_MIN_ITEMS = 3  # a new visitor browses a bit, so every user has >= 3 items
SEARCH_PROB = 0.35  # sessions that start with a search
# A query's form: noun / modifier + noun / brand + noun / three parts. A modifier is one of the
# item's adjective, attribute or (word) variant, with these weights.
QUERY_FORM_PROBS = (0.50, 0.32, 0.11, 0.07)
QUERY_MODIFIER_WEIGHTS = (0.40, 0.45, 0.15)
QUERY_SYNONYM_PROB = 0.15  # the noun is replaced by one of its QUERY_SYNONYMS
QUERY_TYPO_PROB = 0.07  # one word of 4+ letters gets one typo
QUERY_NOISE_PROB = 0.05  # capitalisation, extra whitespace or trailing punctuation
P_CLICK, P_CLICK_FAV_BRAND, P_CLICK_PRICE_MATCH = 0.40, 0.12, 0.12
P_CART = 0.25  # of clicks
P_PURCHASE = 0.50  # of carts
P_COMPLEMENT_AFTER_PURCHASE = 0.60
P_COMPLEMENT_AFTER_CART = 0.30
P_CONTINUE_LEAF = 0.25  # next session resumes the previous leaf
P_EXPLORE = 0.05  # a session in a random leaf, outside the user's interests
APPEAL_POWER = 0.3  # how fast interest in a leaf fades as its best items get seen
P_REPEAT_VIEW = 0.02  # re-view an item from an earlier session (kept rare on purpose)
DRIFT_PROB = 0.06  # per session: a new interest appears ...
DRIFT_STEP = 0.20  # ... taking this share of the user's attention
MIN_SESSION_GAP_S = 20 * 60
SESSION_HEADROOM_S = 3 * 3600  # sessions start this long before the period ends: none spill over
EPOCH_MS_SHARE = 0.10  # share of events whose ts is epoch milliseconds instead of ISO-8601
BAD_EVENT_TYPES = ("hover", "scroll", "wishlist_add", "VIEW", "page_view")
BAD_TIMESTAMPS = ("not-a-time", "2026-13-45T99:61:00Z", "yesterday", "", "NaN", "31/12/2026 25:00")

DEMOGRAPHIC_TILT: dict[str, dict[str, float]] = {
    # Mild, so that user features carry some signal without dominating behaviour.
    "Beauty": {"f": 1.8, "m": 0.6},
    "Electronics": {"m": 1.4},
    "Fashion": {"f": 1.2, "young": 1.3},
    "Toys": {"parent": 1.7},
    "Garden": {"senior": 1.8, "young": 0.6},
    "Sports": {"young": 1.3},
}


# --- catalogue ---------------------------------------------------------------------------


@dataclass
class Catalog:
    """Items as parallel arrays (for fast weighted draws) plus the rows written to disk."""

    leaves: tuple[Leaf, ...]
    tops: list[str]
    leaf_top: np.ndarray  # leaf index -> top index
    leaf_items: list[list[int]]  # leaf index -> item indices
    item_ids: list[str]
    item_leaf: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_price_z: np.ndarray  # log price relative to its leaf, in units of PRICE_Z_SCALE
    item_pop: np.ndarray  # Zipf weight within the leaf
    item_in_stock: np.ndarray
    titles: list[str]
    brand_tops: list[tuple[int, ...]]  # brand index -> top indices it sells in
    rows: list[dict[str, Any]]
    title_parts: list[dict[str, str]] = field(default_factory=list)  # adj, attr, variant per item

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _allocate_items(n_items: int, n_leaves: int, rng: np.random.Generator) -> np.ndarray:
    """Items per leaf: one each while there are enough, the rest by uneven leaf sizes."""
    weights = rng.lognormal(0.0, 0.3, n_leaves)
    weights /= weights.sum()
    base = np.ones(n_leaves, dtype=int) if n_items >= n_leaves else np.zeros(n_leaves, dtype=int)
    return base + rng.multinomial(n_items - base.sum(), weights)


def _assign_brand_tops(n_tops: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Each brand sells in a primary top category (round robin, so each top has several
    brands) and about a third also in a secondary one."""
    order = rng.permutation(len(BRAND_NAMES))
    brand_tops: list[tuple[int, ...]] = [()] * len(BRAND_NAMES)
    for rank, b in enumerate(order):
        primary = rank % n_tops
        tops = (primary,)
        if rng.random() < 0.35:
            secondary = int(rng.integers(n_tops - 1))
            tops += (secondary + (secondary >= primary),)
        brand_tops[b] = tops
    return brand_tops


def _pick_brand(top: int, brand_tops: list[tuple[int, ...]], brand_size: np.ndarray,
                rng: np.random.Generator) -> int:
    """A brand for an item in ``top``: mostly a brand whose primary top it is."""
    if rng.random() < 0.03:  # the odd cross-over product keeps brand -> category imperfect
        return int(rng.integers(len(brand_tops)))
    w = np.array([(1.0 if t[0] == top else 0.35 if top in t else 0.0) for t in brand_tops]) * brand_size
    return int(rng.choice(len(w), p=w / w.sum()))


def _make_title(leaf: Leaf, brand: str, rng: np.random.Generator, taken: set[str]) -> tuple[str, dict[str, str]]:
    """"Lumina Hydrating Vitamin C Serum 30ml" and its parts; retried a few times to keep
    titles distinct."""
    title, parts = "", {}
    for _ in range(8):
        parts = {
            "adj": str(rng.choice(leaf.adjectives)),
            "attr": str(rng.choice(leaf.attributes)),
            "variant": str(rng.choice(leaf.variants)),
        }
        title = " ".join((brand, parts["adj"], parts["attr"], leaf.name, parts["variant"]))
        if title not in taken:
            break
    taken.add(title)
    return title, parts


_DESCRIPTION_OPENERS = (
    "{brand}'s {adj} {noun} made with {attr}.",
    "A {adj} {noun} from {brand}, featuring {attr}.",
    "Meet the {brand} {noun}: {adj} and made with {attr}.",
)
_DESCRIPTION_DETAILS = (
    "Available as {variant}.",
    "Part of our {mid} range in {top}.",
    "A customer favourite for everyday use.",
    "Designed to last, with attention to detail.",
    "Great value in the {mid} category.",
)


def _make_description(leaf: Leaf, brand: str, parts: dict[str, str], rng: np.random.Generator) -> str:
    """Two or three template sentences filled with the item's own title words."""
    fill = dict(brand=brand, adj=parts["adj"].lower(), attr=parts["attr"], noun=leaf.name.lower(),
                variant=parts["variant"], mid=leaf.mid.lower(), top=leaf.top)
    opener = _DESCRIPTION_OPENERS[int(rng.integers(len(_DESCRIPTION_OPENERS)))]
    details = rng.choice(len(_DESCRIPTION_DETAILS), size=int(rng.integers(1, 3)), replace=False)
    return " ".join([opener.format(**fill)] + [_DESCRIPTION_DETAILS[i].format(**fill) for i in details])


def build_catalog(n_items: int, rng: np.random.Generator) -> Catalog:
    """Draw ``n_items`` items over :data:`TAXONOMY` (see the module docstring)."""
    leaves = TAXONOMY
    tops = list(dict.fromkeys(leaf.top for leaf in leaves))
    leaf_top = np.array([tops.index(leaf.top) for leaf in leaves])
    brand_tops = _assign_brand_tops(len(tops), rng)
    brand_size = rng.lognormal(0.0, 0.5, len(BRAND_NAMES))  # some brands have bigger ranges
    brand_price = rng.lognormal(0.0, BRAND_PRICE_SIGMA, len(BRAND_NAMES))
    counts = _allocate_items(n_items, len(leaves), rng)

    item_leaf, item_pop = [], []
    for leaf_idx, count in enumerate(counts):
        ranks = rng.permutation(count)  # popularity rank is independent of brand or price
        item_leaf += [leaf_idx] * int(count)
        item_pop += list((ranks + 1.0) ** -ZIPF_EXPONENT)
    # Shuffle so that item ids carry no information about the category.
    order = rng.permutation(n_items)
    item_leaf_arr = np.array(item_leaf, dtype=int)[order]
    item_pop_arr = np.array(item_pop, dtype=float)[order]

    item_brand = np.empty(n_items, dtype=int)
    item_price = np.empty(n_items, dtype=float)
    in_stock = rng.random(n_items) >= OUT_OF_STOCK_RATE
    titles: list[str] = []
    title_parts: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    item_ids = [f"i{i:05d}" for i in range(n_items)]
    for i in range(n_items):
        leaf = leaves[item_leaf_arr[i]]
        b = _pick_brand(int(leaf_top[item_leaf_arr[i]]), brand_tops, brand_size, rng)
        price = round(max(0.5, leaf.base_price * brand_price[b] * rng.lognormal(0.0, ITEM_PRICE_SIGMA)), 2)
        title, parts = _make_title(leaf, BRAND_NAMES[b], rng, taken)
        item_brand[i], item_price[i] = b, price
        titles.append(title)
        title_parts.append(parts)
        rows.append({
            "item_id": item_ids[i],
            "title": title,
            "description": _make_description(leaf, BRAND_NAMES[b], parts, rng),
            "category": leaf.path,
            "brand": BRAND_NAMES[b],
            "price": price,
            "in_stock": bool(in_stock[i]),
        })
    base = np.array([leaves[l].base_price for l in item_leaf_arr])
    return Catalog(
        leaves=leaves,
        tops=tops,
        leaf_top=leaf_top,
        leaf_items=[np.flatnonzero(item_leaf_arr == l).tolist() for l in range(len(leaves))],
        item_ids=item_ids,
        item_leaf=item_leaf_arr,
        item_brand=item_brand,
        item_price=item_price,
        item_price_z=np.log(item_price / base) / PRICE_Z_SCALE,
        item_pop=item_pop_arr,
        item_in_stock=in_stock,
        titles=titles,
        brand_tops=brand_tops,
        rows=rows,
        title_parts=title_parts,
    )


# --- users -------------------------------------------------------------------------------


@dataclass
class UserProfile:
    """Hidden tastes that drive a user's sessions (only demographics are written to disk)."""

    user_id: str
    age: int
    gender: str
    location: str
    top_shares: list[float]  # attention per top category, sums to 1; drifts over time
    leaf_shares: list[float]  # preference per leaf, normalised within each top
    fav_brands: frozenset[int]
    price_level: float
    n_sessions: int
    seed: int  # seeds the user's own session stream, so users are independent of each other
    top_prior: np.ndarray = field(repr=False)  # where drifting interests come from

    def row(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "age": self.age, "gender": self.gender, "location": self.location}


def _demographic_prior(tops: list[str], base: np.ndarray, age: int, gender: str) -> np.ndarray:
    """Global top-category popularity tilted a little by gender and life stage."""
    tags = {gender, "young" if age < 30 else "senior" if age >= 55 else "", "parent" if 30 <= age < 46 else ""}
    w = base.copy()
    for t, top in enumerate(tops):
        for tag, factor in DEMOGRAPHIC_TILT.get(top, {}).items():
            if tag in tags:
                w[t] *= factor
    return w / w.sum()


def build_users(n_users: int, catalog: Catalog, days: int, rng: np.random.Generator) -> list[UserProfile]:
    """Draw users: demographics, 1-3 preferred tops, favourite brands, price level, activity."""
    tops, n_leaves = catalog.tops, len(catalog.leaves)
    top_base = rng.lognormal(0.0, TOP_POPULARITY_SIGMA, len(tops))  # some categories are busier shop-wide
    leaf_base = rng.lognormal(0.0, LEAF_POPULARITY_SIGMA, n_leaves)  # and some leaves within them
    ages = np.clip(rng.normal(38, 13, n_users), 18, 85).astype(int)
    genders = rng.choice(["f", "m", "x"], size=n_users, p=[0.49, 0.47, 0.04])
    locations = rng.choice(len(CITIES), size=n_users, p=_city_weights())
    # Activity scales with the period length; the lognormal gives many light, few heavy users.
    median = SESSIONS_MEDIAN_PER_30_DAYS * days / 30
    n_sessions = np.clip(np.rint(rng.lognormal(math.log(median), SESSIONS_SIGMA, n_users)), 1,
                         max(1.0, MAX_SESSIONS_PER_30_DAYS * days / 30))
    seeds = rng.integers(0, 2**63 - 1, n_users)
    # Dirichlet(1) preferences over the leaves of every top (normalised gamma draws), tilted
    # towards the shop-wide busier leaves.
    leaf_shares = rng.gamma(1.0, size=(n_users, n_leaves)) * leaf_base
    for t in range(len(tops)):
        in_top = catalog.leaf_top == t
        leaf_shares[:, in_top] /= leaf_shares[:, in_top].sum(axis=1, keepdims=True)
    n_interests = rng.choice([1, 2, 3], size=n_users, p=[0.35, 0.45, 0.20])
    # Dirichlet(1, 1, 1) once normalised: users often have one dominant interest.
    interest_mix = rng.gamma(1.0, size=(n_users, 3))
    top_gumbel = rng.gumbel(size=(n_users, len(tops)))
    n_fav = rng.integers(2, 5, n_users)
    brand_keys = rng.random((n_users, len(BRAND_NAMES)))
    price_levels = rng.choice(USER_PRICE_LEVELS, size=n_users, p=USER_PRICE_PROBS)
    brand_top_sets = [set(bt) for bt in catalog.brand_tops]
    users = []
    for u in range(n_users):
        prior = _demographic_prior(tops, top_base, int(ages[u]), str(genders[u]))
        # k tops drawn without replacement in proportion to the prior (Gumbel top-k trick).
        chosen = np.argsort(-(np.log(prior) + top_gumbel[u]))[: n_interests[u]]
        mix = interest_mix[u, : n_interests[u]]
        shares = np.zeros(len(tops))
        shares[chosen] = mix / mix.sum()
        # Favourite brands: a random few among those selling in the user's preferred tops.
        pool = [b for b, bt in enumerate(brand_top_sets) if bt.intersection(chosen.tolist())]
        fav = sorted(pool, key=lambda b: brand_keys[u, b])[: n_fav[u]]
        users.append(UserProfile(
            user_id=f"u{u:05d}",
            age=int(ages[u]),
            gender=str(genders[u]),
            location=CITIES[int(locations[u])],
            top_shares=shares.tolist(),
            leaf_shares=leaf_shares[u].tolist(),
            fav_brands=frozenset(int(b) for b in fav),
            price_level=float(price_levels[u]),
            n_sessions=int(n_sessions[u]),
            seed=int(seeds[u]),
            top_prior=prior,
        ))
    return users


def _city_weights() -> np.ndarray:
    """Bigger cities first: a Zipf-ish share of customers per city."""
    w = 1.0 / np.arange(1, len(CITIES) + 1) ** 0.7
    return w / w.sum()


# --- sessions ----------------------------------------------------------------------------

# An event before ids and formatting: (t seconds since start, seq, user, session, type, item, query, qty).
# ``seq`` is unique and increasing in creation order, so sorting by (t, seq) never ties and
# keeps each session's own order.
RawEvent = tuple[int, int, int, int, str, int, "str | None", "int | None"]


def _weighted_index(weights: Sequence[float], rnd: random.Random) -> int:
    cum = list(accumulate(weights))
    return min(bisect_right(cum, rnd.random() * cum[-1]), len(cum) - 1)


@dataclass
class _UserState:
    """What the simulator remembers about one user between sessions.

    Plain lists rather than numpy arrays: the simulator touches a handful of items at a
    time, where Python beats numpy's per-call overhead by a wide margin.
    """

    weights: list[float]  # per-item pick weight: popularity x brand affinity x price fit
    seen: bytearray  # 1 for items interacted with so far
    unseen_left: list[int]  # per leaf, how many of its items the user has not seen yet
    leaf_mass: list[float]  # per leaf, the total weight of its items
    unseen_mass: list[float]  # per leaf, the weight of its items not seen yet
    last_leaf: int | None = None
    follow_up: tuple[int, float] | None = None  # (leaf bought/carted in, complement probability)


class _Simulator:
    """Generates every user's sessions; one instance per ``generate_shop`` call."""

    def __init__(self, catalog: Catalog, days: int, seed: int = 0) -> None:
        self.cat = catalog
        self.seed = seed  # with the user's seed and the session, seeds each query's own stream
        self.period_s = days * 86400
        self.days = days
        self.events: list[RawEvent] = []
        self.n_sessions = 0
        names = {leaf.name: i for i, leaf in enumerate(catalog.leaves)}
        self.complements = [[names[c] for c in leaf.complements] for leaf in catalog.leaves]
        # Exploration follows shop-wide popularity of leaves (their item count).
        self.leaf_sizes = [len(items) for items in catalog.leaf_items]
        self.item_leaf = catalog.item_leaf.tolist()
        self.leaves_by_top = [np.flatnonzero(catalog.leaf_top == t).tolist() for t in range(len(catalog.tops))]

    # -- choices --------------------------------------------------------------------------

    @staticmethod
    def _has_unseen(leaf: int, st: _UserState) -> bool:
        return st.unseen_left[leaf] > 0

    @staticmethod
    def _appealing(leaf: int, st: _UserState, rnd: random.Random) -> bool:
        """Whether the user still wants to browse ``leaf``: likely while its attractive items
        are unseen, unlikely once only the unappealing tail is left. Without this, heavy users
        would end up viewing every obscure item and flatten the popularity long tail."""
        if st.unseen_left[leaf] <= 0 or st.leaf_mass[leaf] <= 0:
            return False
        return rnd.random() < (max(0.0, st.unseen_mass[leaf]) / st.leaf_mass[leaf]) ** APPEAL_POWER

    def _mark_seen(self, item: int, st: _UserState) -> None:
        if not st.seen[item]:
            st.seen[item] = 1
            leaf = self.item_leaf[item]
            st.unseen_left[leaf] -= 1
            st.unseen_mass[leaf] -= st.weights[item]

    def _preferred_leaf(self, user: UserProfile, rnd: random.Random) -> int:
        top = _weighted_index(user.top_shares, rnd)
        in_top = self.leaves_by_top[top]
        return in_top[_weighted_index([user.leaf_shares[l] for l in in_top], rnd)]

    def _session_leaf(self, user: UserProfile, st: _UserState, rnd: random.Random,
                      must: bool = False) -> int | None:
        """The leaf a session browses: a complement of a recent purchase, the previous leaf,
        an exploration, or (mostly) one drawn from the user's interests. None: skip the visit,
        unless ``must``, where any leaf with unseen items will do."""
        if st.follow_up is not None and rnd.random() < st.follow_up[1]:
            options = self.complements[st.follow_up[0]]
            leaf = options[int(rnd.random() * len(options))]
            if self._appealing(leaf, st, rnd):
                return leaf
        if st.last_leaf is not None and rnd.random() < P_CONTINUE_LEAF and self._appealing(st.last_leaf, st, rnd):
            return st.last_leaf
        if rnd.random() < P_EXPLORE:
            leaf = _weighted_index(self.leaf_sizes, rnd)
            if self._appealing(leaf, st, rnd):
                return leaf
        for _ in range(6):
            leaf = self._preferred_leaf(user, rnd)
            if self._appealing(leaf, st, rnd):
                return leaf
        if must:  # a new visitor in a tiny catalogue whose favourite leaves are empty
            rest = [leaf for leaf in range(len(self.leaf_sizes)) if self._has_unseen(leaf, st)]
            return rest[int(rnd.random() * len(rest))] if rest else None
        # Nothing appealing left in the user's interests: no visit this time. (Falling back to
        # random leaves would blur the user's profile; to the tail, flatten popularity.)
        return None

    def _pick_item(self, leaf: int, st: _UserState, session_items: set[int], rnd: random.Random) -> int | None:
        items = self.cat.leaf_items[leaf]
        if rnd.random() < P_REPEAT_VIEW:
            # A deliberate, rare revisit of an item from an earlier session.
            earlier = [i for i in items if st.seen[i] and i not in session_items]
            if earlier:
                return earlier[int(rnd.random() * len(earlier))]
        seen, weights = st.seen, st.weights
        cum = list(accumulate(0.0 if seen[i] else weights[i] for i in items))
        if not cum or cum[-1] <= 0:
            return None
        # bisect_right skips zero-weight (seen) items: their cumulative value equals the previous one.
        return items[min(bisect_right(cum, rnd.random() * cum[-1]), len(items) - 1)]

    def _session_start(self, rnd: random.Random) -> int:
        day = int(rnd.random() * self.days)
        hour = _weighted_index(HOUR_WEIGHTS, rnd)
        return min(day * 86400 + hour * 3600 + int(rnd.random() * 3600), self.period_s - SESSION_HEADROOM_S)

    # -- generation -----------------------------------------------------------------------

    def _item_weights(self, user: UserProfile) -> np.ndarray:
        cat = self.cat
        price_fit = np.exp(-PRICE_BIAS * (cat.item_price_z - user.price_level) ** 2)
        boost = np.ones(len(BRAND_NAMES))
        boost[list(user.fav_brands)] = BRAND_BOOST
        return cat.item_pop * price_fit * boost[cat.item_brand]

    def _drift(self, user: UserProfile, rnd: random.Random) -> None:
        """Interests drift slowly: now and then a new top category takes a slice of attention."""
        if rnd.random() < DRIFT_PROB:
            new = _weighted_index(user.top_prior, rnd)
            user.top_shares = [share * (1 - DRIFT_STEP) for share in user.top_shares]
            user.top_shares[new] += DRIFT_STEP

    def _emit(self, t: int, u: int, s: int, etype: str, item: int = -1,
              query: str | None = None, qty: int | None = None) -> None:
        self.events.append((t, len(self.events), u, s, etype, item, query, qty))

    def _query_rng(self, user: UserProfile, s: int) -> random.Random:
        """The query's own random stream, from (generator seed, user seed, session): drawing the
        query's wording from it leaves the session stream, so every other event, unchanged."""
        key = f"query:{self.seed}:{user.seed}:{s}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))

    def _query_for(self, item: int, rnd: random.Random, qrnd: random.Random) -> str:
        """A search for ``item``, in its own words: the leaf noun, maybe with a modifier, brand,
        synonym, typo or formatting noise (see the QUERY_* knobs), all drawn from ``qrnd``.

        ``rnd`` (the session stream) is drawn from exactly as by the original 1-3 title word
        queries, so that the events after the search stay those of earlier versions."""
        leaf = self.cat.leaves[self.cat.item_leaf[item]]
        noun = leaf.name.lower().split()
        extras = [w.lower() for w in self.cat.titles[item].split()
                  if not any(ch.isdigit() for ch in w) and w.lower() not in noun]
        n_words = _weighted_index((0.3, 0.45, 0.25), rnd) + 1
        for _ in range(n_words - 1):
            if extras:
                extras.pop(int(rnd.random() * len(extras)))

        parts = self.cat.title_parts[item]
        modifiers = [parts["adj"], parts["attr"], parts["variant"]]
        weights = list(QUERY_MODIFIER_WEIGHTS)
        if not _word_variant(parts["variant"]):
            weights[2] = 0.0  # "30ml" or "S": not what people search for
        brand = BRAND_NAMES[int(self.cat.item_brand[item])]
        head = leaf.name
        if qrnd.random() < QUERY_SYNONYM_PROB and leaf.name in QUERY_SYNONYMS:
            options = QUERY_SYNONYMS[leaf.name]
            head = options[int(qrnd.random() * len(options))]
        form = _weighted_index(QUERY_FORM_PROBS, qrnd)
        if form == 0:
            words = [head]
        elif form == 1:
            words = [modifiers[_weighted_index(weights, qrnd)], head]
        elif form == 2:
            words = [brand, head]
        else:  # adjective + attribute, or brand + a modifier
            if qrnd.random() < 0.6:
                words = [parts["adj"], parts["attr"], head]
            else:
                words = [brand, modifiers[_weighted_index(weights, qrnd)], head]
        query = " ".join(words).lower()
        if qrnd.random() < QUERY_TYPO_PROB:
            query = _with_typo(query, qrnd)
        if qrnd.random() < QUERY_NOISE_PROB:
            query = _with_noise(query, qrnd)
        return query

    def _funnel(self, u: int, s: int, item: int, t: int, user: UserProfile,
                rnd: random.Random) -> tuple[int, str]:
        """view -> click -> add_to_cart -> purchase for one item, seconds apart.
        Returns the time of the last event and the deepest stage reached."""
        cat = self.cat
        self._emit(t, u, s, "view", item)
        fav = int(cat.item_brand[item]) in user.fav_brands
        price_fit = math.exp(-0.5 * (cat.item_price_z[item] - user.price_level) ** 2)
        if rnd.random() >= P_CLICK + P_CLICK_FAV_BRAND * fav + P_CLICK_PRICE_MATCH * price_fit:
            return t, "view"
        t += rnd.randint(3, 25)
        self._emit(t, u, s, "click", item)
        if not cat.item_in_stock[item] or rnd.random() >= P_CART:
            return t, "click"
        qty = 1
        while qty < 5 and rnd.random() < 0.2:
            qty += 1
        t += rnd.randint(5, 60)
        self._emit(t, u, s, "add_to_cart", item, qty=qty)
        if rnd.random() >= P_PURCHASE:
            return t, "add_to_cart"
        t += rnd.randint(20, 180)
        self._emit(t, u, s, "purchase", item, qty=qty)
        return t, "purchase"

    def _session(self, u: int, user: UserProfile, st: _UserState, start: int, min_items: int,
                 rnd: random.Random) -> int | None:
        """One session; returns its end time, or None when the user skips this visit.
        ``min_items`` > 1 marks a new visitor, who always comes and browses that many items."""
        leaf = self._session_leaf(user, st, rnd, must=min_items > 1)
        if leaf is None:
            return None
        s = self.n_sessions
        self.n_sessions += 1
        n_items = max(min_items, min(MAX_ITEMS_PER_SESSION, 1 + _poisson(ITEMS_PER_SESSION_EXTRA, rnd)))
        session_items: set[int] = set()
        t = start
        first = self._pick_item(leaf, st, session_items, rnd)
        if first is not None and rnd.random() < SEARCH_PROB:
            self._emit(t, u, s, "search", query=self._query_for(first, rnd, self._query_rng(user, s)))
            t += rnd.randint(5, 40)
        follow_up: tuple[int, float] | None = None
        item = first
        while item is not None:
            session_items.add(item)
            self._mark_seen(item, st)
            t, stage = self._funnel(u, s, item, t, user, rnd)
            if stage == "purchase":
                follow_up = (leaf, P_COMPLEMENT_AFTER_PURCHASE)
            elif stage == "add_to_cart" and follow_up is None:
                follow_up = (leaf, P_COMPLEMENT_AFTER_CART)
            if len(session_items) >= n_items:
                break
            if len(session_items) >= min_items and not self._appealing(leaf, st, rnd):
                break  # only the unappealing tail is left here: the session ends
            item = self._pick_item(leaf, st, session_items, rnd)
            if item is None and len(session_items) < min_items:
                # The leaf ran dry before a new visitor's minimum: continue in another one.
                leaf = self._session_leaf(user, st, rnd, must=True)
                item = None if leaf is None else self._pick_item(leaf, st, session_items, rnd)
            t += rnd.randint(20, 240)
        st.last_leaf, st.follow_up = leaf, follow_up
        return t

    def simulate_user(self, u: int, user: UserProfile) -> None:
        rnd = random.Random(user.seed)
        weights = self._item_weights(user)
        leaf_mass = np.bincount(self.cat.item_leaf, weights=weights, minlength=len(self.leaf_sizes)).tolist()
        st = _UserState(weights=weights.tolist(), seen=bytearray(self.cat.n_items),
                        unseen_left=list(self.leaf_sizes), leaf_mass=leaf_mass, unseen_mass=list(leaf_mass))
        starts = sorted(self._session_start(rnd) for _ in range(user.n_sessions))
        prev_end = -MIN_SESSION_GAP_S
        for k, start in enumerate(starts):
            start = max(start, prev_end + MIN_SESSION_GAP_S)
            if start > self.period_s - SESSION_HEADROOM_S:
                break  # pushed past the period by earlier sessions: drop the rest
            self._drift(user, rnd)
            end = self._session(u, user, st, start, FIRST_SESSION_MIN_ITEMS if k == 0 else 1, rnd)
            if end is not None:
                prev_end = end


def _word_variant(variant: str) -> bool:
    """Whether a variant is a word people put in a search ("black", "king"), not a size code."""
    return variant.isalpha() and len(variant) >= 3 and variant != "Edition"


def _key_neighbours() -> dict[str, str]:
    """Letters next to each letter on a QWERTY keyboard (same row, or the row above/below)."""
    pos = {ch: (r, c + off) for r, (row, off) in enumerate(_KEY_ROWS) for c, ch in enumerate(row)}
    return {a: "".join(b for b, (rb, xb) in pos.items()
                       if (ra == rb and abs(xa - xb) == 1) or (abs(ra - rb) == 1 and abs(xa - xb) <= 0.75))
            for a, (ra, xa) in pos.items()}


_KEY_NEIGHBOURS = _key_neighbours()


def _typo_spots(word: str) -> list[int]:
    """Positions of letters next to another letter: dropping the "c" of "usb-c" would leave a
    dangling hyphen."""
    return [k for k, ch in enumerate(word) if ch.isalpha()
            and (word[k - 1:k].isalpha() or word[k + 1:k + 2].isalpha())]


def _with_typo(query: str, rnd: random.Random) -> str:
    """``query`` with one typo in one of its words of 4+ letters: a dropped letter, two adjacent
    letters swapped, a doubled letter or a neighbouring key hit instead. Unchanged without such
    a word."""
    words = query.split(" ")
    eligible = [i for i, w in enumerate(words) if sum(ch.isalpha() for ch in w) >= 4 and _typo_spots(w)]
    if not eligible:
        return query
    i = eligible[int(rnd.random() * len(eligible))]
    word = words[i]
    letters = _typo_spots(word)
    for _ in range(10):  # retried while a swap of equal letters would change nothing
        kind = int(rnd.random() * 4)
        k = letters[int(rnd.random() * len(letters))]
        if kind == 0:
            typo = word[:k] + word[k + 1:]
        elif kind == 1:
            if k + 1 >= len(word) or not word[k + 1].isalpha() or word[k] == word[k + 1]:
                continue
            typo = word[:k] + word[k + 1] + word[k] + word[k + 2:]
        elif kind == 2:
            typo = word[:k] + word[k] + word[k:]
        else:
            near = _KEY_NEIGHBOURS.get(word[k], "")
            if not near:
                continue
            typo = word[:k] + near[int(rnd.random() * len(near))] + word[k + 1:]
        words[i] = typo
        break
    return " ".join(words)


def _with_noise(query: str, rnd: random.Random) -> str:
    """``query`` as typed carelessly: capital letters, stray spaces and/or a trailing "!", "?" or
    "." (at least one of them)."""
    while True:
        case, space, punct = rnd.random() < 0.6, rnd.random() < 0.4, rnd.random() < 0.4
        if case or space or punct:
            break
    if case:
        style = int(rnd.random() * 3)
        query = (" ".join(w[:1].upper() + w[1:] for w in query.split(" ")) if style == 0
                 else query.upper() if style == 1 else query[:1].upper() + query[1:])
    if space:
        style = int(rnd.random() * 3)
        if style == 0:
            query = "  " + query + " "
        elif style == 1:
            query = query + "  "
        else:
            query = query.replace(" ", "  ", 1) if " " in query else " " + query
    if punct:
        query += "!?."[int(rnd.random() * 3)]
    return query


def _poisson(lam: float, rnd: random.Random) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, k, p = math.exp(-lam), 0, rnd.random()
    while p > limit:
        k += 1
        p *= rnd.random()
    return k


# --- serialisation -----------------------------------------------------------------------


def _unique_hex_ids(rng: np.random.Generator, n: int, prefix: str, avoid: set[str] = frozenset()) -> list[str]:
    """``n`` distinct random ids like ``e3f9c0...``; redrawn on the (astronomically rare) clash."""
    while True:
        ids = [f"{prefix}{x:015x}" for x in rng.integers(0, 2**60, n, dtype=np.int64)]
        if len(set(ids)) == n and not (avoid and set(ids) & avoid):
            return ids


class _EventWriter:
    """Turns raw events into JSON records with ids, prices and mixed timestamp formats."""

    def __init__(self, catalog: Catalog, users: list[UserProfile], start: dt.date,
                 session_ids: list[str]) -> None:
        self.catalog = catalog
        self.user_ids = [u.user_id for u in users]
        self.session_ids = session_ids
        self.start_epoch = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc).timestamp())
        self.start = start
        self._day_str: dict[int, str] = {}

    def day_str(self, day: int) -> str:
        if day not in self._day_str:
            self._day_str[day] = (self.start + dt.timedelta(days=day)).isoformat()
        return self._day_str[day]

    def ts(self, t: int, epoch_ms: bool) -> str | int:
        if epoch_ms:
            return (self.start_epoch + t) * 1000
        day, sec = divmod(t, 86400)
        return f"{self.day_str(day)}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z"

    def record(self, ev: RawEvent, event_id: str, epoch_ms: bool) -> dict[str, Any]:
        t, _, u, s, etype, item, query, qty = ev
        return {
            "event_id": event_id,
            "ts": self.ts(t, epoch_ms),
            "user_id": self.user_ids[u],
            "session_id": self.session_ids[s],
            "event_type": etype,
            "item_id": self.catalog.item_ids[item] if item >= 0 else None,
            "query": query,
            "price": float(self.catalog.item_price[item]) if item >= 0 else None,
            "quantity": qty,
        }


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record)


def _malformed_line(kind: str, record: dict[str, Any], fresh_id: str, rnd: random.Random) -> str:
    """A copy of a good record (under a fresh id) broken in exactly one way, so validation
    attributes it to exactly one rule."""
    if kind == "duplicate_event_id":
        return _dumps(record)  # an exact re-delivery, same id
    bad = dict(record, event_id=fresh_id)
    if kind == "broken_json":
        text = _dumps(bad)
        return text[: rnd.randint(len(text) // 4, len(text) - 2)]  # never the closing brace
    if kind == "missing_event_id":
        if rnd.random() < 0.5:
            del bad["event_id"]
        else:
            bad["event_id"] = ""
    elif kind == "missing_user_id":
        bad["user_id"] = None
    elif kind == "unknown_event_type":
        bad["event_type"] = BAD_EVENT_TYPES[int(rnd.random() * len(BAD_EVENT_TYPES))]
    elif kind == "negative_price":
        bad["price"] = -round(abs(bad["price"]) or 1.0, 2)
    elif kind == "bad_timestamp":
        bad["ts"] = BAD_TIMESTAMPS[int(rnd.random() * len(BAD_TIMESTAMPS))]
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return _dumps(bad)


def _inject_malformed(events: list[RawEvent], records: list[dict[str, Any]], n_bad: int,
                      rng: np.random.Generator, good_ids: set[str]) -> tuple[dict[int, list[str]], dict[str, int]]:
    """Choose ``n_bad`` broken lines, each placed right after a good line (index -> lines).

    Kinds take turns (then shuffled) so they are about equally frequent. A duplicate is placed
    up to a few hundred lines after its original, i.e. in the same or a later file, as a
    re-delivered event would be.
    """
    counts = {kind: 0 for kind in MALFORMED_KINDS}
    extras: dict[int, list[str]] = {}
    if n_bad == 0 or not events:
        return extras, counts
    rnd = random.Random(int(rng.integers(0, 2**63 - 1)))
    kinds = [MALFORMED_KINDS[i % len(MALFORMED_KINDS)] for i in range(n_bad)]
    rnd.shuffle(kinds)
    item_events = [i for i, ev in enumerate(events) if ev[5] >= 0]
    fresh_ids = _unique_hex_ids(rng, n_bad, "e", avoid=good_ids)
    for k, kind in enumerate(kinds):
        if kind == "negative_price" and not item_events:
            kind = "bad_timestamp"
        pool = item_events if kind == "negative_price" else None
        src = pool[int(rnd.random() * len(pool))] if pool else int(rnd.random() * len(events))
        after = min(src + int(rnd.random() * 400), len(events) - 1) if kind == "duplicate_event_id" else src
        extras.setdefault(after, []).append(_malformed_line(kind, records[src], fresh_ids[k], rnd))
        counts[kind] += 1
    return extras, counts


def _write_jsonl(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))


# --- entry point -------------------------------------------------------------------------


def generate_shop(landing: str | Path, *, users: int = 2000, items: int = 600, days: int = 30,
                  seed: int = 7, malformed_rate: float = 0.01,
                  start: dt.date = dt.date(2026, 10, 1)) -> dict[str, int]:
    """Write a synthetic shop's catalogue, users and ``days`` daily event files under ``landing``.

    Previous ``events``, ``catalog`` and ``users`` folders under ``landing`` are removed first.
    Returns a summary: ``users``, ``items``, ``days``, ``files`` (event files written, one per
    day, empty days included), ``sessions``, ``good_events``, ``events_written`` (all event
    lines, good and malformed), ``malformed_lines`` and ``malformed.<kind>`` per kind, and
    ``events.<type>`` per good event type.
    """
    if users < 1 or items < 1 or days < 1:
        raise ValueError(f"users, items and days must be >= 1, got {users}, {items}, {days}")
    if not 0.0 <= malformed_rate < 1.0:
        raise ValueError(f"malformed_rate must be in [0, 1), got {malformed_rate}")
    landing = Path(landing)
    cat_ss, user_ss, id_ss, fmt_ss, bad_ss = np.random.SeedSequence(seed).spawn(5)

    catalog = build_catalog(items, np.random.default_rng(cat_ss))
    profiles = build_users(users, catalog, days, np.random.default_rng(user_ss))
    sim = _Simulator(catalog, days, seed)
    for u, profile in enumerate(profiles):
        sim.simulate_user(u, profile)
    events = sorted(sim.events)  # (t, seq) is unique: a stable time order

    id_rng = np.random.default_rng(id_ss)
    event_ids = _unique_hex_ids(id_rng, len(events), "e")
    session_ids = _unique_hex_ids(id_rng, sim.n_sessions, "s")
    epoch_ms = np.random.default_rng(fmt_ss).random(len(events)) < EPOCH_MS_SHARE
    writer = _EventWriter(catalog, profiles, start, session_ids)
    records = [writer.record(ev, event_ids[i], bool(epoch_ms[i])) for i, ev in enumerate(events)]

    # Share of *all* event lines that are broken is malformed_rate: bad / (good + bad).
    n_bad = int(round(malformed_rate * len(events) / (1.0 - malformed_rate)))
    extras, bad_counts = _inject_malformed(events, records, n_bad, np.random.default_rng(bad_ss), set(event_ids))

    for sub in ("events", "catalog", "users"):
        shutil.rmtree(landing / sub, ignore_errors=True)
        (landing / sub).mkdir(parents=True)
    _write_jsonl(landing / "catalog" / "catalog.jsonl", [_dumps(r) for r in catalog.rows])
    _write_jsonl(landing / "users" / "users.jsonl", [_dumps(p.row()) for p in profiles])

    by_day: list[list[str]] = [[] for _ in range(days)]
    for i, (ev, rec) in enumerate(zip(events, records)):
        lines = by_day[ev[0] // 86400]
        lines.append(_dumps(rec))
        lines.extend(extras.get(i, ()))
    for day, lines in enumerate(by_day):
        _write_jsonl(landing / "events" / f"events-{writer.day_str(day)}.jsonl", lines)

    summary: dict[str, int] = {
        "users": users,
        "items": items,
        "days": days,
        "files": days,
        "sessions": sim.n_sessions,
        "good_events": len(events),
        "events_written": len(events) + n_bad,
        "malformed_lines": n_bad,
    }
    summary.update({f"malformed.{k}": v for k, v in bad_counts.items()})
    for etype in EVENT_TYPES:
        summary[f"events.{etype}"] = sum(1 for ev in events if ev[4] == etype)
    return summary


def start_date(days: int, today: dt.date | None = None) -> dt.date:
    """The first day of a generated history: fixed (2026-10-01, so the demo is reproducible)
    unless ``days`` would then reach past today, when it moves back so that the history ends
    before today (ingest rejects events stamped in the future)."""
    today = today or dt.date.today()
    return min(dt.date(2026, 10, 1), today - dt.timedelta(days=days))


def generate(spark: Any, cfg: Any) -> dict[str, int]:
    """The ``generate`` stage: :func:`generate_shop` with ``cfg.generator`` into the landing
    folder (any Spark-reachable URI: written locally, then copied there). The one code path
    of ``recsys generate``, the demo and the notebook."""
    from recsys import storage

    g = cfg.generator
    landing = cfg.lakehouse.landing_uri
    if storage.local_path(landing) is None and spark is None:
        from recsys.spark import get_spark

        spark = get_spark(cfg)
    if storage.local_path(landing) is None:  # replaced, as generate_shop does in a local folder
        for sub in ("events", "catalog", "users"):
            storage.delete(storage.join(landing, sub), spark)
    with storage.local_folder(landing, spark) as local:
        return generate_shop(local, users=g.users, items=g.items, days=g.days, seed=g.seed,
                             malformed_rate=g.malformed_rate, start=start_date(g.days))


def catalogue_profiles(catalog: Catalog, price_buckets: int = 10) -> Any:
    """The catalogue as the columns the search engine reads from ``item_profiles`` (a pandas
    DataFrame; ids 1..n in catalogue order, price buckets by quantile, popularity from the
    generator's own item weights): for engine tests and the latency benchmark at catalogue
    sizes the pipeline is not run on."""
    import pandas as pd

    df = pd.DataFrame(catalog.rows)
    df["item_idx"] = np.arange(1, len(df) + 1)
    df["top_category"] = df["category"].str.split(">").str[0].str.strip()
    df["category_idx"] = pd.factorize(df["category"])[0] + 1
    df["brand_idx"] = pd.factorize(df["brand"])[0] + 1
    ranks = df["price"].rank(method="first") / len(df)
    df["price_bucket"] = np.minimum((ranks * price_buckets).astype(int) + 1, price_buckets)
    users = np.round(catalog.item_pop / catalog.item_pop.max() * 200).astype(int)
    df["users"], df["views"] = users, users * 2
    df["ctr"] = (users + 1) / (users * 2 + 2)
    df["conversion"] = (users // 4 + 1) / (users * 2 + 2)
    return df
