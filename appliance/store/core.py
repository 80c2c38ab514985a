"""The readings store: a working copy in RAM, written behind to the SD card in group commits.

DESIGN (figures from ``python -m bench sdwear``, 20 NEP inverters every 5 min and 20
Enecsys every 60 s over a 14-hour day):

- Before, every reading was its own transaction on the card: ~40 KiB written per reading
  (about 10 WAL pages: the row, a (serial, time) index with one insertion point per
  inverter, the ledger, counters, latest, status, the change log, then the checkpoint
  copy), ~865 MB a day, plus 32 KiB a minute of status heartbeats when idle.
- Now every write lands in a second SQLite database on a RAM file system
  (``/run/solargw`` on the appliance; ``[data] ram_dir``): inverters, ledger, today's energy,
  latest values, counters, status, the change log, rejected frames, the newest frames and
  the readings not yet on the card. Both writers (web for NEP, zigbee for Enecsys) and
  every reader use it, so the UI, /metrics, /data.json and MQTT see a reading the moment
  it is recorded. The ledger is updated in the same transaction as the reading.
- The card gets a group commit when the oldest unwritten change is ``flush_seconds`` old
  (the loss window, default 300 s), every ``DIAGNOSTICS_EVERY`` periods the diagnostics,
  and everything at close. Idle, nothing is written at all: status and heartbeats stay in
  RAM. History is written at ``history_seconds`` resolution (the newest reading of each
  5-minute bucket per inverter; 0 keeps every reading), fields deflated (``codec``), in a
  table indexed by time only, in 1 KiB pages (``schema``); raw frames stay in RAM (the
  newest 20 per inverter).
- A service restart loses nothing (the RAM file system outlives the process); a power cut
  loses at most the last ``flush_seconds`` (the card's commits are fsynced: synchronous=FULL).
  Neither can corrupt a database (SQLite transactions on both sides) or make a total go
  down: the ledger on the card is always the one that matches the history written with
  it; after a power cut it resumes from there, and the inverters' own counters, which kept
  counting, bring it to the exact total at their next report (``InverterInfo.resumed``
  until then).
- The working copy is bounded: queued readings are capped (``queue_limit``, thinned to the
  history resolution first), frames, rejected frames and the change log are capped, and
  only today's and yesterday's energy rows stay once written.
- A card that refuses writes (remounted read-only, full) loses nothing: readings stay
  queued, ``health()`` says what is wrong and since when, the log says it once a minute,
  and the first commit that succeeds writes the queue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from appliance.energy import LEDGER_FIELDS, LedgerState, advance
from appliance.pvoutput.api import Status
from appliance.reading import Reading
from appliance.store import codec, history, flush as writeback
from appliance.store.batch import Batch
from appliance.store.card import Card, StoreError
from appliance.store.journal import Journal
from appliance.store.records import InverterInfo, LatestReading, Recorded, RejectedFrame, StoreHealth
from appliance.store.schema import (
    DB_NAME, JOURNAL_NAME, RAM, RAM_DB_NAME, SHARED, add_columns, columns, connect, create, setup_ram,
)

if TYPE_CHECKING:
    from appliance.settings import Settings

log = logging.getLogger("appliance.store")

FLUSH_SECONDS = 300
HISTORY_SECONDS = 300
REJECTED_KEPT = 500
QUEUE_LIMIT = 20_000
"""Readings waiting for the card, at most (~450 bytes each in RAM). Past it the queue is thinned
to what the card would keep anyway (one per inverter per ``history_seconds``: three days of the
reference load), then the oldest are dropped and counted (``readings_dropped``)."""
COMPACT_EVERY_SECONDS = 3600
"""History compaction rides along with the database commits, at most this often..."""
COMPACT_ALONE_SECONDS = 86400
"""...and runs on its own when there has been no commit for this long."""
SEEDED = ("inverters", "ledger", "latest", "counters", "rejected", "pvoutput_queue")
"""Tables the working copy starts from, whole, when it is made (after a reboot)."""


_encode = json.JSONEncoder(separators=(",", ":"), default=list).encode


def _json(value: Mapping[str, Any]) -> str:
    return _encode(value if type(value) is dict else dict(value))


def local_day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).date().isoformat()


APPLIANCE_RAM_DIR = Path("/run/solargw")
"""The appliance's RAM directory (tmpfs; made at boot by systemd-tmpfiles, shared by the services)."""


def ram_path(data_dir: Path, ram_dir: str | os.PathLike | None = None) -> Path:
    """Where the working copy of ``data_dir`` lives: in ``ram_dir``; else, for the appliance's own data
    directory, in ``APPLIANCE_RAM_DIR`` when it exists; else beside the database (development: no
    write is saved then)."""
    from appliance.settings import DataSettings

    chosen = Path(ram_dir) if ram_dir else None
    if chosen is None and data_dir == Path(DataSettings.dir) and APPLIANCE_RAM_DIR.is_dir():
        chosen = APPLIANCE_RAM_DIR
    if chosen is None or chosen.resolve() == data_dir.resolve():
        return data_dir / RAM_DB_NAME
    tag = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]  # one per data directory
    return chosen / f"{Path(RAM_DB_NAME).stem}-{tag}.db"


class Store:
    def __init__(self, data_dir: Path | str, *, full_resolution_days: int = 7, keep_days: int = 730,
                 ram_dir: str | os.PathLike | None = None, flush_seconds: float = FLUSH_SECONDS,
                 history_seconds: float = HISTORY_SECONDS, queue_limit: int = QUEUE_LIMIT, autoflush: bool = True):
        """``autoflush`` False: no background writes; the caller writes with :meth:`flush` (tools,
        tests)."""
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.ram_path = ram_path(self.data_dir, ram_dir)
        self.full_resolution_days = full_resolution_days
        self.keep_days = keep_days
        self.flush_seconds = max(0.05, float(flush_seconds))  # below a second: benches, tests
        self.history_seconds = max(0.0, float(history_seconds))
        self.queue_limit = queue_limit
        self.autoflush = autoflush
        self.tick = min(writeback.RETRY_SECONDS, self.flush_seconds / 5)
        """How often the flusher looks at this store (a commit is due ``flush_seconds`` after the
        oldest unwritten change, give or take one tick)."""
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._flush_lock = threading.RLock()
        self._logged_failure = 0.0
        self._next_attempt = 0.0
        self._registered = False
        self.card = Card(self.path)
        self.journal = Journal(self.data_dir / JOURNAL_NAME)
        try:
            if self.card.writable:
                self._add_ledger_columns(self.card.connection())
            self._open_ram()
        except BaseException:
            self.close_connections()
            raise
        self._register()

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Store":
        data = settings.data
        return cls(
            settings.data_dir,
            full_resolution_days=data.full_resolution_days,
            keep_days=data.keep_days,
            ram_dir=getattr(data, "ram_dir", "") or None,
            flush_seconds=getattr(data, "flush_seconds", FLUSH_SECONDS),
            history_seconds=getattr(data, "history_seconds", HISTORY_SECONDS),
        )

    # -- connections -------------------------------------------------------------------
    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection to the working copy (sqlite3 connections must not be shared by
        threads at once)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(str(self.ram_path))
            with self._connections_lock:
                self._connections.append(db)
            setup_ram(db)
            self._local.db = db
        return db

    def _write(self, *, register: bool = True) -> Batch:
        """This thread's open batch, or a new one (``with store._write() as batch:``)."""
        batch = getattr(self._local, "batch", None)
        if batch is None:
            if register and not self._registered:
                self._register()
            local = self._local
            batch = local.batch = Batch(self._db, lambda: setattr(local, "batch", None))
        return batch

    def batch(self) -> Batch:
        """``with store.batch():`` every write on this thread inside is one transaction of the working
        copy (:mod:`appliance.store.batch`): a burst of reports costs one. A write that fails inside
        breaks the batch: nothing of it is committed and :class:`~appliance.store.batch.BatchFailed`
        is raised at its end (write the items one by one then)."""
        return self._write()

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once this thread's open batch is committed (never if it is rolled back);
        at once when none is open."""
        batch = getattr(self._local, "batch", None)
        if batch is None:
            callback()
        else:
            batch.after_commit(callback)

    def _register(self) -> None:
        if self.autoflush:
            self._registered = True
            writeback.FLUSHER.add(self)

    def _open_ram(self) -> None:
        directory = self.ram_path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.ram_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create the working copy {self.ram_path}: {exc.strerror}") from None
        try:
            db = self._db
            create(db, SHARED, RAM)
            self._add_ledger_columns(db)
            self._adopt_card(db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the working copy {self.ram_path}: {exc}") from None

    def _adopt_card(self, db: sqlite3.Connection) -> None:
        """Fill a new working copy from the card (after a reboot), or one made for another database."""
        identity = self.card.identity()
        if self._meta(db).get("card") == identity:
            return
        with writeback.transaction(db):
            before = self._meta(db).get("card")
            if before == identity:
                return
            if before is not None:
                log.warning("the working copy %s was made for another database: starting it again from %s",
                            self.ram_path, self.path)
                for table in (*SEEDED, "energy_days", "recent", "resumed", "changes", "status"):
                    db.execute(f"DELETE FROM {table}")
            self._seed(db)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('card', ?)", (identity,))
            replayed = int(self._meta(db)["journal_seq"] or 0)
            if replayed:  # the services stopped without their last commit: a power cut, a crash of all
                log.info("working copy %s started from %s and %d journal records", self.ram_path, self.path, replayed)

    def _seed(self, db: sqlite3.Connection) -> None:
        """The database's tables, then the journal's records since its last commit (a power cut
        loses at most what came after the last record)."""
        card = self.card.connection()
        yesterday = (datetime.now().date() - timedelta(days=1)).isoformat()
        for table, where, args in [*((t, "", ()) for t in SEEDED), ("energy_days", " WHERE day >= ?", (yesterday,))]:
            rows = card.execute(f"SELECT * FROM {table}{where}", args)
            names = [d[0] for d in rows.description]
            wanted = [n for n in names if n in set(columns(db, table))]
            picks = [names.index(n) for n in wanted]
            db.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(wanted)}) VALUES ({', '.join('?' * len(wanted))})",
                           ([row[i] for i in picks] for row in rows))
        epoch = int(writeback.read_meta(card).get("journal_epoch") or 0)
        sequence = writeback.replay(self, db, epoch)
        # Last-seen times and latest values reach the database with its commits; the history (and the
        # journal's) may be newer: the newest reading of each inverter tells what they missed.
        newest = {row["serial"]: row for row in history.newest(card)}
        for row in db.execute("SELECT serial, MAX(timestamp) AS timestamp, kind, fields FROM recent GROUP BY serial"):
            if row["serial"] not in newest or row["timestamp"] > newest[row["serial"]]["timestamp"]:
                newest[row["serial"]] = row
        for row in newest.values():
            db.execute("UPDATE inverters SET last_seen = MAX(last_seen, ?) WHERE serial = ?",
                       (row["timestamp"], row["serial"]))
            db.execute(
                "INSERT INTO latest SELECT serial, ?, ?, model, 0, ?, '{}', '', '' FROM inverters WHERE serial = ?"
                " ON CONFLICT(serial) DO UPDATE SET timestamp=excluded.timestamp, kind=excluded.kind,"
                " fields=excluded.fields, raw='{}', frame='', source='' WHERE excluded.timestamp > latest.timestamp",
                (row["timestamp"], row["kind"], _json(codec.unpack(row["fields"])), row["serial"]))
        # The ledger on the card may be a few minutes behind what was published before the RAM was lost.
        db.execute("INSERT OR IGNORE INTO resumed SELECT serial FROM ledger")
        db.execute("DELETE FROM pending")  # all of it is on the card
        db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                       [(epoch, "journal_epoch"), (sequence, "journal_seq"), (self.journal.end(epoch), "journal_offset")]
                       + ([(time.time(), "unmaterialized_since")] if sequence else []))

    def close_connections(self) -> None:
        """Close every thread's connections without writing anything (as if the process died)."""
        writeback.FLUSHER.discard(self)
        with self._flush_lock:  # not under the flusher's feet
            self._registered = False
            with self._connections_lock:
                connections, self._connections = self._connections, []
                self._local = threading.local()
            for db in connections:
                db.close()
            self.card.close()

    def close(self) -> None:
        """Write everything waiting to the database, then close every thread's connection; a later
        call opens a fresh one. The working copy stays for the next start."""
        writeback.FLUSHER.discard(self)
        self._registered = False
        with self._flush_lock:
            try:
                meta = self._meta()
                if meta.get("dirty_since") is not None or meta.get("unmaterialized_since") is not None:
                    writeback.materialize(self)
            except sqlite3.Error:
                log.exception("writing the working copy to the card at close")
            self.close_connections()

    # -- the write-behind ------------------------------------------------------------------
    def flush(self) -> bool:
        """Write everything waiting to the database now; False when the card refused (see ``health``)."""
        with self._flush_lock:
            return writeback.materialize(self)

    def _maintain(self) -> None:
        """Called by the flusher thread every ``tick``: journal and database commits when due."""
        with self._flush_lock:
            if (self.autoflush and not self._registered) or time.monotonic() < self._next_attempt:
                return
            now = time.time()
            meta = self._meta()
            since_compaction = now - float(meta.get("last_compaction") or 0)
            done = True
            if self._due(meta.get("unmaterialized_since"), self.flush_seconds * writeback.MATERIALIZE_EVERY, now):
                compact = since_compaction >= COMPACT_EVERY_SECONDS  # in the same commit: no extra one
                done = writeback.materialize(self, compact_now=now if compact else None, diagnostics=False)
            elif self._due(meta.get("dirty_since"), self.flush_seconds, now):
                done = writeback.journal_flush(self)
            elif since_compaction >= COMPACT_ALONE_SECONDS and meta.get("health") == "ok":
                self.compact(now)  # nothing reported for a day: compact anyway
            if not done:
                self._next_attempt = time.monotonic() + writeback.RETRY_SECONDS

    def _due(self, since: Any, period: float, now: float) -> bool:
        return since is not None and (now - float(since) >= period - self.tick or now < float(since) - 60)

    def _meta(self, db: sqlite3.Connection | None = None) -> dict[str, Any]:
        return writeback.read_meta(db or self._db)

    def health(self) -> StoreHealth:
        """Whether the card takes the writes, and what waits for it (every service sees the same: it
        lives in the working copy)."""
        db = self._db
        meta = self._meta(db)
        queued, oldest = db.execute("SELECT COUNT(*), MIN(timestamp) FROM recent WHERE state = 0").fetchone()
        return StoreHealth(
            state=meta.get("health") or "ok", since=writeback.meta_value(meta, "health_since"), queued=queued,
            oldest_queued=oldest, message=meta.get("health_message") or "",
            last_flush=writeback.meta_value(meta, "last_flush"), journal_records=int(meta.get("journal_records") or 0),
            commits=int(meta.get("commits") or 0))

    # -- writing ---------------------------------------------------------------------------
    # Each write joins this thread's batch (``batch``): what it does once per transaction (counters,
    # the change log, ``mark``: noting that the card has something to get) it asks of the batch.
    def record(self, reading: Reading, source: str = "", also_count: tuple[str, ...] = ()) -> Recorded:
        """Store one decoded reading: inverter, latest, history and the energy ledger, atomically.

        ``also_count`` names counters (of the reading's family) bumped in the same transaction:
        one transaction per packet, or per batch (in RAM; the card gets them in the next group commit)."""
        if not reading.checksum_ok:
            raise ValueError(f"refusing a frame that failed its checksum (serial {reading.serial})")
        ts, serial = reading.timestamp, reading.serial
        delta, info = 0.0, None
        with self._write() as batch:
            db = batch.db
            inverter = self._upsert_inverter(db, reading)
            if reading.energy is not None:
                day = local_day(ts)
                delta, lifetime_wh, day_wh = self._advance_ledger(db, reading, ts, day)
                if day == local_day(time.time()):  # (else: around midnight, asked below)
                    info = InverterInfo(**inverter, lifetime_wh=lifetime_wh, energy_today_wh=day_wh)
            if reading.kind in ("report", "alarm"):
                fields = _json(reading.fields)
                db.execute(
                    "INSERT INTO latest VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(serial) DO UPDATE SET"
                    " timestamp=excluded.timestamp, kind=excluded.kind, model=excluded.model,"
                    " model_guessed=excluded.model_guessed, fields=excluded.fields, raw=excluded.raw,"
                    " frame=excluded.frame, source=excluded.source WHERE excluded.timestamp >= latest.timestamp",
                    (serial, ts, reading.kind, reading.model, int(reading.model_guessed),
                     fields, _json(reading.raw), reading.frame.hex(), source),
                )
                queued = db.execute(
                    "INSERT INTO recent (serial, timestamp, kind, fields, frame) VALUES (?,?,?,?,?)",
                    (serial, ts, reading.kind, fields, reading.frame),
                ).lastrowid
                if queued % 100 == 0:
                    self._bound_queue(batch)
            for name in ("readings_recorded", *also_count):
                batch.bump(name, reading.family)
            batch.changed(serial, ts)
            batch.mark()
            if info is None:
                info = self._inverter(db, serial)
        assert info is not None
        return Recorded(reading, info, info.lifetime_wh, info.energy_today_wh, delta)

    def _day_row(self, db: sqlite3.Connection, serial: str, day: str) -> float:
        """The energy of ``serial`` on ``day``: brought from the card into the working copy before
        adding to it (the working copy keeps only today's and yesterday's once written). When the
        card has none either, a row of 0 Wh starts the day in the working copy, so the card is not
        asked again at every reading of a dawn that makes nothing yet."""
        row = self.card.connection().execute(
            "SELECT * FROM energy_days WHERE serial=? AND day=?", (serial, day)).fetchone()
        if row is None:
            db.execute("INSERT INTO energy_days VALUES (?,?,0)", (serial, day))
            return 0.0
        db.execute(f"INSERT INTO energy_days ({', '.join(row.keys())}) VALUES ({', '.join('?' * len(row))})",
                   tuple(row))
        return row["wh"]

    def _bound_queue(self, batch: Batch) -> None:
        db = batch.db
        queued = db.execute("SELECT COUNT(*) FROM recent WHERE state < 2").fetchone()[0]
        if queued <= self.queue_limit:
            return
        if self.history_seconds:  # first what the card would not keep anyway
            db.execute(
                "DELETE FROM recent WHERE state < 2 AND id NOT IN (SELECT id FROM (SELECT id, MAX(timestamp)"
                " FROM recent WHERE state < 2 GROUP BY serial, CAST(timestamp / ? AS INTEGER)))",
                (self.history_seconds,))
            queued = db.execute("SELECT COUNT(*) FROM recent WHERE state < 2").fetchone()[0]
        excess = queued - self.queue_limit
        if excess > 0:
            db.execute("DELETE FROM recent WHERE id IN (SELECT id FROM recent WHERE state < 2 ORDER BY id LIMIT ?)",
                       (excess,))
            batch.bump("readings_dropped", "all", excess)
            log.error("the card has taken no writes for long: %d queued readings dropped (the oldest)", excess)

    def _upsert_inverter(self, db: sqlite3.Connection, reading: Reading) -> dict[str, Any]:
        """The inverter's row after the reading (``InverterInfo``'s fields but the energy)."""
        firmware = str(reading.fields.get("firmware", "")) if reading.kind == "info" else ""
        row = db.execute(
            "INSERT INTO inverters (serial, family, model, firmware, first_seen, last_seen)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(serial) DO UPDATE SET"
            " model = CASE WHEN excluded.model != '' THEN excluded.model ELSE inverters.model END,"
            " firmware = CASE WHEN excluded.firmware != '' THEN excluded.firmware ELSE inverters.firmware END,"
            " last_seen = MAX(inverters.last_seen, excluded.last_seen), removed = 0"
            " RETURNING serial, family, model, model_setting, name, firmware, first_seen, last_seen",
            (reading.serial, reading.family, reading.model, firmware, reading.timestamp, reading.timestamp),
        ).fetchone()
        return {"serial": row[0], "family": row[1], "model": row[2], "model_setting": row[3], "name": row[4],
                "firmware": row[5], "first_seen": row[6], "last_seen": row[7], "removed": False}

    @staticmethod
    def _add_ledger_columns(db: sqlite3.Connection) -> None:
        """A database or working copy made before a ledger field existed gets its column (NULL: the
        ledger upgrades it). A read-only card gets it with its first commit (``flush.mirror``)."""
        def missing() -> bool:
            have = set(columns(db, "ledger"))
            return any(name not in have for name in LEDGER_FIELDS)

        if missing():  # checked again inside the transaction: another process may be at it too
            with writeback.transaction(db):
                add_columns(db, "ledger", list(LEDGER_FIELDS), declared="REAL")

    _LEDGER_SQL = (
        "SELECT (SELECT wh FROM energy_days WHERE serial = ?1 AND day = ?2),"
        " (SELECT 1 FROM resumed WHERE serial = ?1), l.serial, "
        + ", ".join(f"l.{name}" for name in LEDGER_FIELDS) + " FROM (SELECT 1) LEFT JOIN ledger l ON l.serial = ?1"
    )
    _LEDGER_WRITE = (  # an upsert, not INSERT OR REPLACE: the row keeps its rowid (issue 15)
        f"INSERT INTO ledger (serial, {', '.join(LEDGER_FIELDS)}) VALUES (?{', ?' * len(LEDGER_FIELDS)})"
        " ON CONFLICT(serial) DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in LEDGER_FIELDS)
    )

    def _advance_ledger(self, db: sqlite3.Connection, reading: Reading, ts: float,
                        day: str) -> tuple[float, float, float]:
        """Apply the reading's counter: (energy added, lifetime total, energy on ``day``) after it."""
        serial = reading.serial
        day_wh, resumed, stored, *values = db.execute(self._LEDGER_SQL, (serial, day)).fetchone()
        if day_wh is None:
            day_wh = self._day_row(db, serial, day)
        state = LedgerState(*values) if stored is not None else LedgerState()
        new, delta = advance(state, reading.energy, ts)  # type: ignore[arg-type]
        if new != state or stored is None:
            db.execute(self._LEDGER_WRITE, (serial, *(getattr(new, name) for name in LEDGER_FIELDS)))
        if delta > 0:
            db.execute(
                "INSERT INTO energy_days VALUES (?,?,?) ON CONFLICT(serial, day) DO UPDATE SET wh = wh + excluded.wh",
                (serial, day, delta))
            day_wh += delta
        if resumed:
            db.execute("DELETE FROM resumed WHERE serial = ?", (serial,))
        return delta, new.total_wh, day_wh

    def reject(
        self,
        frame: bytes = b"",
        family: str | None = None,
        source: str = "",
        reason: str = "",
        timestamp: float | None = None,
        also_count: tuple[str, ...] = (),
    ) -> None:
        """Keep a frame that could not be recorded, for diagnostics (the newest REJECTED_KEPT);
        ``also_count`` as for :meth:`record`."""
        ts = time.time() if timestamp is None else timestamp
        with self._write() as batch:
            rejected = batch.db.execute(
                "INSERT INTO rejected (timestamp, family, source, reason, frame) VALUES (?,?,?,?,?)",
                (ts, family, source, reason, frame[:512].hex()),
            ).lastrowid
            batch.db.execute("DELETE FROM rejected WHERE id <= ?", (rejected - REJECTED_KEPT,))
            for name in ("packets_rejected", *also_count):
                batch.bump(name, family or "unknown")
            batch.mark()

    def count(self, name: str, family: str, n: int = 1) -> None:
        with self._write() as batch:
            batch.bump(name, family, n)
            batch.mark()

    def rename(self, serial: str, name: str) -> None:
        self._update_inverter(serial, "name", name.strip()[:64])

    def set_model(self, serial: str, model: str) -> None:
        self._update_inverter(serial, "model_setting", model)

    def remove(self, serial: str) -> None:
        """Hide an inverter (it comes back if it reports again); its energy ledger is kept."""
        self._update_inverter(serial, "removed", 1)

    def _update_inverter(self, serial: str, column: str, value: Any) -> None:
        with self._write() as batch:
            cursor = batch.db.execute(f"UPDATE inverters SET {column}=? WHERE serial=?", (value, serial))
            if cursor.rowcount == 0:
                raise KeyError(serial)
            batch.changed(serial)
            batch.mark(urgent_by=time.time() - self.flush_seconds)

    def set_status(self, component: str, data: Mapping[str, Any]) -> None:
        """A service's live status (RAM only: heartbeats never reach the card)."""
        with self._write(register=False) as batch:
            batch.db.execute(
                "INSERT INTO status VALUES (?,?,?) ON CONFLICT(component) DO UPDATE SET"
                " timestamp=excluded.timestamp, data=excluded.data",
                (component, time.time(), _json(data)),
            )

    def compact(self, now: float | None = None) -> None:
        """Thin old history to one reading per 15 minutes and drop what is past ``keep_days``
        (in the database when the card takes writes, and in RAM)."""
        now = time.time() if now is None else now
        db = self._db
        with writeback.transaction(db):
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_compaction'", (now,))
        writeback.compact_ram(db, now, self.full_resolution_days, self.keep_days)
        try:
            with self.journal.locked(), writeback.transaction(self.card.writer()) as card:
                history.compact(card, now, self.full_resolution_days, self.keep_days)
        except (sqlite3.Error, OSError) as exc:
            self.card.reset()
            log.warning("history not compacted: %s", exc)

    # -- reading -------------------------------------------------------------------------
    _INVERTER_SQL = (
        "SELECT i.*, COALESCE(l.total_wh, 0) AS lifetime_wh, COALESCE(d.wh, 0) AS energy_today_wh,"
        " r.serial IS NOT NULL AS resumed"
        " FROM inverters i LEFT JOIN ledger l ON l.serial = i.serial"
        " LEFT JOIN energy_days d ON d.serial = i.serial AND d.day = ?"
        " LEFT JOIN resumed r ON r.serial = i.serial"
    )

    @staticmethod
    def _to_info(row: sqlite3.Row) -> InverterInfo:
        return InverterInfo(
            serial=row["serial"], family=row["family"], model=row["model"], model_setting=row["model_setting"],
            name=row["name"], firmware=row["firmware"], first_seen=row["first_seen"], last_seen=row["last_seen"],
            lifetime_wh=row["lifetime_wh"], energy_today_wh=row["energy_today_wh"], removed=bool(row["removed"]),
            resumed=bool(row["resumed"]),
        )

    def _inverter(self, db: sqlite3.Connection, serial: str) -> InverterInfo | None:
        row = db.execute(self._INVERTER_SQL + " WHERE i.serial=?", (local_day(time.time()), serial)).fetchone()
        return self._to_info(row) if row else None

    def inverter(self, serial: str) -> InverterInfo | None:
        return self._inverter(self._db, serial)

    def inverters(self, include_removed: bool = False) -> list[InverterInfo]:
        where = "" if include_removed else " WHERE i.removed = 0"
        rows = self._db.execute(self._INVERTER_SQL + where + " ORDER BY i.family, i.serial", (local_day(time.time()),))
        return [self._to_info(row) for row in rows]

    def model_setting(self, serial: str) -> str:
        row = self._db.execute("SELECT model_setting FROM inverters WHERE serial=?", (serial,)).fetchone()
        return row[0] if row else "auto"

    def latest(self, include_removed: bool = False) -> dict[str, LatestReading]:
        sql = "SELECT l.* FROM latest l JOIN inverters i ON i.serial = l.serial"
        if not include_removed:
            sql += " WHERE i.removed = 0"
        return {
            row["serial"]: LatestReading(
                serial=row["serial"], timestamp=row["timestamp"], kind=row["kind"], model=row["model"],
                model_guessed=bool(row["model_guessed"]), fields=json.loads(row["fields"]),
                raw=json.loads(row["raw"]), frame_hex=row["frame"], source=row["source"],
            )
            for row in self._db.execute(sql)
        }

    def history(self, serial: str, start: float, end: float) -> list[tuple[float, dict[str, Any]]]:
        """Readings of ``serial`` between ``start`` and ``end``: the card's history, and the readings
        still queued in RAM (at full resolution until they are written)."""
        queued = self._db.execute(  # before the card: a flush in between then shows a row twice, not never
            "SELECT timestamp, fields FROM recent WHERE state < 2 AND serial = ? AND timestamp BETWEEN ? AND ?",
            (serial, start, end)).fetchall()
        points = {ts: codec.unpack(fields) for ts, fields in history.read(self.card.connection(), serial, start, end)}
        for ts, fields in queued:
            points[ts] = json.loads(fields)
        return sorted(points.items(), key=lambda point: point[0])

    def recent_frames(self, serial: str, limit: int = 20) -> list[tuple[float, str, str]]:
        rows = self._db.execute(
            "SELECT timestamp, kind, frame FROM recent WHERE serial=? ORDER BY id DESC LIMIT ?", (serial, limit)
        )
        return [(row[0], row[1], bytes(row[2]).hex()) for row in rows]

    def energy_per_day(self, serial: str | None = None, days: int = 30) -> list[tuple[str, float]]:
        since = (datetime.now().date() - timedelta(days=days - 1)).isoformat()
        sql, args = "SELECT serial, day, wh FROM energy_days WHERE day >= ?", [since]
        if serial is not None:
            sql, args = sql + " AND serial = ?", args + [serial]
        in_ram = self._db.execute(sql, args).fetchall()  # the newer values: applied last
        rows = {(row[0], row[1]): row[2] for row in self.card.connection().execute(sql, args)}
        rows.update({(row[0], row[1]): row[2] for row in in_ram})
        per_day: dict[str, float] = {}
        for (_, day), wh in rows.items():
            per_day[day] = per_day.get(day, 0.0) + wh
        return sorted(per_day.items())

    def rejected(self, limit: int = 100) -> list[RejectedFrame]:
        rows = self._db.execute("SELECT * FROM rejected ORDER BY id DESC LIMIT ?", (limit,))
        return [
            RejectedFrame(row["timestamp"], row["family"], row["source"], row["reason"], row["frame"]) for row in rows
        ]

    def counters(self) -> dict[tuple[str, str], int]:
        return {(row[0], row[1]): row[2] for row in self._db.execute("SELECT name, family, value FROM counters")}

    def status(self) -> dict[str, tuple[float, dict[str, Any]]]:
        return {row[0]: (row[1], json.loads(row[2])) for row in self._db.execute("SELECT * FROM status")}

    def changes_since(self, cursor: int | None) -> tuple[int, list[str]]:
        """Serials changed since ``cursor`` (None: start watching now) and the new cursor."""
        newest = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM changes").fetchone()[0]
        if cursor is None or cursor >= newest:
            return newest, []
        rows = self._db.execute("SELECT DISTINCT serial FROM changes WHERE id > ? ORDER BY serial", (cursor,))
        return newest, [row[0] for row in rows]

    def energy_of_day(self, day: str) -> dict[str, float]:
        """Every inverter's energy on one local day (``YYYY-MM-DD``), removed ones included."""
        sql = "SELECT serial, wh FROM energy_days WHERE day=?"
        in_ram = self._db.execute(sql, (day,)).fetchall()  # the newer values: applied last
        energy = {row[0]: row[1] for row in self.card.connection().execute(sql, (day,))}
        energy.update({row[0]: row[1] for row in in_ram})
        return energy

    # -- the PVOutput upload queue -------------------------------------------------------
    # One row per (system, date, time): made once (INSERT OR IGNORE), then settled once as
    # 'sent', 'refused' (PVOutput will not take it) or 'expired' (too old to send). Settled
    # rows stay until they are too old to send, so a status is never made, or sent, twice.
    # The queue is whole in the working copy, journaled like the ledger, deletions included in
    # the database commits.
    def pvoutput_enqueue(self, statuses: list[Status], made: float) -> int:
        """Queue statuses made at ``made`` (Unix time); one already made for its (system, date, time)
        is left as it is. Returns how many were queued."""
        with self._write() as batch:
            db = batch.db
            queued = db.executemany(  # rowcount: not the rows the triggers add, unlike total_changes
                "INSERT OR IGNORE INTO pvoutput_queue (system_id, date, time, energy_wh, power_w, temperature_c,"
                " voltage_v, made) VALUES (?,?,?,?,?,?,?,?)",
                [(s.system_id, s.date, s.time, s.energy_wh, s.power_w, s.temperature_c, s.voltage_v, made)
                 for s in statuses],
            ).rowcount
            if queued:
                batch.mark()
            return queued

    def pvoutput_pending(self, system_id: int, limit: int) -> list[Status]:
        """The system's oldest queued statuses, oldest first."""
        rows = self._db.execute(
            "SELECT system_id, date, time, energy_wh, power_w, temperature_c, voltage_v FROM pvoutput_queue"
            " WHERE system_id=? AND state='queued' ORDER BY date, time LIMIT ?", (system_id, limit))
        return [Status(*row) for row in rows]

    def pvoutput_settle(self, system_id: int, keys: list[tuple[str, str]], state: str, note: str = "",
                        when: float | None = None) -> None:
        """Mark queued statuses (``(date, time)`` keys) of one system ``sent``, ``refused`` or ``expired``."""
        if state not in ("sent", "refused", "expired"):
            raise ValueError(f"unknown queue state {state!r}")
        when = time.time() if when is None else when
        with self._write() as batch:
            db = batch.db
            db.executemany(
                "UPDATE pvoutput_queue SET state=?, settled=?, note=? WHERE system_id=? AND date=? AND time=?"
                " AND state='queued'", [(state, when, note[:300], system_id, d, t) for d, t in keys])
            batch.mark()

    def pvoutput_expire(self, oldest_date: str, when: float | None = None) -> int:
        """Settle as ``expired`` the queued statuses dated before ``oldest_date`` (``yyyymmdd``), and forget
        settled ones that old. Returns how many queued statuses expired."""
        when = time.time() if when is None else when
        with self._write() as batch:
            db = batch.db
            expired = db.execute(
                "UPDATE pvoutput_queue SET state='expired', settled=?, note='older than PVOutput takes'"
                " WHERE state='queued' AND date < ?", (when, oldest_date)).rowcount
            forgotten = db.execute("DELETE FROM pvoutput_queue WHERE state != 'queued' AND date < ?",
                                   (oldest_date,)).rowcount
            if expired or forgotten:
                batch.mark()
        return expired

    def pvoutput_queued(self) -> dict[int, int]:
        """Queued statuses per system (systems with none left out)."""
        rows = self._db.execute(
            "SELECT system_id, COUNT(*) FROM pvoutput_queue WHERE state='queued' GROUP BY system_id")
        return {system_id: count for system_id, count in rows}

    def pvoutput_summary(self) -> dict[int, dict[str, Any]]:
        """Per system: statuses queued, the last one sent and the last one refused (``date``, ``time``,
        ``settled`` when, ``note``)."""
        summary = {system_id: {"queued": 0, "last_sent": None, "last_refused": None}
                   for (system_id,) in self._db.execute("SELECT DISTINCT system_id FROM pvoutput_queue")}
        for system_id, count in self.pvoutput_queued().items():
            summary[system_id]["queued"] = count
        for state, key in (("sent", "last_sent"), ("refused", "last_refused")):
            # SQLite takes the bare columns from the row holding the MAX
            rows = self._db.execute("SELECT system_id, date, time, settled, note, MAX(date || time) FROM pvoutput_queue"
                                    " WHERE state=? GROUP BY system_id", (state,))
            for system_id, date, hhmm, settled, note, _ in rows:
                summary[system_id][key] = {"date": date, "time": hhmm, "settled": settled, "note": note}
        return summary

    def backup(self, destination: Path | str) -> None:
        """A consistent copy of everything, for export: the card's database (sqlite's online backup)
        with what waits in RAM written into the copy, not to the card, and the history's fields as
        plain JSON text."""
        target = sqlite3.connect(destination, isolation_level=None)
        try:
            self.card.connection().backup(target)
            target.row_factory = sqlite3.Row
            writeback.attach_ram(target, self)
            target.create_function("readable", 1, lambda stored: _json(codec.unpack(stored)), deterministic=True)
            with writeback.transaction(target):
                writeback.copy(target, self.history_seconds)
                for table, *_ in history.partitions(target):  # plain JSON for whoever opens the copy
                    target.execute(f"UPDATE {table} SET fields = readable(fields) WHERE typeof(fields) = 'blob'")
            target.execute("DETACH DATABASE ram")
        finally:
            target.close()
