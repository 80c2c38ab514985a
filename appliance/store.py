"""The readings store: one SQLite database (WAL mode) shared by both services.

The web collector and the Zigbee service write it from two processes at once;
every write is one short ``BEGIN IMMEDIATE`` transaction and readers never
block writers. ``synchronous=NORMAL`` in WAL mode keeps SD-card writes low: a
power cut can lose the last second of readings, never corrupt the file.

History is bounded: readings are kept at full resolution for
``full_resolution_days``, then thinned to one per ``BUCKET_SECONDS`` per
inverter, and dropped after ``keep_days``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from appliance.energy import LEDGER_FIELDS, LedgerState, advance
from appliance.pvoutput.api import Status
from appliance.reading import Reading

if TYPE_CHECKING:
    from appliance.settings import Settings

DB_NAME = "solargw.db"
BUCKET_SECONDS = 900
REJECTED_KEPT = 500
CHANGES_KEPT = 2000
COMPACT_EVERY_SECONDS = 3600

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL,
    timestamp REAL NOT NULL,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    frame TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_serial_time ON readings (serial, timestamp);
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


@dataclass(frozen=True)
class InverterInfo:
    serial: str
    family: str
    model: str
    model_setting: str
    name: str
    firmware: str
    first_seen: float
    last_seen: float
    lifetime_wh: float
    energy_today_wh: float
    removed: bool

    @property
    def display_name(self) -> str:
        return self.name or f"{'NEP' if self.family == 'nep' else 'Enecsys'} {self.serial}"


@dataclass(frozen=True)
class LatestReading:
    serial: str
    timestamp: float
    kind: str
    model: str
    model_guessed: bool
    fields: dict[str, Any]
    raw: dict[str, int]
    frame_hex: str
    source: str


@dataclass(frozen=True)
class Recorded:
    """What ``Store.record`` did with a reading: the ledger's view after it."""

    reading: Reading
    inverter: InverterInfo
    lifetime_wh: float
    energy_today_wh: float
    delta_wh: float


@dataclass(frozen=True)
class RejectedFrame:
    timestamp: float
    family: str | None
    source: str
    reason: str
    frame_hex: str


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), separators=(",", ":"), default=list)


def local_day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).date().isoformat()


class StoreError(RuntimeError):
    """The database cannot be opened or created; the message says where and why."""


class Store:
    def __init__(self, data_dir: Path | str, *, full_resolution_days: int = 7, keep_days: int = 730):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.full_resolution_days = full_resolution_days
        self.keep_days = keep_days
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._last_compaction = 0.0
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {self.data_dir}: {exc.strerror}") from None
        try:
            # The services share the database through their group (solargw-net runs as root):
            # SQLite would create it 0644 (minus the umask), and its -wal/-shm copy that mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create the database {self.path}: {exc.strerror}") from None
        try:
            self._db.executescript(SCHEMA)
            self._add_ledger_columns()
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Store":
        return cls(
            settings.data_dir,
            full_resolution_days=settings.data.full_resolution_days,
            keep_days=settings.data.keep_days,
        )

    # -- connections -------------------------------------------------------------------
    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared by threads at once)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            with self._connections_lock:
                self._connections.append(db)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _write(self) -> "_Transaction":
        return _Transaction(self._db)

    def close(self) -> None:
        """Close every thread's connection; a later call opens a fresh one."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for db in connections:
            db.close()

    # -- writing ---------------------------------------------------------------------------
    def record(self, reading: Reading, source: str = "", also_count: tuple[str, ...] = ()) -> Recorded:
        """Store one decoded reading: inverter, latest, history and the energy ledger, atomically.

        ``also_count`` names counters (of the reading's family) bumped in the same transaction:
        one SD-card commit per packet."""
        if not reading.checksum_ok:
            raise ValueError(f"refusing a frame that failed its checksum (serial {reading.serial})")
        ts = reading.timestamp
        delta = 0.0
        with self._write() as db:
            self._upsert_inverter(db, reading)
            if reading.energy is not None:
                delta = self._advance_ledger(db, reading, ts)
            if reading.kind in ("report", "alarm"):
                fields, raw = _json(reading.fields), _json(reading.raw)
                db.execute(
                    "INSERT INTO latest VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(serial) DO UPDATE SET"
                    " timestamp=excluded.timestamp, kind=excluded.kind, model=excluded.model,"
                    " model_guessed=excluded.model_guessed, fields=excluded.fields, raw=excluded.raw,"
                    " frame=excluded.frame, source=excluded.source WHERE excluded.timestamp >= latest.timestamp",
                    (reading.serial, ts, reading.kind, reading.model, int(reading.model_guessed),
                     fields, raw, reading.frame.hex(), source),
                )
                db.execute(
                    "INSERT INTO readings (serial, timestamp, kind, fields, frame) VALUES (?,?,?,?,?)",
                    (reading.serial, ts, reading.kind, fields, reading.frame.hex()),
                )
            for name in ("readings_recorded", *also_count):
                self._bump(db, name, reading.family)
            self._changed(db, reading.serial, ts)
            inverter = self._inverter(db, reading.serial)
        assert inverter is not None
        if time.time() - self._last_compaction > COMPACT_EVERY_SECONDS:
            self.compact()
        return Recorded(reading, inverter, inverter.lifetime_wh, inverter.energy_today_wh, delta)

    def _upsert_inverter(self, db: sqlite3.Connection, reading: Reading) -> None:
        firmware = str(reading.fields.get("firmware", "")) if reading.kind == "info" else ""
        db.execute(
            "INSERT INTO inverters (serial, family, model, firmware, first_seen, last_seen)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(serial) DO UPDATE SET"
            " model = CASE WHEN excluded.model != '' THEN excluded.model ELSE inverters.model END,"
            " firmware = CASE WHEN excluded.firmware != '' THEN excluded.firmware ELSE inverters.firmware END,"
            " last_seen = MAX(inverters.last_seen, excluded.last_seen), removed = 0",
            (reading.serial, reading.family, reading.model, firmware, reading.timestamp, reading.timestamp),
        )

    def _add_ledger_columns(self) -> None:
        """A database made before a ledger field existed gets its column (NULL: the ledger upgrades it)."""
        def missing(db: sqlite3.Connection) -> list[str]:
            have = {row[1] for row in db.execute("PRAGMA table_info(ledger)")}
            return [name for name in LEDGER_FIELDS if name not in have]

        if missing(self._db):  # checked again inside the transaction: another process may be at it too
            with self._write() as db:
                for name in missing(db):
                    db.execute(f"ALTER TABLE ledger ADD COLUMN {name} REAL")

    def _advance_ledger(self, db: sqlite3.Connection, reading: Reading, ts: float) -> float:
        columns = ", ".join(LEDGER_FIELDS)
        row = db.execute(f"SELECT {columns} FROM ledger WHERE serial=?", (reading.serial,)).fetchone()
        state = LedgerState(*row) if row else LedgerState()
        new, delta = advance(state, reading.energy, ts)
        db.execute(
            f"INSERT OR REPLACE INTO ledger (serial, {columns}) VALUES (?{', ?' * len(LEDGER_FIELDS)})",
            (reading.serial, *(getattr(new, name) for name in LEDGER_FIELDS)),
        )
        if delta > 0:
            db.execute(
                "INSERT INTO energy_days VALUES (?,?,?) ON CONFLICT(serial, day) DO UPDATE SET wh = wh + excluded.wh",
                (reading.serial, local_day(ts), delta),
            )
        return delta

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
        with self._write() as db:
            db.execute(
                "INSERT INTO rejected (timestamp, family, source, reason, frame) VALUES (?,?,?,?,?)",
                (ts, family, source, reason, frame[:512].hex()),
            )
            db.execute(
                "DELETE FROM rejected WHERE id <= (SELECT MAX(id) FROM rejected) - ?", (REJECTED_KEPT,)
            )
            for name in ("packets_rejected", *also_count):
                self._bump(db, name, family or "unknown")

    def count(self, name: str, family: str, n: int = 1) -> None:
        with self._write() as db:
            self._bump(db, name, family, n)

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, family: str, n: int = 1) -> None:
        db.execute(
            "INSERT INTO counters VALUES (?,?,?) ON CONFLICT(name, family) DO UPDATE SET value = value + excluded.value",
            (name, family, n),
        )

    @staticmethod
    def _changed(db: sqlite3.Connection, serial: str, ts: float | None = None) -> None:
        cursor = db.execute(
            "INSERT INTO changes (serial, timestamp) VALUES (?,?)", (serial, ts if ts is not None else time.time())
        )
        if cursor.lastrowid % 100 == 0:
            db.execute("DELETE FROM changes WHERE id <= ?", (cursor.lastrowid - CHANGES_KEPT,))

    def rename(self, serial: str, name: str) -> None:
        self._update_inverter(serial, "name", name.strip()[:64])

    def set_model(self, serial: str, model: str) -> None:
        self._update_inverter(serial, "model_setting", model)

    def remove(self, serial: str) -> None:
        """Hide an inverter (it comes back if it reports again); its energy ledger is kept."""
        self._update_inverter(serial, "removed", 1)

    def _update_inverter(self, serial: str, column: str, value: Any) -> None:
        with self._write() as db:
            cursor = db.execute(f"UPDATE inverters SET {column}=? WHERE serial=?", (value, serial))
            if cursor.rowcount == 0:
                raise KeyError(serial)
            self._changed(db, serial)

    def set_status(self, component: str, data: Mapping[str, Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO status VALUES (?,?,?) ON CONFLICT(component) DO UPDATE SET"
                " timestamp=excluded.timestamp, data=excluded.data",
                (component, time.time(), _json(data)),
            )

    def compact(self, now: float | None = None) -> None:
        """Thin old history to one reading per bucket and drop what is past ``keep_days``."""
        now = time.time() if now is None else now
        self._last_compaction = now
        thin_before = now - self.full_resolution_days * 86400
        drop_before = now - self.keep_days * 86400
        with self._write() as db:
            db.execute("DELETE FROM readings WHERE timestamp < ?", (drop_before,))
            db.execute(
                "DELETE FROM readings WHERE timestamp < ? AND id NOT IN ("
                " SELECT MAX(id) FROM readings WHERE timestamp < ?"
                " GROUP BY serial, CAST(timestamp / ? AS INTEGER))",
                (thin_before, thin_before, BUCKET_SECONDS),
            )

    # -- reading -------------------------------------------------------------------------
    _INVERTER_SQL = (
        "SELECT i.*, COALESCE(l.total_wh, 0) AS lifetime_wh, COALESCE(d.wh, 0) AS energy_today_wh"
        " FROM inverters i LEFT JOIN ledger l ON l.serial = i.serial"
        " LEFT JOIN energy_days d ON d.serial = i.serial AND d.day = ?"
    )

    @staticmethod
    def _to_info(row: sqlite3.Row) -> InverterInfo:
        return InverterInfo(
            serial=row["serial"], family=row["family"], model=row["model"], model_setting=row["model_setting"],
            name=row["name"], firmware=row["firmware"], first_seen=row["first_seen"], last_seen=row["last_seen"],
            lifetime_wh=row["lifetime_wh"], energy_today_wh=row["energy_today_wh"], removed=bool(row["removed"]),
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
        rows = self._db.execute(
            "SELECT timestamp, fields FROM readings WHERE serial=? AND timestamp BETWEEN ? AND ? ORDER BY timestamp",
            (serial, start, end),
        )
        return [(row[0], json.loads(row[1])) for row in rows]

    def recent_frames(self, serial: str, limit: int = 20) -> list[tuple[float, str, str]]:
        rows = self._db.execute(
            "SELECT timestamp, kind, frame FROM readings WHERE serial=? ORDER BY id DESC LIMIT ?", (serial, limit)
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def energy_per_day(self, serial: str | None = None, days: int = 30) -> list[tuple[str, float]]:
        since = (datetime.now().date() - timedelta(days=days - 1)).isoformat()
        if serial is None:
            rows = self._db.execute(
                "SELECT day, SUM(wh) FROM energy_days WHERE day >= ? GROUP BY day ORDER BY day", (since,)
            )
        else:
            rows = self._db.execute(
                "SELECT day, wh FROM energy_days WHERE serial=? AND day >= ? ORDER BY day", (serial, since)
            )
        return [(row[0], row[1]) for row in rows]

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
        return {row[0]: row[1] for row in self._db.execute("SELECT serial, wh FROM energy_days WHERE day=?", (day,))}

    # -- the PVOutput upload queue -------------------------------------------------------
    # One row per (system, date, time): made once (INSERT OR IGNORE), then settled once as
    # 'sent', 'refused' (PVOutput will not take it) or 'expired' (too old to send). Settled
    # rows stay until they are too old to send, so a status is never made, or sent, twice.
    def pvoutput_enqueue(self, statuses: list[Status], made: float) -> int:
        """Queue statuses made at ``made`` (Unix time); one already made for its (system, date, time)
        is left as it is. Returns how many were queued."""
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO pvoutput_queue (system_id, date, time, energy_wh, power_w, temperature_c,"
                " voltage_v, made) VALUES (?,?,?,?,?,?,?,?)",
                [(s.system_id, s.date, s.time, s.energy_wh, s.power_w, s.temperature_c, s.voltage_v, made)
                 for s in statuses],
            )
            return db.total_changes - before

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
        with self._write() as db:
            db.executemany(
                "UPDATE pvoutput_queue SET state=?, settled=?, note=? WHERE system_id=? AND date=? AND time=?"
                " AND state='queued'", [(state, when, note[:300], system_id, d, t) for d, t in keys])

    def pvoutput_expire(self, oldest_date: str, when: float | None = None) -> int:
        """Settle as ``expired`` the queued statuses dated before ``oldest_date`` (``yyyymmdd``), and forget
        settled ones that old. Returns how many queued statuses expired."""
        when = time.time() if when is None else when
        with self._write() as db:
            expired = db.execute(
                "UPDATE pvoutput_queue SET state='expired', settled=?, note='older than PVOutput takes'"
                " WHERE state='queued' AND date < ?", (when, oldest_date)).rowcount
            db.execute("DELETE FROM pvoutput_queue WHERE state != 'queued' AND date < ?", (oldest_date,))
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
        """A consistent copy of the database (sqlite's online backup), for export."""
        target = sqlite3.connect(destination)
        try:
            self._db.backup(target)
        finally:
            target.close()


class _Transaction:
    """``with store._write() as db``: one BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
