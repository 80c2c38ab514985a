"""The tables of the two databases, and how each connection is set up.

``SHARED`` is created in both the card database and the RAM working copy, with the
same statements, so that a table has the same columns in the same order on both
sides: the write-behind copies rows with ``SELECT *``-style column lists taken from
the RAM side, whatever columns a later change adds (add them in ``SHARED`` and, for
databases that exist already, in ``MIGRATIONS``: both run on both databases).

Card only: the history (``readings`` at ``history_seconds`` resolution, then
``readings_coarse`` at ``BUCKET_SECONDS``) and ``meta``. RAM only: ``recent`` (the
readings that wait for the card, then the newest frames per inverter), ``resumed``
and ``meta``.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

DB_NAME = "solargw.db"
RAM_DB_NAME = "solargw-live.db"

CARD_PAGE_SIZE = 1024
"""Page size of a new card database. Every commit writes whole pages (to the WAL, then again
at the checkpoint), and a group commit touches a handful of tables each by a few hundred
bytes: with SQLite's default 4096-byte pages a flush wrote ~8 pages = 33 KiB, with 1024-byte
pages ~14 KiB (``python -m bench sdwear``). Databases made before keep their page size."""
CARD_WAL_PAGES = 2000
"""Checkpoint the card's WAL after this many pages (~2 MiB). A page changed by several
group commits (the ledger, the tails of the history tables) is copied to the database once
per checkpoint, not once per commit: the longer the WAL, the fewer copies."""
RAM_WAL_PAGES = 256

SHARED = """
CREATE TABLE IF NOT EXISTS inverters (
    serial TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    model_setting TEXT NOT NULL DEFAULT 'auto',
    name TEXT NOT NULL DEFAULT '',
    firmware TEXT NOT NULL DEFAULT '',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ledger (
    serial TEXT PRIMARY KEY,
    total_wh REAL NOT NULL,
    last_counter_wh REAL,
    last_timestamp REAL
);
CREATE TABLE IF NOT EXISTS energy_days (
    serial TEXT NOT NULL,
    day TEXT NOT NULL,
    wh REAL NOT NULL,
    PRIMARY KEY (serial, day)
);
CREATE TABLE IF NOT EXISTS latest (
    serial TEXT PRIMARY KEY,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    model_guessed INTEGER NOT NULL,
    fields TEXT NOT NULL,
    raw TEXT NOT NULL,
    frame TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    timestamp REAL NOT NULL,
    family TEXT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    frame TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    family TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, family)
);
CREATE TABLE IF NOT EXISTS status (
    component TEXT PRIMARY KEY,
    timestamp REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value
);
"""

CARD = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    frame TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS readings_coarse (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    frame TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (timestamp);
CREATE INDEX IF NOT EXISTS readings_coarse_by_time ON readings_coarse (timestamp);
"""
"""History rows go in time order, so a time index grows at its end only: one or two pages per
group commit. The former (serial, timestamp) index had one insertion point per inverter, up to
40 pages touched per commit; ``MIGRATIONS`` drops it."""

RAM = """
CREATE TABLE IF NOT EXISTS recent (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    frame BLOB NOT NULL,
    flushed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recent_by_serial ON recent (serial, id);
CREATE INDEX IF NOT EXISTS recent_queued ON recent (flushed, id);
CREATE TABLE IF NOT EXISTS resumed (serial TEXT PRIMARY KEY);
INSERT OR IGNORE INTO meta (key, value) VALUES ('dirty_since', NULL), ('diagnostics_dirty_since', NULL),
    ('changes', 0), ('diagnostics_changes', 0), ('health', 'ok'), ('health_since', NULL), ('health_message', ''), ('last_flush', NULL),
    ('last_compaction', 0);
"""

MIGRATIONS: tuple[str, ...] = (
    "DROP INDEX IF EXISTS readings_by_serial_time",
)
"""Statements for databases made by earlier versions, run (on both databases) at every open;
each must be harmless when there is nothing to do."""


def card_uri(path: Path, *, read_only: bool = False, immutable: bool = False) -> str:
    query = "?immutable=1" if immutable else "?mode=ro" if read_only else ""
    return f"file:{quote(str(path))}{query}"


def connect(uri: str) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA temp_store=MEMORY")  # GROUP BY and sorting never spill to a file
    return db


def setup_card(db: sqlite3.Connection, *, writable: bool) -> None:
    if writable:
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:
            db.execute(f"PRAGMA page_size={CARD_PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a group commit is on the card when it returns. Once every few minutes, the fsync costs
        # nothing and the loss window holds through a power cut (NORMAL could lose the last commits).
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA wal_autocheckpoint={CARD_WAL_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={CARD_WAL_PAGES * 4096}")


def setup_ram(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")  # readers in both services never block the writer
    db.execute("PRAGMA synchronous=OFF")  # a RAM file system: a commit is safe once written
    db.execute(f"PRAGMA wal_autocheckpoint={RAM_WAL_PAGES}")
    db.execute(f"PRAGMA journal_size_limit={RAM_WAL_PAGES * 4096}")


def create(db: sqlite3.Connection, *parts: str) -> None:
    db.executescript("".join(parts))
    for statement in MIGRATIONS:
        db.execute(statement)


def columns(db: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")]


def primary_key(db: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    rows = sorted((row[5], row[1]) for row in db.execute(f"PRAGMA {schema}.table_info({table})") if row[5])
    return [name for _, name in rows]
