"""One write transaction of the working copy, however many readings it holds.

Every write of :class:`~appliance.store.core.Store` runs inside a :class:`Batch`: alone (a batch of
one: ``BEGIN IMMEDIATE`` ... ``COMMIT``) or joining the batch its thread has open
(``Store.batch()``), so that a burst of reports costs one transaction. What a transaction does
once, not once per reading, waits here until its end: the counters (summed), the change log (one
row per inverter), the note that something is unwritten (:meth:`Batch.mark`), and what must happen
only once the readings are committed (publishing them: ``after_commit``).

A write that fails inside a batch breaks the whole batch: it is rolled back at its end, nothing of
it is committed and :class:`BatchFailed` says so; the caller then writes each item on its own
(``appliance.web.ingest.accept_all``), so one bad report never loses the others.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any, Callable

log = logging.getLogger("appliance.store")

CHANGES_KEPT = 2000


class BatchFailed(RuntimeError):
    """A write inside the batch failed: the batch was rolled back whole (``__cause__``: the first failure)."""


class Batch:
    """``with batch:`` nests; the outermost exit commits (or rolls back) and runs ``after_commit``."""

    def __init__(self, db: sqlite3.Connection, on_end: Callable[[], None]) -> None:
        self.db = db
        self._on_end = on_end
        self._depth = 0
        self._counters: dict[tuple[str, str], int] = {}
        self._changed: dict[str, float] = {}
        self._marked = False
        self._urgent_by: float | None = None
        self._after: list[Callable[[], Any]] = []
        self._broken: BaseException | None = None

    # -- what the writes ask for --------------------------------------------------------------------
    def bump(self, name: str, family: str, n: int = 1) -> None:
        key = (name, family)
        self._counters[key] = self._counters.get(key, 0) + n

    def changed(self, serial: str, ts: float | None = None) -> None:
        """``serial``'s row changed (the UI's change log; one row per inverter per batch, the newest time)."""
        ts = time.time() if ts is None else ts
        if ts >= self._changed.get(serial, ts):
            self._changed[serial] = ts

    def mark(self, *, urgent_by: float | None = None) -> None:
        """Something the card must get: at the end of the transaction, ``meta`` notes it (the flusher
        journals it within ``flush_seconds``; ``urgent_by``, a user's edit: within a tick)."""
        self._marked = True
        if urgent_by is not None:
            self._urgent_by = urgent_by if self._urgent_by is None else min(self._urgent_by, urgent_by)

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` after the commit, once however often it is asked for (each report of a
        batch asks for the same status refresh; each reading's publishing is a callback of its own)."""
        if callback not in self._after:
            self._after.append(callback)

    # -- the transaction ----------------------------------------------------------------------------
    def __enter__(self) -> "Batch":
        if self._broken is not None:  # (SQLite may have ended the transaction: write nothing more)
            raise BatchFailed(f"a write in the batch failed: {self._broken!r}") from self._broken
        if self._depth == 0:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._on_end()
                raise
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._depth -= 1
        if exc is not None and self._broken is None:
            self._broken = exc
        if self._depth:
            return
        self._on_end()
        db = self.db
        if self._broken is None:
            try:
                self._finish()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        else:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if exc is None:  # a write inside failed and its caller went on: nothing of the batch is kept
                raise BatchFailed(f"a write in the batch failed: {self._broken!r}") from self._broken
            return
        for callback in self._after:
            try:
                callback()
            except Exception:  # noqa: BLE001 - the readings are committed; a publisher bug must not undo that
                log.exception("after a commit")

    def _finish(self) -> None:
        db = self.db
        if self._counters:
            db.executemany(
                "INSERT INTO counters VALUES (?,?,?) ON CONFLICT(name, family) DO UPDATE SET value = value + excluded.value",
                [(name, family, n) for (name, family), n in self._counters.items()])
        if self._changed:
            insert, rows = "INSERT INTO changes (serial, timestamp) VALUES (?,?)", list(self._changed.items())
            if len(rows) == 1:
                newest = db.execute(insert, rows[0]).lastrowid
            else:
                db.executemany(insert, rows)
                newest = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            if newest // 100 != (newest - len(rows)) // 100:  # every 100 rows
                db.execute("DELETE FROM changes WHERE id <= ?", (newest - CHANGES_KEPT,))
        if self._marked:
            # Last: the triggers that note changed rows (``schema.RAM``) read ``changes``.
            db.execute(
                "UPDATE meta SET value = CASE key WHEN 'changes' THEN value + 1 ELSE COALESCE(value, ?1) END"
                " WHERE key IN ('dirty_since', 'unmaterialized_since', 'changes')", (time.time(),))
            if self._urgent_by is not None:  # a user's edit: on the card within a tick
                db.execute("UPDATE meta SET value = MIN(value, ?) WHERE key = 'dirty_since'", (self._urgent_by,))
