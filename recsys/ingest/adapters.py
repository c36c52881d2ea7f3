"""Dataset adapters: public datasets → the raw-log contract in a landing folder.

Each adapter reads one public dataset and writes what the ``ingest`` job reads
(the raw-log contract in the README, "Input data")::

    landing/events/events-00000.jsonl ...   raw events, ~50k lines per file
    landing/catalog/catalog.jsonl           one item per line (placeholder metadata)
    landing/users/users.jsonl               one user per line (demographics null)

Supported formats (:func:`import_dataset` picks one by name):

``sequences``
    One line per user, ``user_id item_id item_id ...`` in time order (the S3-Rec / ICLRec
    preprocessing of Amazon Beauty, Yelp, ...). Every item becomes a ``purchase`` (quantity 1)
    with a synthetic timestamp that is strictly increasing per user, so ordering a user's
    events by ``(ts, event_id)`` reproduces the file order exactly.
``diginetica``
    The Diginetica (CIKM Cup 2016) item-view log, ``session_id;user_id;item_id;timeframe;eventdate``
    with ``NA`` for anonymous users. Every row becomes a ``view``.
``csv``
    Any delimited file with a header, mapped column by column onto the contract.

The previous ``events/``, ``catalog/`` and ``users/`` sub-folders of the landing folder (and
only those) are replaced. Files are first written into a staging folder next to them and
swapped in at the end, so a failed import leaves the previous landing data untouched.

Bad input is not dropped silently: a source row that can still be turned into an event is
written through as it is (a missing item becomes ``item_id: null``, an unreadable time stays
unreadable) so that ingest quarantines it with its raw text; rows that cannot be mapped at all
are counted in the summary under ``skipped_lines``.

Everything here is plain Python (no Spark), so adapters run in seconds and are easy to test.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from recsys.errors import MissingInputError, UsageError
from recsys.events import EVENT_TYPES

FORMATS: tuple[str, ...] = ("sequences", "diginetica", "csv")
SUBFOLDERS: tuple[str, ...] = ("events", "catalog", "users")
LINES_PER_FILE = 50_000  # events per landing file: enough files for Spark to read in parallel

CSV_REQUIRED_KEYS: tuple[str, ...] = ("user_id", "item_id", "ts")
CSV_OPTIONAL_KEYS: tuple[str, ...] = ("event_type", "session_id", "price", "quantity", "event_id", "query")
CSV_KEYS: tuple[str, ...] = CSV_REQUIRED_KEYS + CSV_OPTIONAL_KEYS

DIGINETICA_COLUMNS: tuple[str, ...] = ("session_id", "user_id", "item_id", "timeframe", "eventdate")

# Synthetic clock of the sequences adapter: user line i starts i minutes after ``start`` and
# its k-th item is stamped k minutes later. Users overlap in time (that is harmless: only the
# order within a user matters), and a big dataset spreads over a few weeks of event dates.
SEQ_USER_OFFSET_S = 60
SEQ_STEP_S = 60

_EPOCH = re.compile(r"^\d+(\.\d+)?$")
_INGEST_EPOCH_MS = re.compile(r"^\d{10,14}$")  # what ingest reads as epoch milliseconds
_EPOCH_MS_MIN = 100_000_000_000  # 1e11: below it a number is epoch seconds (until year 5138)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UTC = dt.timezone.utc


# --- shared helpers ------------------------------------------------------------------------


def _check_src(src: str | Path) -> Path:
    path = Path(src)
    if not path.exists():
        raise MissingInputError(f"dataset file {path} does not exist")
    if not path.is_file():
        raise MissingInputError(f"dataset path {path} is not a file")
    return path


def _open_text(path: Path) -> TextIO:
    """Open a plain or gzip-compressed text file (UTF-8, BOM tolerated, universal newlines off for csv)."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _q(value: str | None) -> str:
    """A JSON string literal (or null)."""
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _iso(t: dt.datetime) -> str:
    """UTC ISO-8601 with a ``Z``: seconds, or milliseconds when the time has a fraction."""
    t = t.astimezone(_UTC) if t.tzinfo else t
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _item_sort_key(item_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then the rest alphabetically."""
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


def _catalog_row(item_id: str, price: float | None = None) -> str:
    return json.dumps(
        {
            "item_id": item_id,
            "title": f"item {item_id}",
            "description": "",
            "category": "unknown",
            "brand": "unknown",
            "price": price,
            "in_stock": True,
        },
        ensure_ascii=False,
    )


def _user_row(user_id: str) -> str:
    return json.dumps({"user_id": user_id, "age": None, "gender": None, "location": None}, ensure_ascii=False)


class _Landing:
    """Writes the three landing sub-folders into a staging folder, then swaps them in.

    ``write_event`` streams event lines into ``events-NNNNN.jsonl`` files of
    :data:`LINES_PER_FILE` lines; :meth:`commit` writes catalogue and users and replaces the
    old ``events/``, ``catalog/`` and ``users/`` folders; :meth:`abort` removes the staging
    folder. Use it as a context manager: an exception aborts.
    """

    def __init__(self, landing: str | Path, src: Path) -> None:
        self.landing = Path(landing)
        src_abs = src.resolve()
        for sub in SUBFOLDERS:
            if src_abs.is_relative_to((self.landing / sub).resolve()):
                raise ValueError(
                    f"source {src} lies inside {self.landing / sub}, which the import replaces: "
                    "move it elsewhere first"
                )
        self.landing.mkdir(parents=True, exist_ok=True)
        self.stage = self.landing / f".import-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (self.stage / "events").mkdir(parents=True)
        self.files = 0
        self.events = 0
        self._buf: list[str] = []

    def __enter__(self) -> "_Landing":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write_event(self, line: str) -> None:
        self._buf.append(line)
        if len(self._buf) >= LINES_PER_FILE:
            self._flush()

    def write_events(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write_event(line)

    def _flush(self) -> None:
        if not self._buf:
            return
        path = self.stage / "events" / f"events-{self.files:05d}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(self._buf))
            f.write("\n")
        self.files += 1
        self.events += len(self._buf)
        self._buf = []

    def commit(self, catalog_lines: Iterable[str], user_lines: Iterable[str] | None) -> None:
        self._flush()
        for sub, lines in (("catalog", catalog_lines), ("users", user_lines)):
            if lines is None:
                continue
            (self.stage / sub).mkdir()
            with open(self.stage / sub / f"{sub}.jsonl", "w", encoding="utf-8") as f:
                for line in lines:
                    f.write(line)
                    f.write("\n")
        for sub in SUBFOLDERS:
            shutil.rmtree(self.landing / sub, ignore_errors=True)
        for sub in SUBFOLDERS:
            if (self.stage / sub).exists():
                (self.stage / sub).rename(self.landing / sub)
        shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


# --- sequences -----------------------------------------------------------------------------


def import_sequences(
    src: str | Path,
    landing: str | Path,
    *,
    start: dt.datetime = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
) -> dict[str, int]:
    """A ``user_id item_id item_id ...`` file (one user per line, items in time order) → landing.

    Every item is a ``purchase`` of quantity 1. User line ``i`` (0-based, blank lines not
    counted) is stamped from ``start + i minutes``, its k-th item ``k`` minutes later, so times
    strictly increase within a user and ``(ts, event_id)`` order is file order. A user that
    appears on several lines continues its own clock and counter (file order is still kept)
    and is counted in ``duplicate_user_lines``. Event ids are ``q<user line:07>-<k:06>``;
    ``session_id`` is ``q<user line:07>`` (one session per user).

    Summary: ``users``, ``items``, ``events``, ``files``, ``lines`` (non-blank lines read),
    ``skipped_lines`` (a user id with no items: nothing to write), ``duplicate_user_lines``,
    ``consecutive_repeats`` (an item right after itself: downstream these collapse into one
    step) and ``max_sequence_length``.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    path = _check_src(src)
    start = start if start.tzinfo else start.replace(tzinfo=_UTC)
    start = start.astimezone(_UTC)
    base = int(start.timestamp())
    base_frac = start.microsecond

    # per user: (line index of first appearance, events so far, last item, JSON of user/session)
    users: dict[str, list[Any]] = {}
    items: dict[str, str] = {}  # item_id → its JSON literal
    lines = skipped = dup_lines = repeats = 0
    ts_cache: dict[int, str] = {}

    def ts_str(seconds: int) -> str:
        s = ts_cache.get(seconds)
        if s is None:
            t = dt.datetime.fromtimestamp(base + seconds, _UTC).replace(microsecond=base_frac)
            s = ts_cache[seconds] = _iso(t)
        return s

    with _open_text(path) as f, _Landing(landing, path) as out:
        for raw in f:
            tokens = raw.split()
            if not tokens:
                continue
            lines += 1
            user_id, seq = tokens[0], tokens[1:]
            if not seq:
                skipped += 1
                continue
            state = users.get(user_id)
            if state is None:
                idx = len(users)
                prefix = f"q{idx:07d}"
                state = users[user_id] = [idx, 0, None, _q(user_id), _q(prefix), prefix]
            else:
                dup_lines += 1
            idx, k, last, user_js, session_js, prefix = state
            offset = idx * SEQ_USER_OFFSET_S
            head = f'", "user_id": {user_js}, "session_id": {session_js}, "event_type": "purchase", "item_id": '
            write = out.write_event
            for item in seq:
                item_js = items.get(item)
                if item_js is None:
                    item_js = items[item] = _q(item)
                if item == last:
                    repeats += 1
                last = item
                write(
                    f'{{"event_id": "{prefix}-{k:06d}", "ts": "{ts_str(offset + k * SEQ_STEP_S)}'
                    f'{head}{item_js}, "query": null, "price": null, "quantity": 1}}'
                )
                k += 1
            state[1], state[2] = k, last
        out.commit(
            (_catalog_row(i) for i in sorted(items, key=_item_sort_key)),
            (_user_row(u) for u in users),
        )
        files, events = out.files, out.events

    return {
        "users": len(users),
        "items": len(items),
        "events": events,
        "files": files,
        "lines": lines,
        "skipped_lines": skipped,
        "duplicate_user_lines": dup_lines,
        "consecutive_repeats": repeats,
        "max_sequence_length": max((s[1] for s in users.values()), default=0),
    }


# --- diginetica ----------------------------------------------------------------------------


def import_diginetica(src: str | Path, landing: str | Path) -> dict[str, int]:
    """The Diginetica item-view log (``session_id;user_id;item_id;timeframe;eventdate``) → landing.

    Every row is a ``view``. ``user_id`` is the user id, or ``"s" + session_id`` for anonymous
    (``NA``) users; ``ts`` is ``eventdate`` (midnight UTC) plus ``timeframe`` milliseconds (the
    time since the session's first event), written as ISO-8601 with milliseconds. Event ids
    are ``d<line number:08>``, so rows with the same time keep file order.

    A row whose date or timeframe cannot be read is still written, with ``ts`` set to the raw
    ``"<eventdate>+<timeframe>ms"`` text that ingest will quarantine as ``bad_timestamp``
    (``bad_timestamps``); a missing item becomes ``item_id: null`` (``missing_items``); a row
    with a missing session id or the wrong number of fields cannot be mapped and is counted
    in ``skipped_lines``.

    Summary: ``users``, ``items``, ``events``, ``files``, ``sessions``, ``anonymous_sessions``,
    ``lines``, ``skipped_lines``, ``bad_timestamps``, ``missing_items``, ``consecutive_repeats``
    (the same item viewed twice in a row by a user, in time order).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: the header lacks one of the five Diginetica columns.
    """
    path = _check_src(src)
    users: set[str] = set()
    items: set[str] = set()
    sessions: set[str] = set()
    anon_sessions: set[str] = set()
    lines = skipped = bad_ts = missing_items = 0
    day_cache: dict[str, dt.datetime | None] = {}
    # for consecutive repeats: (user, epoch seconds or inf, line, item)
    order: list[tuple[str, float, int, str | None]] = []

    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=";")
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in DIGINETICA_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path} is not a Diginetica item-view file: header {header} lacks {missing} "
                f"(expected {';'.join(DIGINETICA_COLUMNS)})"
            )
        col = {c: header.index(c) for c in DIGINETICA_COLUMNS}

        with _Landing(landing, path) as out:
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                lines += 1
                line_no = reader.line_num
                if len(row) != len(header):
                    skipped += 1
                    continue
                session = row[col["session_id"]].strip()
                if not session:
                    skipped += 1
                    continue
                user = row[col["user_id"]].strip()
                if not user or user.upper() == "NA":
                    user = "s" + session
                    anon_sessions.add(session)
                item = row[col["item_id"]].strip() or None
                date_s = row[col["eventdate"]].strip()
                frame_s = row[col["timeframe"]].strip()

                if date_s not in day_cache:
                    try:
                        day_cache[date_s] = (
                            dt.datetime.strptime(date_s, "%Y-%m-%d").replace(tzinfo=_UTC)
                            if _DATE.match(date_s) else None
                        )
                    except ValueError:
                        day_cache[date_s] = None
                day = day_cache[date_s]
                t = day + dt.timedelta(milliseconds=int(frame_s)) if day is not None and frame_s.isdigit() else None
                if t is None:
                    bad_ts += 1
                    ts = f"{date_s}+{frame_s}ms"
                else:
                    ts = _iso(t)
                if item is None:
                    missing_items += 1
                else:
                    items.add(item)
                users.add(user)
                sessions.add(session)
                order.append((user, t.timestamp() if t else math.inf, line_no, item))
                out.write_event(
                    json.dumps(
                        {
                            "event_id": f"d{line_no:08d}",
                            "ts": ts,
                            "user_id": user,
                            "session_id": session,
                            "event_type": "view",
                            "item_id": item,
                            "query": None,
                            "price": None,
                            "quantity": None,
                        },
                        ensure_ascii=False,
                    )
                )
            out.commit(
                (_catalog_row(i) for i in sorted(items, key=_item_sort_key)),
                (_user_row(u) for u in sorted(users)),
            )
            files, events = out.files, out.events

    order.sort()
    repeats = sum(
        1 for a, b in zip(order, order[1:]) if a[0] == b[0] and a[3] is not None and a[3] == b[3]
    )
    return {
        "users": len(users),
        "items": len(items),
        "events": events,
        "files": files,
        "sessions": len(sessions),
        "anonymous_sessions": len(anon_sessions),
        "lines": lines,
        "skipped_lines": skipped,
        "bad_timestamps": bad_ts,
        "missing_items": missing_items,
        "consecutive_repeats": repeats,
    }


# --- generic CSV ---------------------------------------------------------------------------


def _csv_ts(value: str | None) -> tuple[str | None, bool]:
    """Contract ``ts`` text from a CSV cell, and whether epoch seconds were converted.

    A plain number with at least 9 integer digits is an epoch time: below 1e11 it is epoch
    seconds (decimals allowed) and becomes epoch milliseconds, above it is epoch milliseconds
    (a fraction is dropped). Anything else (ISO-8601, or text ingest will quarantine) passes
    through unchanged.
    """
    if value is None or not _EPOCH.match(value) or len(value.split(".")[0]) < 9:
        return value, False
    number = float(value)
    if number < _EPOCH_MS_MIN:
        return str(int(round(number * 1000))), True
    return value.split(".")[0], False


def _looks_iso(value: str) -> bool:
    """Date and time (``T`` or space separated), optional fraction and offset: what ingest parses."""
    if len(value) < 19 or value[10] not in "T ":
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _csv_number(value: str | None, kind: Callable[[str], Any]) -> Any:
    """A number where the text is one, else the raw text (so ingest quarantines it), or None."""
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        return value
    if isinstance(number, float) and not math.isfinite(number):
        return value
    return number


def import_csv(
    src: str | Path,
    landing: str | Path,
    mapping: dict[str, str],
    *,
    delimiter: str = ",",
    default_event_type: str = "purchase",
) -> dict[str, int]:
    """Any delimited file with a header → landing, column by column.

    ``mapping`` maps contract names to source column names: ``user_id``, ``item_id`` and ``ts``
    are required; ``event_type``, ``session_id``, ``price``, ``quantity``, ``event_id`` and
    ``query`` are optional. Without an ``event_type`` column every row is ``default_event_type``;
    without ``event_id`` ids are generated (``c<line number:09>``); without ``session_id`` the
    session is null; without ``quantity`` a purchase has quantity 1. ``ts`` may be ISO-8601 or
    epoch seconds / milliseconds: epoch seconds are converted to milliseconds (what ingest
    reads), everything else passes through as text.

    Cells are passed through, not repaired: an empty cell becomes null (a row with no item
    becomes an event with ``item_id: null``, which ingest quarantines), a non-numeric price or
    quantity stays text, an unknown event type stays as it is. Such rows are counted in
    ``bad_rows``; rows with fewer or more fields than the header in ``ragged_rows`` (missing
    fields are null). ``skipped_lines`` counts rows that were not written at all (only blank
    rows are skipped, and they are not counted).

    The catalogue has one placeholder row per item id, priced at the last valid price seen for
    it (when a price column is mapped).

    Summary: ``users``, ``items``, ``events``, ``files``, ``lines`` (data rows read),
    ``skipped_lines``, ``bad_rows``, ``ragged_rows``, ``epoch_seconds_converted``,
    ``generated_event_ids``.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: an unknown mapping key, a required key missing, a mapped column absent from
            the header, or an unknown ``default_event_type``.
    """
    unknown = sorted(set(mapping) - set(CSV_KEYS))
    if unknown:
        raise UsageError(f"unknown mapping key(s) {unknown}: allowed keys are {list(CSV_KEYS)}")
    missing_keys = [k for k in CSV_REQUIRED_KEYS if k not in mapping]
    if missing_keys:
        raise UsageError(
            f"mapping lacks required key(s) {missing_keys}: required {list(CSV_REQUIRED_KEYS)}, "
            f"optional {list(CSV_OPTIONAL_KEYS)}"
        )
    if default_event_type not in EVENT_TYPES:
        raise UsageError(f"default_event_type {default_event_type!r} is not one of {list(EVENT_TYPES)}")
    path = _check_src(src)

    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        absent = {k: c for k, c in mapping.items() if c not in header}
        if absent:
            raise UsageError(f"column(s) {absent} of the mapping are not in the header of {path}: {header}")
        col = {k: header.index(c) for k, c in mapping.items()}

        users: set[str] = set()
        prices: dict[str, float | None] = {}
        lines = bad_rows = ragged = converted = generated = 0
        with _Landing(landing, path) as out:
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                lines += 1
                line_no = reader.line_num
                if len(row) != len(header):
                    ragged += 1

                def cell(key: str, row: list[str] = row) -> str | None:
                    i = col.get(key)
                    v = row[i].strip() if i is not None and i < len(row) else ""
                    return v or None

                ts, was_seconds = _csv_ts(cell("ts"))
                converted += was_seconds
                etype = cell("event_type") if "event_type" in col else default_event_type
                if "event_id" in col:
                    event_id = cell("event_id")
                else:
                    event_id = f"c{line_no:09d}"
                    generated += 1
                user = cell("user_id")
                item = cell("item_id")
                price = _csv_number(cell("price"), float)
                if "quantity" in col:
                    quantity = _csv_number(cell("quantity"), int)
                else:
                    quantity = 1 if etype == "purchase" else None

                # a row ingest will (likely) quarantine: counted here, written all the same
                bad_rows += (
                    ts is None or event_id is None or user is None or etype not in EVENT_TYPES
                    or (item is None and etype != "search")
                    or isinstance(price, str) or (price is not None and price < 0)
                    or isinstance(quantity, str)
                    or not (_INGEST_EPOCH_MS.match(ts) or _looks_iso(ts))
                )

                if user is not None:
                    users.add(user)
                if item is not None:
                    if isinstance(price, float) and price >= 0:
                        prices[item] = price
                    else:
                        prices.setdefault(item, None)
                out.write_event(
                    json.dumps(
                        {
                            "event_id": event_id,
                            "ts": ts,
                            "user_id": user,
                            "session_id": cell("session_id"),
                            "event_type": etype,
                            "item_id": item,
                            "query": cell("query"),
                            "price": price,
                            "quantity": quantity,
                        },
                        ensure_ascii=False,
                    )
                )
            out.commit(
                (_catalog_row(i, prices[i]) for i in sorted(prices, key=_item_sort_key)),
                (_user_row(u) for u in sorted(users)),
            )
            files, events = out.files, out.events

    return {
        "users": len(users),
        "items": len(prices),
        "events": events,
        "files": files,
        "lines": lines,
        "skipped_lines": 0,
        "bad_rows": bad_rows,
        "ragged_rows": ragged,
        "epoch_seconds_converted": converted,
        "generated_event_ids": generated,
    }


# --- dispatch ------------------------------------------------------------------------------

_ADAPTERS: dict[str, Callable[..., dict[str, int]]] = {
    "sequences": import_sequences,
    "diginetica": import_diginetica,
    "csv": import_csv,
}


def import_dataset(src: str | Path, landing: str | Path, fmt: str, **kwargs: Any) -> dict[str, int]:
    """Run the adapter for ``fmt`` (one of :data:`FORMATS`) with ``kwargs``.

    Raises:
        ValueError: ``fmt`` is not a known format.
    """
    adapter = _ADAPTERS.get(fmt)
    if adapter is None:
        raise UsageError(f"unknown dataset format {fmt!r}: allowed values are {list(FORMATS)}")
    return adapter(src, landing, **kwargs)



def parse_mapping(text: str) -> dict[str, str]:
    """``"user_id=uid,item_id=sku,ts=time"`` → ``{"user_id": "uid", …}`` (a CSV column mapping).

    Raises:
        UsageError: a pair is not ``key=column`` or a key is not a contract column.
    """
    mapping: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise UsageError(f"--map: {pair!r} is not key=column (e.g. --map user_id=uid,item_id=sku,ts=time)")
        mapping[key.strip()] = column.strip()
    unknown = sorted(set(mapping) - set(CSV_KEYS))
    if unknown:
        raise UsageError(f"--map: unknown key(s) {unknown}; allowed keys: {', '.join(CSV_KEYS)}")
    return mapping


def import_from_config(spark: Any, cfg: Any, source: str | None = None, fmt: str | None = None,
                       mapping: str | dict[str, str] | None = None) -> dict[str, int]:
    """The ``import`` stage: convert ``source`` (format ``fmt``) into raw logs in the landing
    folder (any Spark-reachable URI: written locally, then copied there). ``mapping`` (csv
    only): contract key → column, as a dict or ``"key=column,…"``.

    Raises:
        UsageError: ``source``/``fmt`` missing, or csv without a mapping (naming the keys).
        MissingInputError: ``source`` does not exist.
    """
    from recsys import storage

    if not source or not fmt:
        raise UsageError(f"import needs --source PATH and --format {{{','.join(FORMATS)}}}")
    if fmt not in FORMATS:
        raise UsageError(f"unknown dataset format {fmt!r}: allowed values are {list(FORMATS)}")
    kwargs: dict[str, Any] = {}
    if fmt == "csv":
        if not mapping:
            raise UsageError(f"import --format csv needs --map naming the CSV column of each contract key: required "
                             f"{', '.join(CSV_REQUIRED_KEYS)}; optional {', '.join(CSV_OPTIONAL_KEYS)} "
                             f"(e.g. --map user_id=uid,item_id=sku,ts=time)")
        # import_csv checks the mapping's keys against the header (UsageError)
        kwargs["mapping"] = parse_mapping(mapping) if isinstance(mapping, str) else dict(mapping)
    elif mapping:
        raise UsageError(f"--map applies to --format csv only, not {fmt}")
    landing = cfg.lakehouse.landing_uri
    if storage.local_path(landing) is None and spark is None:
        from recsys.spark import get_spark

        spark = get_spark(cfg)
    with storage.local_folder(landing, spark) as local:
        return import_dataset(source, local, fmt, **kwargs)
