"""The history on the card: one table per day, then one per month.

- ``readings_YYYYMMDD`` (UTC day): the newest reading per inverter of every
  ``history_seconds``, kept ``full_resolution_days``;
- ``readings_coarse_YYYYMM`` (UTC month): one per inverter per 15 minutes, kept ``keep_days``;
- ``readings_legacy``: the history of an earlier version, read as it is, thinned by its old
  rules until it is empty;
- ``readings``: a view of all of them, for whoever opens the database.

Why tables per period: SQLite deletes rows one by one, rewriting every page it takes them
from, so dropping a day of history with ``DELETE ... WHERE`` wrote that day again, twice
(WAL, then checkpoint): 1.4 MB a day at the reference load. ``DROP TABLE`` frees the pages
without writing them: ~70 KiB (``python -m bench sdwear`` measures the compaction apart).

A row's ``id`` is its time in milliseconds (nudged by a few when two share one): rows go in
at the end of their table, and a time range is a range of ids, with no index to update.
Fields are kept deflated (``codec``).
"""
from __future__ import annotations

import math
import re
import sqlite3
from datetime import datetime, timezone
from typing import Any, Iterable

from appliance.store import codec

BUCKET_SECONDS = 900
"""History older than ``full_resolution_days`` keeps one reading per inverter per 15 minutes."""
LEGACY = "readings_legacy"
_PARTITION = re.compile(r"^readings_(coarse_)?(\d{6}|\d{8})$")
_COLUMNS = "(id INTEGER PRIMARY KEY, serial TEXT NOT NULL, timestamp REAL NOT NULL, kind TEXT NOT NULL, fields NOT NULL)"


def time_key(timestamp: float) -> int:
    """A history row's id: its time in milliseconds."""
    return math.floor(timestamp * 1000)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def day_table(timestamp: float) -> str:
    return f"readings_{_utc(timestamp):%Y%m%d}"


def month_table(timestamp: float) -> str:
    return f"readings_coarse_{_utc(timestamp):%Y%m}"


def _span(name: str) -> tuple[float, float, bool]:
    """``(start, end, coarse)`` of a partition table."""
    match = _PARTITION.match(name)
    assert match is not None
    coarse, digits = bool(match.group(1)), match.group(2)
    if coarse:
        start = datetime(int(digits[:4]), int(digits[4:]), 1, tzinfo=timezone.utc)
        end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=timezone.utc)
    else:
        start = datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:]), tzinfo=timezone.utc)
        end = datetime.fromtimestamp(start.timestamp() + 86400, timezone.utc)
    return start.timestamp(), end.timestamp(), coarse


def partitions(db: sqlite3.Connection, schema: str = "main") -> list[tuple[str, float, float, bool]]:
    """``(table, start, end, coarse)`` of every partition, oldest first."""
    names = [row[0] for row in db.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'"
                                          " AND name LIKE 'readings\\_%' ESCAPE '\\'")]
    return sorted(((name, *_span(name)) for name in names if _PARTITION.match(name)), key=lambda p: (p[1], p[3]))


def has_legacy(db: sqlite3.Connection, schema: str = "main") -> bool:
    return db.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",
                      (LEGACY,)).fetchone() is not None


def ensure_view(db: sqlite3.Connection) -> None:
    if db.execute("SELECT 1 FROM main.sqlite_master WHERE type = 'view' AND name = 'readings'").fetchone() is None:
        refresh_view(db)


def refresh_view(db: sqlite3.Connection) -> None:
    """``readings``: every partition (and the legacy table) as one, for people and tools."""
    selects = [f"SELECT id, serial, timestamp, kind, fields FROM main.{name}" for name, *_ in partitions(db)]
    if has_legacy(db):
        selects.insert(0, f"SELECT id, serial, timestamp, kind, fields FROM main.{LEGACY}")
    db.execute("DROP VIEW IF EXISTS main.readings")
    body = " UNION ALL ".join(selects) or "SELECT NULL AS id, NULL AS serial, NULL AS timestamp, NULL AS kind," \
                                         " NULL AS fields WHERE 0"
    db.execute(f"CREATE VIEW main.readings AS {body}")


def _ensure(db: sqlite3.Connection, table: str, known: set[str]) -> bool:
    if table in known:
        return False
    db.execute(f"CREATE TABLE IF NOT EXISTS main.{table} {_COLUMNS}")
    known.add(table)
    return True


def insert(db: sqlite3.Connection, table: str, serial: str, timestamp: float, kind: str, fields: Any) -> None:
    key = time_key(timestamp)
    while True:
        try:
            db.execute(f"INSERT INTO main.{table} (id, serial, timestamp, kind, fields) VALUES (?,?,?,?,?)",
                       (key, serial, timestamp, kind, fields))
            return
        except sqlite3.IntegrityError:  # another reading in the same millisecond
            key += 1


def newest_per_bucket(rows: Iterable[Any], resolution: float) -> list[Any]:
    """Per inverter, the newest of each ``resolution`` bucket (0: every reading), oldest first.
    ``rows`` have ``serial``, ``timestamp`` and ``id``."""
    picks: dict[tuple[str, float], Any] = {}
    for row in rows:
        bucket = math.floor(row["timestamp"] / resolution) if resolution else row["timestamp"]
        best = picks.get((row["serial"], bucket))
        if best is None or (row["timestamp"], row["id"]) >= (best["timestamp"], best["id"]):
            picks[(row["serial"], bucket)] = row
    return sorted(picks.values(), key=lambda row: (row["timestamp"], row["id"]))


def write(db: sqlite3.Connection, rows: list[Any], resolution: float) -> int:
    """History rows for ``rows`` (``id``, ``serial``, ``timestamp``, ``kind``, ``fields`` JSON), inside
    the caller's transaction; a bucket that has a newer reading already keeps it. Returns how many."""
    known = {name for name, *_ in partitions(db)}
    created = False
    written = 0
    for row in newest_per_bucket(rows, resolution):
        ts = row["timestamp"]
        table = day_table(ts)
        created |= _ensure(db, table, known)
        start = math.floor(ts / resolution) * resolution if resolution else ts
        end = start + resolution if resolution else ts
        there = db.execute(
            f"SELECT id, timestamp FROM main.{table} WHERE id BETWEEN ? AND ? AND serial = ?"
            " AND timestamp >= ? AND (timestamp < ? OR timestamp = ?)",
            (time_key(start), time_key(end) + 1000, row["serial"], start, end, start)).fetchall()
        if any(other[1] >= ts for other in there):
            continue
        for other in there:  # the same bucket, from the previous commit: the newer reading wins
            db.execute(f"DELETE FROM main.{table} WHERE id = ?", (other[0],))
        insert(db, table, row["serial"], ts, row["kind"], codec.pack(row["fields"]))
        written += 1
    if created:
        refresh_view(db)
    return written


def read(db: sqlite3.Connection, serial: str, start: float, end: float) -> list[tuple[float, Any]]:
    """``(timestamp, stored fields)`` of ``serial`` between ``start`` and ``end``, any order."""
    found: list[tuple[float, Any]] = []
    for table, first, last, _ in partitions(db):
        if last >= start and first <= end:
            found += db.execute(
                f"SELECT timestamp, fields FROM main.{table} WHERE id BETWEEN ? AND ? AND timestamp BETWEEN ? AND ?"
                " AND serial = ?", (time_key(start), time_key(end) + 1000, start, end, serial)).fetchall()
    if has_legacy(db):
        found += db.execute(f"SELECT timestamp, fields FROM main.{LEGACY} WHERE serial = ? AND timestamp BETWEEN ? AND ?",
                            (serial, start, end)).fetchall()
    return found


def newest(db: sqlite3.Connection) -> list[Any]:
    """The newest history row of each inverter, from the last two day tables."""
    days = [name for name, _, _, coarse in partitions(db) if not coarse][-2:]
    rows: dict[str, Any] = {}
    for table in days:
        for row in db.execute(f"SELECT serial, MAX(timestamp) AS timestamp, kind, fields FROM main.{table}"
                              " GROUP BY serial"):
            if row["serial"] not in rows or row["timestamp"] > rows[row["serial"]]["timestamp"]:
                rows[row["serial"]] = row
    return list(rows.values())


def compact(db: sqlite3.Connection, now: float, full_resolution_days: int, keep_days: int) -> None:
    """Inside the caller's transaction: day tables wholly older than ``full_resolution_days`` go to
    their month's 15-minute table and are dropped; month tables wholly older than ``keep_days`` are
    dropped."""
    thin_before = now - full_resolution_days * 86400
    drop_before = now - keep_days * 86400
    known = {name for name, *_ in partitions(db)}
    changed = False
    for table, start, end, coarse in partitions(db):
        if end <= drop_before:
            db.execute(f"DROP TABLE main.{table}")
            changed = True
        elif not coarse and end <= thin_before:
            target = month_table(start)
            _ensure(db, target, known)
            for row in db.execute(
                    f"SELECT serial, MAX(timestamp) AS timestamp, kind, fields FROM main.{table}"
                    " GROUP BY serial, CAST(timestamp / ? AS INTEGER) ORDER BY 2", (BUCKET_SECONDS,)).fetchall():
                insert(db, target, row["serial"], row["timestamp"], row["kind"], row["fields"])
            db.execute(f"DROP TABLE main.{table}")
            changed = True
    if has_legacy(db):  # an earlier version's history: its own rules, in place
        db.execute(f"DELETE FROM main.{LEGACY} WHERE timestamp < ?", (drop_before,))
        db.execute(
            f"DELETE FROM main.{LEGACY} WHERE timestamp < ? AND id NOT IN (SELECT MAX(id) FROM main.{LEGACY}"
            " WHERE timestamp < ? GROUP BY serial, CAST(timestamp / ? AS INTEGER))",
            (thin_before, thin_before, BUCKET_SECONDS))
        if db.execute(f"SELECT 1 FROM main.{LEGACY} LIMIT 1").fetchone() is None:
            db.execute(f"DROP TABLE main.{LEGACY}")
            changed = True
    if changed:
        refresh_view(db)
