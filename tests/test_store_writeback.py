"""The store's write-behind: the RAM working copy, the journal on the card, the database commits.

A "power cut" here is what the card keeps when the RAM file system is gone: the working copy is
deleted and the store dropped without closing it (nothing written at exit); a "service restart"
drops the store without closing it but keeps the working copy.
"""
from __future__ import annotations

import gc
import logging
import sqlite3
import time
from datetime import date, datetime
from pathlib import Path

import pytest

from appliance.store import Store, flush as writeback, history, journal
from support.readings import enecsys_reading, nep_reading

T0 = max(time.time() - 3 * 3600, datetime.combine(date.today(), datetime.min.time()).timestamp() + 1)
T0 = T0 - T0 % 300  # on a 5-minute boundary: the tests count history buckets


@pytest.fixture
def dirs(tmp_path):
    """A data directory (the card) and a separate RAM directory."""
    (tmp_path / "card").mkdir()
    (tmp_path / "ram").mkdir()
    return tmp_path / "card", tmp_path / "ram"


def open_store(dirs, **options) -> Store:
    card, ram = dirs
    return Store(card, ram_dir=ram, flush_seconds=options.pop("flush_seconds", 3600), autoflush=False, **options)


def power_cut(store: Store, dirs) -> None:
    store.close_connections()
    for path in dirs[1].iterdir():
        path.unlink()


def card_rows(card: Path) -> list[tuple[str, float]]:
    db = sqlite3.connect(card / "solargw.db")
    try:
        return db.execute("SELECT serial, timestamp FROM readings ORDER BY timestamp").fetchall()
    finally:
        db.close()


def test_a_power_cut_loses_only_what_came_after_the_last_journal_record(dirs):
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    store.record(enecsys_reading(lifetime_wh=5000.0, timestamp=T0))
    assert writeback.journal_flush(store)
    store.record(nep_reading(today_wh=150.0, timestamp=T0 + 300))  # never journaled
    power_cut(store, dirs)

    again = open_store(dirs)
    assert [ts for ts, _ in again.history("12345678", 0, T0 + 1000)] == [T0]
    nep, enecsys = again.inverter("12345678"), again.inverter("100095471")
    assert (nep.lifetime_wh, enecsys.lifetime_wh) == (100.0, 5000.0)
    assert nep.resumed and enecsys.resumed  # behind what may have been published
    # The inverters' counters kept counting: the next reports bring the exact totals back.
    recorded = again.record(nep_reading(today_wh=180.0, timestamp=T0 + 600))
    assert (recorded.lifetime_wh, recorded.energy_today_wh, recorded.inverter.resumed) == (180.0, 180.0, False)
    assert again.record(enecsys_reading(lifetime_wh=5070.0, timestamp=T0 + 600)).lifetime_wh == 5070.0
    assert again.counters()[("readings_recorded", "nep")] == 2  # the journaled count, plus this one


def test_a_service_restart_loses_nothing(dirs):
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    store.record(nep_reading(today_wh=150.0, timestamp=T0 + 60))
    store.close_connections()  # killed: nothing written at exit; the RAM file system stays

    again = open_store(dirs)
    assert len(again.history("12345678", 0, T0 + 100)) == 2
    info = again.inverter("12345678")
    assert (info.lifetime_wh, info.resumed) == (150.0, False)


def test_every_reading_waits_in_ram_until_the_journal_then_the_database(dirs):
    card, _ = dirs
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    assert store.health().queued == 1 and card_rows(card) == []
    assert writeback.journal_flush(store)
    assert store.health().queued == 0 and card_rows(card) == []  # in the journal, not in the database
    assert store.flush()
    assert card_rows(card) == [("12345678", T0)]
    assert store.history("12345678", 0, T0 + 1)[0][1]["energy_today_wh"] == 100.0  # once, not twice


def test_a_reading_updates_its_ledger_row_in_place_and_the_journal_notes_it_once(dirs):
    """The ledger row keeps its rowid (an upsert, not INSERT OR REPLACE, which deletes and inserts
    anew): each commit writes one page of it, not two, and ``pending`` holds one row per inverter
    however many readings wait for the journal, not one per reading."""
    store = open_store(dirs)
    db = store._db
    for minute in range(5):
        store.record(nep_reading(today_wh=100.0 + minute, timestamp=T0 + 60 * minute))
        if minute == 0:
            rowid = db.execute("SELECT rowid FROM ledger WHERE serial = '12345678'").fetchone()[0]
    ledger = db.execute("SELECT rowid, total_wh FROM ledger WHERE serial = '12345678'").fetchall()
    assert [tuple(row) for row in ledger] == [(rowid, 104.0)]
    assert [row[0] for row in db.execute("SELECT row FROM pending WHERE tbl = 'ledger'")] == [rowid]
    assert writeback.journal_flush(store)
    power_cut(store, dirs)
    assert open_store(dirs).inverter("12345678").lifetime_wh == 104.0


def test_history_keeps_the_newest_reading_of_each_bucket_even_across_commits(dirs):
    card, _ = dirs
    store = open_store(dirs, history_seconds=300)
    for minute in range(0, 8):  # 60 s apart: buckets [0, 300) and [300, 600)
        store.record(enecsys_reading(lifetime_wh=5000.0 + minute, timestamp=T0 + 60 * minute))
        if minute == 2:
            assert store.flush()  # the first bucket is split across two commits
    assert store.flush()
    kept = [(ts - T0, fields["lifetime_wh"]) for ts, fields in store.history("100095471", 0, T0 + 1000)]
    assert kept == [(240, 5004.0), (420, 5007.0)]
    assert len(card_rows(card)) == 2
    # Late and older than what the bucket has: the bucket keeps the newer one.
    store.record(enecsys_reading(lifetime_wh=5008.0, timestamp=T0 + 100))
    assert store.flush()
    assert [ts - T0 for _, ts in card_rows(card)] == [240, 420]


def test_every_reading_is_kept_with_history_seconds_0(dirs):
    store = open_store(dirs, history_seconds=0)
    for second in range(10):
        store.record(nep_reading(today_wh=100.0 + second, timestamp=T0 + second))
    assert store.flush()
    assert len(card_rows(dirs[0])) == 10


def test_idle_writes_nothing_to_the_card(dirs):
    card, _ = dirs
    store = open_store(dirs, flush_seconds=1)
    store.record(nep_reading(timestamp=T0))
    assert store.flush()
    files = {path.name: path.stat().st_mtime_ns for path in card.iterdir()}
    for _ in range(5):
        store.set_status("zigbee", {"state": "running", "heartbeat": time.time()})  # RAM only
        store._maintain()
    assert {path.name: path.stat().st_mtime_ns for path in card.iterdir()} == files
    assert store.status()["zigbee"][1]["state"] == "running"


def test_the_flusher_writes_the_journal_within_the_loss_window(dirs):
    card, ram = dirs
    store = Store(card, ram_dir=ram, flush_seconds=1)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    deadline = time.monotonic() + 10
    while store.health().queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.health().queued == 0
    assert time.time() - store.health().last_flush < 5
    power_cut(store, dirs)
    assert open_store(dirs).inverter("12345678").lifetime_wh == 100.0


def test_user_edits_reach_the_card_at_once(dirs):
    card, ram = dirs
    store = Store(card, ram_dir=ram, flush_seconds=3600)
    store.record(nep_reading(timestamp=T0))
    store.rename("12345678", "Garage")
    deadline = time.monotonic() + 15
    while store.health().queued and time.monotonic() < deadline:
        time.sleep(0.05)
    power_cut(store, dirs)
    assert open_store(dirs).inverter("12345678").name == "Garage"


def test_a_torn_journal_record_and_older_epochs_are_ignored(dirs):
    card, _ = dirs
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    assert writeback.journal_flush(store)
    store.record(nep_reading(today_wh=120.0, timestamp=T0 + 300))
    assert writeback.journal_flush(store)
    path = card / "solargw.journal"
    records = list(journal.Journal(path).records(0))
    assert [sequence for _, sequence, _ in records] == [1, 2]
    offset = records[1][0]
    with open(path, "r+b") as handle:  # the power went while the second record was written
        handle.seek(offset + journal.HEADER.size + 5)
        handle.write(b"\xff" * 8)
    power_cut(store, dirs)
    again = open_store(dirs)
    assert again.inverter("12345678").lifetime_wh == 100.0
    # After a database commit, the records are history: a new epoch begins.
    assert again.flush()
    assert list(journal.Journal(path).records(0)) == [] or again._meta()["journal_epoch"] == 1
    again.record(nep_reading(today_wh=130.0, timestamp=T0 + 600))
    assert writeback.journal_flush(again)
    power_cut(again, dirs)
    third = open_store(dirs)
    assert third.inverter("12345678").lifetime_wh == 130.0
    assert [ts - T0 for ts, _ in third.history("12345678", 0, T0 + 1000)] == [0, 600]


def test_a_crash_between_the_database_commit_and_the_ram_mark_writes_nothing_twice(dirs, monkeypatch):
    card, _ = dirs
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    store.record(nep_reading(today_wh=110.0, timestamp=T0 + 400))

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(writeback, "settle", crash)
    with pytest.raises(KeyboardInterrupt):
        writeback.materialize(store)
    monkeypatch.undo()
    assert len(card_rows(card)) == 2  # committed; the working copy does not know
    assert store.flush()
    assert len(card_rows(card)) == 2
    assert [ts - T0 for ts, _ in store.history("12345678", 0, T0 + 1000)] == [0, 400]


def test_backup_holds_what_waits_in_ram_as_plain_json(dirs, tmp_path):
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    copy = tmp_path / "copy.sqlite"
    store.backup(copy)
    db = sqlite3.connect(copy)
    (fields,), = db.execute("SELECT fields FROM readings").fetchall()
    assert isinstance(fields, str) and '"energy_today_wh":100.0' in fields
    assert db.execute("SELECT total_wh FROM ledger").fetchone()[0] == 100.0
    assert card_rows(dirs[0]) == []  # the card itself was not written


def test_compaction_moves_whole_days_and_drops_whole_months(dirs):
    card, _ = dirs
    store = open_store(dirs, full_resolution_days=1, keep_days=40)
    day = 86400
    midnight = time.time() // day * day
    for n in range(6):  # 6 readings in one 15-minute bucket, 3 days ago
        store.record(nep_reading(today_wh=10.0 + n, timestamp=midnight - 3 * day + 60 * n))
    store.record(nep_reading(today_wh=20.0, timestamp=midnight - 70 * day))  # past keep_days
    store.record(nep_reading(today_wh=30.0, timestamp=time.time() - 60))
    store.history_seconds = 0
    assert store.flush()
    store.compact()
    kept = [(round(ts - midnight), fields["energy_today_wh"]) for ts, fields in store.history("12345678", 0, time.time())]
    assert kept == [(-3 * day + 300, 15.0), (round(time.time() - 60 - midnight), 30.0)]
    tables = {name for name, *_ in history.partitions(store.card.connection())}
    assert history.day_table(midnight - 3 * day) not in tables
    assert history.month_table(midnight - 3 * day) in tables
    assert history.month_table(midnight - 70 * day) not in tables
    assert len(card_rows(card)) == 2  # the view


def test_the_working_copy_of_another_database_is_not_used(dirs):
    card, _ = dirs
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    store.close_connections()
    for path in card.iterdir():  # a new database in the same place
        path.unlink()
    again = open_store(dirs)
    assert again.inverters() == []


def test_the_queue_is_bounded(dirs, caplog):
    store = open_store(dirs, queue_limit=50, history_seconds=300)
    with caplog.at_level(logging.ERROR, logger="appliance.store"):
        for n in range(400):  # 60 s apart, never written: thinned to one per 5 minutes, then the oldest go
            store.record(nep_reading(today_wh=float(n), timestamp=T0 - 400 * 60 + n * 60))
    queued = store.health().queued
    assert queued <= 50 + 100  # checked every 100 readings
    assert store.counters()[("readings_dropped", "all")] > 0
    assert store.inverter("12345678").lifetime_wh == 399.0  # the ledger lost nothing
    assert any("dropped" in record.message for record in caplog.records)


def test_a_journal_record_survives_a_torn_next_page(dirs):
    """Records start on their own 4 KiB page: writing the next one cannot damage it."""
    card, _ = dirs
    store = open_store(dirs)
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    assert writeback.journal_flush(store)
    (offset, _, payload), = journal.Journal(card / "solargw.journal").records(0)
    assert offset == 0 and store._meta()["journal_offset"] % journal.PAGE == 0
    with open(card / "solargw.journal", "r+b") as handle:
        handle.seek(store._meta()["journal_offset"])
        handle.write(b"\xa5" * journal.PAGE)  # garbage where the next record would go
    power_cut(store, dirs)
    assert open_store(dirs).inverter("12345678").lifetime_wh == 100.0


def teardown_module(_module):
    gc.collect()


def test_where_the_working_copy_lives(tmp_path, monkeypatch):
    from appliance.store import core

    data = tmp_path / "data"
    assert core.ram_path(data) == data / "solargw-live.db"  # development: beside the database
    explicit = core.ram_path(data, tmp_path / "ram")
    assert explicit.parent == tmp_path / "ram" and explicit.name.startswith("solargw-live-")
    assert core.ram_path(tmp_path / "other", tmp_path / "ram") != explicit  # one per data directory
    monkeypatch.setattr(core, "APPLIANCE_RAM_DIR", tmp_path / "run")
    (tmp_path / "run").mkdir()
    assert core.ram_path(Path("/var/lib/solargw")).parent == tmp_path / "run"  # the appliance's
    assert core.ram_path(data) == data / "solargw-live.db"  # only for the appliance's data directory
