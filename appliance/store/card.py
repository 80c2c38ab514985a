"""The database on the SD card: opened read-write when it can be, read-only when it cannot.

An SD card that the kernel remounted read-only (what ext4 does after I/O errors) must not
stop the services: they keep serving what the card holds, their readings wait in the RAM
working copy, and the next group commit that succeeds writes them. SQLite cannot open a
WAL database on a read-only file system unless its ``-shm`` file exists: after a clean
shutdown there is none, and the database opens ``immutable`` (safe: without a ``-wal``
file, the main file is the whole database); after a crash both exist and it opens
``mode=ro``. When the file system comes back, ``generation`` moves on and every thread
reopens its connection read-write.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import threading
from pathlib import Path

from appliance.store import history
from appliance.store.schema import CARD, SHARED, card_uri, connect, create, migrate_card, setup_card


class StoreError(RuntimeError):
    """The database cannot be opened or created; the message says where and why."""


def read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def refused_as_read_only(exc: sqlite3.Error) -> bool:
    """SQLite was refused a write as read-only. On recent kernels (6.18 here) ext4's errors=remount-ro marks the
    file system ``emergency_ro`` without the read-only flag ``statvfs`` reports: writes fail, with
    EROFS, and only a write attempt tells."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_READONLY


class Card:
    def __init__(self, path: Path):
        self.path = path
        self.data_dir = path.parent
        self.generation = 0
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._prepare()

    def _prepare(self) -> None:
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
            db = self.connection()
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'inverters'").fetchone():
                raise StoreError(f"the database {self.path} is empty and its file system is read-only")
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None

    @property
    def wal(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def identity(self) -> str:
        """Which database this is (a working copy made for another one is not reused): a random id
        written when it is made (its inode when a read-only one has none)."""
        row = self.connection().execute("SELECT value FROM meta WHERE key = 'id'").fetchone()
        if row is not None:
            return str(row[0])
        st = os.stat(self.path)
        return f"{st.st_dev}:{st.st_ino}"

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, read-write if the file system allows."""
        db = getattr(self._local, "db", None)
        if db is not None and self._local.generation == self.generation:
            return db
        if db is not None:
            self._forget(db)
        db, writable = self._open()
        self._local.db, self._local.generation, self._local.writable = db, self.generation, writable
        with self._lock:
            self._connections.append(db)
        return db

    @property
    def writable(self) -> bool:
        """Whether this thread's connection can write (the file system was writable when it opened)."""
        self.connection()
        return bool(self._local.writable)

    def writer(self) -> sqlite3.Connection:
        """This thread's connection for a group commit; raises (sqlite3.Error, OSError) when the card
        cannot take one, and makes every thread reopen once it can again."""
        db = self.connection()
        if not self._local.writable:
            if read_only_fs(self.data_dir):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.data_dir))
            self.generation += 1
            db = self.connection()
        return db

    def reset(self) -> None:
        """After a failed write: every thread opens a fresh connection next time."""
        self.generation += 1

    def _open(self) -> tuple[sqlite3.Connection, bool]:
        db = connect(card_uri(self.path))
        try:
            setup_card(db, writable=True)
            migrate_card(db)
            create(db, SHARED, CARD)
            history.ensure_view(db)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('id', ?)", (os.urandom(8).hex(),))
            return db, not read_only_fs(self.data_dir)
        except sqlite3.OperationalError as exc:
            db.close()
            if not (read_only_fs(self.data_dir) or refused_as_read_only(exc)):
                raise
        immutable = not (self.wal.exists() and self.wal.stat().st_size > 0)
        return connect(card_uri(self.path, read_only=True, immutable=immutable)), False

    def _forget(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if db in self._connections:
                self._connections.remove(db)
        try:
            db.close()
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for db in connections:
            try:
                db.close()
            except sqlite3.Error:
                pass
