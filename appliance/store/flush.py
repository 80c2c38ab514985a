"""Write-behind: the RAM working copy reaches the card.

Two steps, both under one lock shared by every process (``Journal.locked``):

- every ``flush_seconds`` (the loss window) when something changed: one journal record
  (``journal``) with the readings that arrived, as history rows (per inverter, the newest
  of each ``history_seconds`` bucket), and the rows of the ledger, energy per day,
  inverters and counters that changed. One 4 KiB page on the card.
- every ``MATERIALIZE_EVERY`` flush periods (3 hours by default), at ``Store.flush()`` and
  at close: one transaction on the database, on a card connection that has the working
  copy attached read-only (``ram``): ``BEGIN IMMEDIATE`` takes the database's write lock
  and a consistent snapshot of the working copy, without locking it, so ingest never
  waits for the card. It writes the history, copies every table row that differs (the
  column lists come from the working copy, so columns added later are copied too),
  compacts the history hourly and moves the journal to a new epoch: the records written
  so far are in the database now.

Afterwards the working copy marks what went out (``recent.state``). A crash between the
card's write and that mark only means the next step writes the same rows again, which
changes nothing (history: the newer reading of a bucket wins; tables: whole rows).

A step that fails (read-only or full file system, I/O error) changes nothing: the readings
stay queued, ``health`` says why, the log says so once a minute, and the next attempt
(every few seconds) writes everything once the card takes it.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from appliance.store import history
from appliance.store import journal as redo
from appliance.store.history import BUCKET_SECONDS
from appliance.store.card import read_only_fs
from appliance.store.schema import JOURNALED, add_columns, card_uri, columns, primary_key

if TYPE_CHECKING:
    from appliance.store.core import Store

log = logging.getLogger("appliance.store")

MATERIALIZE_EVERY = 36
"""The database gets the journal's content every this many flush periods (3 hours with the
default 300 s). Longer saves little: each such commit costs ~50 KiB besides the data (WAL
index, small tables, latest values); shorter adds those."""
FRAMES_KEPT = 20
"""Raw frames kept per inverter (in RAM only) for the inverter page."""
LOG_EVERY_SECONDS = 60.0
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Snapshot:
    last_id: int
    changes: int
    written: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class transaction:
    """``with transaction(db)``: BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")


def meta_value(meta: dict[str, Any], key: str) -> float | None:
    value = meta.get(key)
    return None if value is None else float(value)


def read_meta(db: sqlite3.Connection, schema: str = "main") -> dict[str, Any]:
    return {row[0]: row[1] for row in db.execute(f"SELECT key, value FROM {schema}.meta")}


# --- the database: whole copies ---------------------------------------------------------------------

def attach_ram(db: sqlite3.Connection, store: "Store") -> None:
    if not any(row[1] == "ram" for row in db.execute("PRAGMA database_list")):
        db.execute("ATTACH DATABASE ? AS ram", (card_uri(store.ram_path, read_only=True),))


def mirror(db: sqlite3.Connection, table: str, *, deletes: bool = False) -> None:
    """Copy the working copy's rows of ``table`` that differ from the database's (``deletes``: and
    delete the database's rows that the working copy has not, for a table it holds whole). A column
    the database lacks (added by a later version) is added first."""
    cols = columns(db, table, "ram")
    add_columns(db, table, cols)
    key = primary_key(db, table, "ram")
    same = " AND ".join(f"c.{_quote(c)} IS r.{_quote(c)}" for c in cols)
    updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in cols if c not in key)
    names = ", ".join(_quote(c) for c in cols)
    db.execute(
        f"INSERT INTO main.{table} ({names}) SELECT {', '.join('r.' + _quote(c) for c in cols)} FROM ram.{table} r"
        f" WHERE NOT EXISTS (SELECT 1 FROM main.{table} c WHERE {same})"
        f" ON CONFLICT ({', '.join(_quote(k) for k in key)}) DO UPDATE SET {updates}"
    )
    if deletes:
        keys = ", ".join(_quote(k) for k in key)
        db.execute(f"DELETE FROM main.{table} WHERE ({keys}) NOT IN (SELECT {keys} FROM ram.{table})")


def copy(db: sqlite3.Connection, resolution: float, *, diagnostics: bool = True) -> Snapshot:
    """Everything the working copy (``ram``) has that the database (``main``) lacks, inside the
    caller's transaction. ``diagnostics``: the latest values and rejected frames too (~40 KiB at
    the reference load, when they changed): at close; after a power cut the working copy rebuilds
    the latest values from the history, and the rejected frames are gone."""
    meta = read_meta(db, "ram")
    rows = db.execute(
        "SELECT id, serial, timestamp, kind, fields FROM ram.recent WHERE state < 2 ORDER BY id").fetchall()
    written = history.write(db, rows, resolution)
    for table in ("inverters", "ledger", "energy_days", "counters", *(("latest",) if diagnostics else ())):
        mirror(db, table)
    mirror(db, "pvoutput_queue", deletes=True)
    if diagnostics:
        db.execute("DELETE FROM main.rejected WHERE id NOT IN (SELECT id FROM ram.rejected)")
        mirror(db, "rejected")
    return Snapshot(rows[-1]["id"] if rows else 0, int(meta.get("changes") or 0), written)


def materialize(store: "Store", *, compact_now: float | None = None, diagnostics: bool = True) -> bool:
    """Everything into the database in one commit; the journal starts a new epoch. False (and
    ``health`` says why) when the card could not take it."""
    started = time.time()
    try:
        with store.journal.locked():
            db = store.card.writer()
            attach_ram(db, store)
            with transaction(db):
                snapshot = copy(db, store.history_seconds, diagnostics=diagnostics)
                if compact_now is not None:
                    history.compact(db, compact_now, store.full_resolution_days, store.keep_days)
                epoch = int(read_meta(db, "ram").get("journal_epoch") or 0) + 1
                db.execute("INSERT OR REPLACE INTO main.meta (key, value) VALUES ('journal_epoch', ?)", (epoch,))
            settle(store, snapshot, state=2, started=started, epoch=epoch, compacted=compact_now)
    except (sqlite3.Error, OSError) as exc:
        store.card.reset()
        failed(store, exc)
        return False
    return True


# --- the journal: small records --------------------------------------------------------------------

def journal_flush(store: "Store") -> bool:
    """One journal record of what changed since the last; False (``health`` says why) on failure."""
    started = time.time()
    db = store._db
    try:
        with store.journal.locked():
            db.execute("BEGIN")  # one snapshot of the working copy
            try:
                meta = read_meta(db)
                rows = db.execute(
                    "SELECT id, serial, timestamp, kind, fields FROM recent WHERE state = 0 ORDER BY id").fetchall()
                tables = {}
                for table in JOURNALED:
                    cursor = db.execute(f"SELECT * FROM {table} WHERE rowid IN"
                                        " (SELECT row FROM pending WHERE tbl = ?)", (table,))
                    found = cursor.fetchall()
                    if found:
                        tables[table] = [[d[0] for d in cursor.description], [list(row) for row in found]]
            finally:
                db.execute("COMMIT")
            sequence = int(meta["journal_seq"] or 0) + 1
            record = {"sequence": sequence, "history": [
                [row["serial"], row["timestamp"], row["kind"], row["fields"]]
                for row in history.newest_per_bucket(rows, store.history_seconds)], "tables": tables}
            offset = store.journal.append(int(meta["journal_epoch"] or 0), sequence, redo.encode(record),
                                          int(meta["journal_offset"] or 0))
            settle(store, Snapshot(rows[-1]["id"] if rows else 0, int(meta["changes"] or 0), len(record["history"])),
                   state=1, started=started, sequence=sequence, offset=offset)
    except (sqlite3.Error, OSError) as exc:
        failed(store, exc)
        return False
    return True


def replay(store: "Store", db: sqlite3.Connection, epoch: int) -> int:
    """Apply the journal's records of ``epoch`` to a working copy just filled from the database
    (inside the caller's transaction); returns the last sequence number."""
    sequence = 0
    known: dict[str, set[str]] = {}
    for _offset, sequence, payload in store.journal.records(epoch):
        record = redo.decode(payload)
        for table, (names, rows) in record.get("tables", {}).items():
            have = known.setdefault(table, set(columns(db, table)))
            picks = [i for i, name in enumerate(names) if name in have]
            wanted = ", ".join(_quote(names[i]) for i in picks)
            db.executemany(f"INSERT OR REPLACE INTO {table} ({wanted}) VALUES ({', '.join('?' * len(picks))})",
                           ([row[i] for i in picks] for row in rows))
        db.executemany("INSERT INTO recent (serial, timestamp, kind, fields, frame, state) VALUES (?,?,?,?,x'',1)",
                       record.get("history", []))
    return sequence


# --- the working copy's side -----------------------------------------------------------------------

def settle(store: "Store", snapshot: Snapshot, *, state: int, started: float, sequence: int | None = None,
           offset: int | None = None, epoch: int | None = None, compacted: float | None = None) -> None:
    """Mark what reached the card: rows to ``state`` (1: journal, 2: database)."""
    db = store._db
    with transaction(db):
        db.execute("UPDATE recent SET state = ? WHERE state < ? AND id <= ?", (state, state, snapshot.last_id))
        db.execute("DELETE FROM pending WHERE change < ?", (snapshot.changes,))
        meta = read_meta(db)
        unchanged = int(meta["changes"] or 0) == snapshot.changes
        now = time.time()
        updates = [(None if unchanged else started, "dirty_since"), (now, "last_flush"), ("ok", "health"),
                   ("", "health_message")]
        if meta["health"] != "ok":
            updates.append((now, "health_since"))
        if sequence is not None:
            updates += [(sequence, "journal_seq"), (offset, "journal_offset"),
                        (int(meta.get("journal_records") or 0) + 1, "journal_records")]
        if epoch is not None:
            updates += [(epoch, "journal_epoch"), (0, "journal_seq"), (0, "journal_offset"), (now, "last_materialized"),
                        (int(meta.get("commits") or 0) + 1, "commits"),
                        (None if unchanged else started, "unmaterialized_since")]
            db.execute(
                "DELETE FROM recent WHERE state = 2 AND id IN (SELECT id FROM (SELECT id, ROW_NUMBER()"
                " OVER (PARTITION BY serial ORDER BY id DESC) AS n FROM recent) WHERE n > ?)", (FRAMES_KEPT,))
            if unchanged:  # every day row is in the database: only today's and yesterday's stay in RAM
                db.execute("DELETE FROM energy_days WHERE day < ?", ((date.today() - timedelta(days=1)).isoformat(),))
        if compacted is not None:
            updates.append((compacted, "last_compaction"))
        db.executemany("UPDATE meta SET value = ? WHERE key = ?", updates)
    if meta["health"] != "ok":
        log.warning("the card takes writes again: %d queued readings written", snapshot.written)
        store._logged_failure = 0.0


def classify(exc: BaseException, data_dir: os.PathLike) -> tuple[str, str]:
    """``(state, message)`` for a failed write: the file system says whether it is read-only or full."""
    code = getattr(exc, "sqlite_errorcode", None)
    message = str(exc) or type(exc).__name__
    if read_only_fs(data_dir) or getattr(exc, "errno", None) == errno.EROFS:
        return "read-only", f"the data directory {data_dir} is on a read-only file system ({message})"
    try:
        st = os.statvfs(data_dir)
        full = st.f_bavail * st.f_frsize < 64 * 1024
    except OSError:
        full = False
    if full or getattr(exc, "errno", None) == errno.ENOSPC or (code is not None and code & 0xFF == 13):
        return "full", f"the file system of {data_dir} is full ({message})"
    return "error", message


def failed(store: "Store", exc: BaseException) -> None:
    state, message = classify(exc, store.data_dir)
    now = time.time()
    health = store.health()
    if health.state != state or health.message != message:
        db = store._db
        with transaction(db):
            db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                           [(state, "health"), (message, "health_message")]
                           + ([(now, "health_since")] if health.state != state else []))
    if time.monotonic() - store._logged_failure >= LOG_EVERY_SECONDS:
        store._logged_failure = time.monotonic()
        oldest = f", the oldest from {time.strftime('%H:%M:%S', time.localtime(health.oldest_queued))}" \
            if health.oldest_queued else ""
        log.error("cannot write to the card: %s; %d readings wait in memory%s", message, health.queued, oldest)


# --- compaction ------------------------------------------------------------------------------------

def compact_ram(db: sqlite3.Connection, now: float, full_resolution_days: int, keep_days: int) -> None:
    """The same rules for readings not yet in the database (waiting for long: the card was away)."""
    thin_before = now - full_resolution_days * 86400
    with transaction(db):
        db.execute("DELETE FROM recent WHERE state < 2 AND timestamp < ?", (now - keep_days * 86400,))
        db.execute(
            "DELETE FROM recent WHERE state < 2 AND timestamp < ? AND id NOT IN (SELECT id FROM"
            " (SELECT id, MAX(timestamp) FROM recent WHERE state < 2 AND timestamp < ?"
            " GROUP BY serial, CAST(timestamp / ? AS INTEGER)))", (thin_before, thin_before, BUCKET_SECONDS))


# --- the thread -------------------------------------------------------------------------------------

class Flusher:
    """One thread per process runs every open store's timers: journal records and database
    commits when due, retries, compaction. It holds the stores weakly and ends when none is left."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._stores: "weakref.WeakSet[Store]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, store: "Store") -> None:
        if self._pid != os.getpid():  # a forked child: the parent's thread and stores are not here
            self._reset()
        with self._lock:
            self._stores.add(store)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="store-flusher", daemon=True)
                self._thread.start()

    def discard(self, store: "Store") -> None:
        with self._lock:
            self._stores.discard(store)

    def _run(self) -> None:
        _name_os_thread(b"solargw-store")
        while True:
            with self._lock:
                stores = list(self._stores)
                if not stores:
                    self._thread = None
                    return
            tick = min(store.tick for store in stores)
            for store in stores:
                try:
                    store._maintain()
                except Exception:  # one broken store must not stop the others' commits
                    log.exception("store maintenance failed for %s", store.path)
            del stores
            self._wake.wait(tick)


def _name_os_thread(name: bytes) -> None:
    """The thread's name as ``top -H`` and /proc/PID/task/TID/comm show it (Linux; Python sets
    only its own name before 3.14)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


FLUSHER = Flusher()
