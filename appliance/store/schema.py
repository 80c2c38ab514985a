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
JOURNAL_NAME = "solargw.journal"
RAM_DB_NAME = "solargw-live.db"

CARD_WAL_BYTES = 4 * 1024 * 1024
"""The card's WAL is cut back to this after a checkpoint (SQLite checkpoints at 1000 pages)."""
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
    last_timestamp REAL,
    mark_wh REAL,
    mark_timestamp REAL,
    held_wh REAL
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
CREATE TABLE IF NOT EXISTS pvoutput_queue (
    system_id INTEGER NOT NULL,
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    energy_wh INTEGER NOT NULL,
    power_w INTEGER NOT NULL,
    temperature_c REAL,
    voltage_v REAL,
    made REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    settled REAL,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (system_id, date, time)
);
"""

CARD = ""
"""The card has the shared tables only, and ``meta``; the history is in tables per period
(``appliance.store.history``)."""

RAM = """
CREATE TABLE IF NOT EXISTS recent (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    frame BLOB NOT NULL,
    state INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recent_by_serial ON recent (serial, id);
CREATE INDEX IF NOT EXISTS recent_by_state ON recent (state, id);
CREATE TABLE IF NOT EXISTS resumed (serial TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pending (
    tbl TEXT NOT NULL,
    row INTEGER NOT NULL,
    change INTEGER NOT NULL,
    PRIMARY KEY (tbl, row)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('dirty_since', NULL), ('unmaterialized_since', NULL),
    ('changes', 0), ('health', 'ok'), ('health_since', NULL), ('health_message', ''), ('last_flush', NULL),
    ('last_materialized', NULL), ('last_compaction', 0), ('journal_epoch', 0), ('journal_seq', 0),
    ('journal_offset', 0), ('journal_records', 0), ('commits', 0);
""" + "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()} AFTER {event} ON {table}{when} BEGIN
    INSERT INTO pending VALUES ('{table}', NEW.rowid, (SELECT value FROM meta WHERE key = 'changes'))
        ON CONFLICT (tbl, row) DO UPDATE SET change = excluded.change;
END;"""
    for table, event, when in (
        ("ledger", "INSERT", ""), ("ledger", "UPDATE", ""),
        ("energy_days", "INSERT", ""), ("energy_days", "UPDATE", ""),
        ("counters", "INSERT", ""), ("counters", "UPDATE", ""),
        ("pvoutput_queue", "INSERT", ""), ("pvoutput_queue", "UPDATE", ""),
        ("inverters", "INSERT", ""),
        # Every reading moves last_seen: alone, it is not worth a journal entry (the history has it).
        ("inverters", "UPDATE", " WHEN OLD.family IS NOT NEW.family OR OLD.model IS NOT NEW.model"
         " OR OLD.model_setting IS NOT NEW.model_setting OR OLD.name IS NOT NEW.name"
         " OR OLD.firmware IS NOT NEW.firmware OR OLD.removed IS NOT NEW.removed"),
    )
)
"""Only in RAM. ``recent``: readings in arrival order; ``state`` 0 waits for the journal, 1 is in
the journal, 2 is in the database (kept for its frame: the newest ``FRAMES_KEPT`` per inverter).
``pending``: rows of the journaled tables changed since the last journal record (the triggers
note them, whatever columns a table has). ``resumed``: see ``InverterInfo.resumed``."""
JOURNALED = ("inverters", "ledger", "energy_days", "counters", "pvoutput_queue")

MIGRATIONS: tuple[str, ...] = ()
"""Statements for databases made by earlier versions, run (on both databases) at every open;
each must be harmless when there is nothing to do."""


def card_uri(path: Path, *, read_only: bool = False, immutable: bool = False) -> str:
    query = "?immutable=1" if immutable else "?mode=ro" if read_only else ""
    return f"file:{quote(str(path))}{query}"


def connect(uri: str) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA temp_store=MEMORY")  # GROUP BY and sorting never spill to a file
    # Debian builds SQLite with SECURE_DELETE on: every deleted row zeroed, every freed page written
    # once more. Readings are no secret; FAST zeroes only inside pages that are written anyway.
    db.execute("PRAGMA secure_delete=OFF")
    return db


def setup_card(db: sqlite3.Connection, *, writable: bool) -> None:
    if writable:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on the card when it returns (a few a day: the fsync costs nothing).
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={CARD_WAL_BYTES}")


def setup_ram(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")  # readers in both services never block the writer
    db.execute("PRAGMA synchronous=OFF")  # a RAM file system: a commit is safe once written
    db.execute(f"PRAGMA wal_autocheckpoint={RAM_WAL_PAGES}")
    db.execute(f"PRAGMA journal_size_limit={RAM_WAL_PAGES * 4096}")


def create(db: sqlite3.Connection, *parts: str) -> None:
    db.executescript("".join(parts))
    for statement in MIGRATIONS:
        db.execute(statement)


def migrate_card(db: sqlite3.Connection) -> None:
    """Keep an earlier version's history table ``readings`` as ``readings_legacy``: ``readings``
    is a view of every history table now (``history.refresh_view``)."""
    def legacy() -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'readings'").fetchone() is not None

    if not legacy():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if legacy():
            db.execute("ALTER TABLE readings RENAME TO readings_legacy")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def add_columns(db: sqlite3.Connection, table: str, wanted: list[str], schema: str = "main",
                declared: str = "") -> list[str]:
    """Add the columns of ``wanted`` that ``table`` lacks (a database made by an earlier version);
    returns them."""
    have = set(columns(db, table, schema))
    added = [name for name in wanted if name not in have]
    for name in added:
        db.execute(f'ALTER TABLE {schema}.{table} ADD COLUMN "{name}" {declared}'.rstrip())
    return added


def columns(db: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")]


def primary_key(db: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    rows = sorted((row[5], row[1]) for row in db.execute(f"PRAGMA {schema}.table_info({table})") if row[5])
    return [name for _, name in rows]
