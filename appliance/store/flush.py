"""Write-behind: the RAM working copy reaches the card in group commits.

One flush is one card transaction, run on a card connection that has the working copy
attached read-only (``ram``): ``BEGIN IMMEDIATE`` takes the card's write lock and a
consistent snapshot of the working copy, without locking it, so ingest never waits for
the card. In it:

- the queued readings become history rows: per inverter, the newest reading of each
  ``history_seconds`` bucket (a bucket split across two flushes keeps the newer);
- the ledger, the per-day energy and the inverters are copied, only the rows that differ
  (column lists come from the working copy, so columns added later are copied too);
- every ``DIAGNOSTICS_EVERY`` flush periods, and at close: the last-seen times, the latest
  readings, the counters and the rejected frames.

Then the working copy marks the queued readings as written (keeping the newest
``FRAMES_KEPT`` per inverter for the diagnostics pages). A crash between the card's
commit and that mark only means the next flush finds the same rows on the card and
writes nothing for them.

A flush that fails (read-only or full file system, I/O error) changes nothing: the
readings stay queued, ``health`` says why, the log says so once a minute, and the next
attempt (every few seconds) writes everything once the card takes it.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Iterable

from appliance.store import codec
from appliance.store.card import read_only_fs
from appliance.store.schema import card_uri, columns, primary_key

if TYPE_CHECKING:
    from appliance.store.core import Store

log = logging.getLogger("appliance.store")

BUCKET_SECONDS = 900
"""History older than ``full_resolution_days`` keeps one reading per inverter per 15 minutes."""
DIAGNOSTICS_EVERY = 12
"""Diagnostics reach the card every this many flush periods (an hour with the default 300 s)."""
FRAMES_KEPT = 20
"""Raw frames kept per inverter (in RAM only) for the inverter page."""
LOG_EVERY_SECONDS = 60.0
RETRY_SECONDS = 5.0

READINGS_TIER = ("inverters", "ledger", "energy_days")
DIAGNOSTICS_TIER = ("latest", "counters")


@dataclass(frozen=True)
class Snapshot:
    last_id: int
    changes: int
    diagnostics_changes: int
    written: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def attach_ram(db: sqlite3.Connection, store: "Store") -> None:
    if not any(row[1] == "ram" for row in db.execute("PRAGMA database_list")):
        db.execute("ATTACH DATABASE ? AS ram", (card_uri(store.ram_path, read_only=True),))


def mirror(db: sqlite3.Connection, table: str, *, ignore: Iterable[str] = ()) -> None:
    """Copy the working copy's rows of ``table`` that differ from the card's (``ignore``: columns
    whose changes alone are not worth a write)."""
    cols = columns(db, table, "ram")
    key = primary_key(db, table, "ram")
    compared = [c for c in cols if c not in set(ignore)]
    same = " AND ".join(f"c.{_quote(c)} IS r.{_quote(c)}" for c in compared)
    updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in cols if c not in key)
    names = ", ".join(_quote(c) for c in cols)
    db.execute(
        f"INSERT INTO main.{table} ({names}) SELECT {', '.join('r.' + _quote(c) for c in cols)} FROM ram.{table} r"
        f" WHERE NOT EXISTS (SELECT 1 FROM main.{table} c WHERE {same})"
        f" ON CONFLICT ({', '.join(_quote(k) for k in key)}) DO UPDATE SET {updates}"
    )


def write_history(db: sqlite3.Connection, queued: list[sqlite3.Row], resolution: float) -> int:
    """The queued readings' history rows on the card; returns how many were written."""
    picks: dict[tuple[str, float], sqlite3.Row] = {}
    for row in queued:
        bucket = math.floor(row["timestamp"] / resolution) if resolution else row["timestamp"]
        best = picks.get((row["serial"], bucket))
        if best is None or (row["timestamp"], row["id"]) >= (best["timestamp"], best["id"]):
            picks[(row["serial"], bucket)] = row
    written = 0
    for (serial, bucket), row in sorted(picks.items(), key=lambda item: (item[1]["timestamp"], item[1]["id"])):
        if resolution:
            where, args = "timestamp >= ? AND timestamp < ?", (bucket * resolution, (bucket + 1) * resolution)
        else:
            where, args = "timestamp = ?", (row["timestamp"],)
        there = db.execute(f"SELECT id, timestamp FROM main.readings WHERE {where} AND serial = ?",
                           (*args, serial)).fetchall()
        if any(other["timestamp"] >= row["timestamp"] for other in there):
            continue
        for other in there:
            db.execute("DELETE FROM main.readings WHERE id = ?", (other["id"],))
        db.execute("INSERT INTO main.readings (serial, timestamp, kind, fields, frame) VALUES (?,?,?,?,'')",
                   (serial, row["timestamp"], row["kind"], codec.pack(row["fields"])))
        written += 1
    return written


def copy(db: sqlite3.Connection, resolution: float, *, diagnostics: bool) -> Snapshot:
    """Everything the working copy (``ram``) has that the card (``main``) lacks, inside the
    caller's transaction."""
    meta = {row[0]: row[1] for row in db.execute("SELECT key, value FROM ram.meta")}
    queued = db.execute(
        "SELECT id, serial, timestamp, kind, fields FROM ram.recent WHERE flushed = 0 ORDER BY id").fetchall()
    written = write_history(db, queued, resolution)
    for table in READINGS_TIER:
        mirror(db, table, ignore=() if diagnostics or table != "inverters" else ("last_seen",))
    if diagnostics:
        for table in DIAGNOSTICS_TIER:
            mirror(db, table)
        db.execute("DELETE FROM main.rejected WHERE id NOT IN (SELECT id FROM ram.rejected)")
        mirror(db, "rejected")
    return Snapshot(queued[-1]["id"] if queued else 0, int(meta.get("changes") or 0),
                    int(meta.get("diagnostics_changes") or 0), written)


def flush(store: "Store", *, diagnostics: bool) -> bool:
    """One group commit of everything waiting; False (and ``health`` says why) when the card
    could not take it."""
    started = time.time()
    try:
        db = store.card.writer()
        attach_ram(db, store)
        db.execute("BEGIN IMMEDIATE")
        try:
            snapshot = copy(db, store.history_seconds, diagnostics=diagnostics)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except (sqlite3.Error, OSError) as exc:
        store.card.reset()
        failed(store, exc)
        return False
    settle(store, snapshot, diagnostics=diagnostics, started=started)
    return True


def settle(store: "Store", snapshot: Snapshot, *, diagnostics: bool, started: float) -> None:
    """The working copy's side of a flush that reached the card."""
    db = store._db
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("UPDATE recent SET flushed = 1 WHERE flushed = 0 AND id <= ?", (snapshot.last_id,))
        db.execute(
            "DELETE FROM recent WHERE flushed = 1 AND id IN (SELECT id FROM (SELECT id, ROW_NUMBER()"
            " OVER (PARTITION BY serial ORDER BY id DESC) AS n FROM recent) WHERE n > ?)", (FRAMES_KEPT,))
        meta = {row[0]: row[1] for row in db.execute("SELECT key, value FROM meta")}
        unchanged = int(meta["changes"] or 0) == snapshot.changes
        db.execute("UPDATE meta SET value = ? WHERE key = 'dirty_since'", (None if unchanged else started,))
        if unchanged:  # every day row was just written: only today's and yesterday's stay in RAM
            db.execute("DELETE FROM energy_days WHERE day < ?", ((date.today() - timedelta(days=1)).isoformat(),))
        if diagnostics:
            same = int(meta["diagnostics_changes"] or 0) == snapshot.diagnostics_changes
            db.execute("UPDATE meta SET value = ? WHERE key = 'diagnostics_dirty_since'",
                       (None if same else started,))
        was = meta["health"]
        db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                       [(time.time(), "last_flush"), ("ok", "health"), ("", "health_message")]
                       + ([(time.time(), "health_since")] if was != "ok" else []))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if was != "ok":
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


class transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def compact_card(db: sqlite3.Connection, now: float, full_resolution_days: int, keep_days: int) -> None:
    """Move history older than ``full_resolution_days`` to the 15-minute table (appended, like the
    group commits; deleting from the old end frees whole pages) and drop what is past ``keep_days``."""
    thin_before = math.floor((now - full_resolution_days * 86400) / BUCKET_SECONDS) * BUCKET_SECONDS
    drop_before = now - keep_days * 86400
    with transaction(db):
        if db.execute("SELECT 1 FROM readings WHERE timestamp < ? LIMIT 1", (thin_before,)).fetchone():
            db.execute(
                "INSERT INTO readings_coarse (serial, timestamp, kind, fields, frame)"
                " SELECT serial, MAX(timestamp), kind, fields, '' FROM readings WHERE timestamp < ? AND timestamp >= ?"
                " GROUP BY serial, CAST(timestamp / ? AS INTEGER) ORDER BY 2",
                (thin_before, drop_before, BUCKET_SECONDS))
            db.execute("DELETE FROM readings WHERE timestamp < ?", (thin_before,))
        db.execute("DELETE FROM readings_coarse WHERE timestamp < ?", (drop_before,))


def compact_ram(db: sqlite3.Connection, now: float, full_resolution_days: int, keep_days: int) -> None:
    """The same rules for readings still queued in RAM (queued for long: the card was away)."""
    thin_before = now - full_resolution_days * 86400
    with transaction(db):
        db.execute("DELETE FROM recent WHERE flushed = 0 AND timestamp < ?", (now - keep_days * 86400,))
        db.execute(
            "DELETE FROM recent WHERE flushed = 0 AND timestamp < ? AND id NOT IN (SELECT id FROM"
            " (SELECT id, MAX(timestamp) FROM recent WHERE flushed = 0 AND timestamp < ?"
            " GROUP BY serial, CAST(timestamp / ? AS INTEGER)))", (thin_before, thin_before, BUCKET_SECONDS))


class Flusher:
    """One thread per process runs every open store's timers: group commits when due, retries,
    hourly compaction. It holds the stores weakly and ends when none is left."""

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
            del stores, store
            self._wake.wait(tick)


FLUSHER = Flusher()


def meta_value(meta: dict[str, Any], key: str) -> float | None:
    value = meta.get(key)
    return None if value is None else float(value)
