"""Validation rules: each raw row gets the name of the first rule it breaks, or null.

Rules are Spark column expressions, evaluated in order, so a row is quarantined once with
the most basic reason (a line that is not JSON is ``broken_json``, not also
``missing_event_id``).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from recsys.tables import EVENT_TYPES, MAX_QUANTITY
# Events stamped later than this many hours after the ingest time are rejected as clock errors.
FUTURE_TOLERANCE_HOURS = 24


def blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def parse_ts(c: Column) -> Column:
    """ISO-8601 text or epoch milliseconds → timestamp (null when neither)."""
    return F.when(c.rlike(r"^\d{10,14}$"), F.timestamp_millis(c.try_cast("long"))).otherwise(
        F.coalesce(
            F.try_to_timestamp(c, F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSS]XXX")),
            F.try_to_timestamp(c, F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSS]")),
            F.try_to_timestamp(c, F.lit("yyyy-MM-dd HH:mm:ss")),
        )
    )


def format_rules(p: str = "p") -> list[tuple[str, Column]]:
    """Rules on the row's shape, before any field is looked at."""
    return [
        # Spark's text reader keeps the bytes as they are: check them, and catch U+FFFD left
        # behind by an upstream decoder that already gave up on them.
        ("bad_encoding", ~F.expr("is_valid_utf8(raw)") | F.col("raw").contains("\ufffd")),
        ("broken_json", (F.col("_format") == "json") & (~F.col("_parsed") | F.col(p).isNull())),
        ("wrong_column_count", (F.col("_format") == "csv") & ~F.col("_parsed")),
    ]


def too_long(max_length: int, *cols: Column) -> Column:
    """True when any of ``cols`` (ids) is longer than ``max_length`` characters."""
    cond = F.lit(False)
    for c in cols:
        cond = cond | (F.length(F.trim(c)) > max_length)
    return cond


def first_broken(rules: list[tuple[str, Column]]) -> Column:
    """The name of the first rule whose condition is true, else null."""
    expr = F.lit(None).cast("string")
    for name, cond in reversed(rules):
        expr = F.when(cond, F.lit(name)).otherwise(expr)
    return expr


def event_rules(max_id_length: int, p: str = "p") -> list[tuple[str, Column]]:
    """Rules for a raw event parsed into struct column ``p``; ids longer than
    ``max_id_length`` characters are ``id_too_long``."""
    col = lambda name: F.col(f"{p}.{name}")  # noqa: E731
    item_event = col("event_type") != "search"
    price = col("price").try_cast("double")
    qty = col("quantity").try_cast("double")  # "2", "2.0" (Parquet doubles) are both 2
    ts = parse_ts(col("ts"))
    return [
        *format_rules(p),
        ("missing_event_id", blank(col("event_id"))),
        ("missing_user_id", blank(col("user_id"))),
        ("unknown_event_type", blank(col("event_type")) | ~col("event_type").isin(*EVENT_TYPES)),
        ("missing_item_id", item_event & blank(col("item_id"))),
        ("id_too_long", too_long(max_id_length, col("event_id"), col("user_id"), col("session_id"), col("item_id"))),
        ("bad_timestamp", blank(col("ts")) | ts.isNull()),
        ("future_timestamp", ts > F.current_timestamp() + F.expr(f"INTERVAL {FUTURE_TOLERANCE_HOURS} HOURS")),
        ("bad_price", col("price").isNotNull() & price.isNull()),
        ("negative_price", price < 0),
        ("bad_quantity", col("quantity").isNotNull()
         & (qty.isNull() | (qty < 1) | (qty > MAX_QUANTITY) | (qty != F.floor(qty)))),
    ]


def catalog_rules(max_id_length: int, p: str = "p") -> list[tuple[str, Column]]:
    col = lambda name: F.col(f"{p}.{name}")  # noqa: E731
    price = col("price").try_cast("double")
    return [
        *format_rules(p),
        ("missing_item_id", blank(col("item_id"))),
        ("id_too_long", too_long(max_id_length, col("item_id"))),
        ("missing_title", blank(col("title"))),
        ("bad_price", col("price").isNotNull() & price.isNull()),
        ("negative_price", price < 0),
    ]


def user_rules(max_id_length: int, p: str = "p") -> list[tuple[str, Column]]:
    col = lambda name: F.col(f"{p}.{name}")  # noqa: E731
    age = col("age").try_cast("int")
    return [
        *format_rules(p),
        ("missing_user_id", blank(col("user_id"))),
        ("id_too_long", too_long(max_id_length, col("user_id"))),
        ("bad_age", col("age").isNotNull() & (age.isNull() | (age < 0) | (age > 120))),
    ]
