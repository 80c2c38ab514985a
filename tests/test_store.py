"""The SQLite store: readings, ledger, bounded history and diagnostics, two writers at once."""
import multiprocessing
import sqlite3
import threading
import time
from datetime import date, datetime

import pytest

from appliance.pipeline import Pipeline
from appliance.store import REJECTED_KEPT, Store, StoreError
from support.readings import enecsys_reading, nep_reading

# An hour ago, but never before today's local midnight: "energy today" must see these readings.
T0 = max(time.time() - 3600, datetime.combine(date.today(), datetime.min.time()).timestamp() + 1)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_database_is_in_wal_mode(store):
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_record_keeps_inverter_latest_history_and_ledger(store):
    first = store.record(nep_reading(today_wh=100.0, timestamp=T0), source="10.42.0.51")
    second = store.record(nep_reading(today_wh=160.0, power_w=250.0, timestamp=T0 + 300))
    assert (first.lifetime_wh, first.delta_wh) == (100.0, 100.0)
    assert (second.lifetime_wh, second.delta_wh, second.energy_today_wh) == (160.0, 60.0, 160.0)
    (inverter,) = store.inverters()
    assert (inverter.serial, inverter.family, inverter.model) == ("12345678", "nep", "bdm400")
    assert (inverter.first_seen, inverter.last_seen) == (T0, T0 + 300)
    latest = store.latest()["12345678"]
    assert latest.fields["ac_power_w"] == 250.0 and latest.raw["ac_power_w"] == 25000
    assert latest.timestamp == T0 + 300
    assert [f["energy_today_wh"] for _, f in store.history("12345678", T0 - 1, T0 + 301)] == [100.0, 160.0]
    assert store.counters()[("readings_recorded", "nep")] == 2


def test_checksum_failure_is_never_recorded(store):
    with pytest.raises(ValueError):
        store.record(nep_reading(checksum_ok=False))
    assert store.inverters() == [] and store.latest() == {}


def test_pipeline_rejects_bad_checksum_and_counts(store):
    pipeline = Pipeline(store)
    assert pipeline.handle(nep_reading(checksum_ok=False), source="10.42.0.9") is None
    pipeline.reject(b"\x01\x02", None, "10.42.0.9", "too short")
    assert store.inverters() == []
    reasons = [(r.reason, r.frame_hex, r.source) for r in store.rejected()]
    assert reasons == [("too short", "0102", "10.42.0.9"), ("checksum mismatch", nep_reading().frame.hex(), "10.42.0.9")]
    counters = store.counters()
    assert counters[("packets_rejected", "nep")] == 1 and counters[("packets_rejected", "unknown")] == 1
    assert counters[("packets_received", "nep")] == 1


def test_every_packet_costs_one_transaction(store):
    """Counting the packet rides in the transaction that records or rejects it (SD-card writes)."""
    pipeline = Pipeline(store)
    pipeline.handle(nep_reading(timestamp=T0))  # opens this thread's connection
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    pipeline.handle(nep_reading(today_wh=120.0, timestamp=T0 + 300))
    pipeline.handle(nep_reading(checksum_ok=False))
    pipeline.reject(b"\x01", None, "10.42.0.9", "too short")
    assert statements.count("BEGIN IMMEDIATE") == 3 and statements.count("COMMIT") == 3
    counters = store.counters()
    assert counters[("packets_received", "nep")] == 3 and counters[("packets_received", "unknown")] == 1
    assert counters[("readings_recorded", "nep")] == 2


class FailingPublisher:
    def publish(self, recorded):
        raise RuntimeError("broker exploded")


def test_publisher_failure_loses_nothing(store):
    assert Pipeline(store, FailingPublisher()).handle(nep_reading()) is not None
    assert "12345678" in store.latest()


def test_rejected_frames_are_bounded(store):
    for i in range(REJECTED_KEPT + 20):
        store.reject(frame=bytes([i % 256]), source="x", reason="garbage")
    assert len(store.rejected(limit=10_000)) == REJECTED_KEPT


def test_older_frame_does_not_replace_latest(store):
    store.record(nep_reading(power_w=300.0, timestamp=T0 + 600))
    store.record(nep_reading(power_w=100.0, timestamp=T0))
    assert store.latest()["12345678"].fields["ac_power_w"] == 300.0


def test_enecsys_info_frame_sets_model_and_firmware(store):
    store.record(enecsys_reading())
    info = enecsys_reading(kind="info")
    info = info.__class__(**{**info.__dict__, "model": "SMI-S200", "energy": None,
                            "fields": {"firmware": "WSI-00003"}})
    store.record(info)
    inverter = store.inverter("100095471")
    assert (inverter.model, inverter.firmware, inverter.lifetime_wh) == ("SMI-S200", "WSI-00003", 1_347_515.0)
    assert store.latest()["100095471"].kind == "report"


def test_rename_model_remove_and_changes(store):
    cursor, changed = store.changes_since(None)
    assert changed == []
    store.record(nep_reading(timestamp=T0))
    store.rename("12345678", "  Garage roof ")
    store.set_model("12345678", "bdm800")
    cursor2, changed = store.changes_since(cursor)
    assert changed == ["12345678"] and cursor2 > cursor
    assert store.model_setting("12345678") == "bdm800" and store.model_setting("ffffffff") == "auto"
    store.remove("12345678")
    assert store.inverters() == [] and store.latest() == {}
    assert store.inverters(include_removed=True)[0].display_name == "Garage roof"
    store.record(nep_reading(today_wh=150.0, timestamp=T0 + 60))
    assert store.inverter("12345678").lifetime_wh == 150.0  # comes back, energy kept
    with pytest.raises(KeyError):
        store.rename("nope", "x")


def test_history_is_thinned_then_dropped(tmp_path):
    store = Store(tmp_path, full_resolution_days=1, keep_days=3)
    now = time.time()
    old = now - 2 * 86400
    bucket_start = old - old % 900
    for i in range(6):  # six readings in one 15-minute bucket, two days ago
        store.record(nep_reading(today_wh=10.0 + i, timestamp=bucket_start + i * 60))
    store.record(nep_reading(today_wh=20.0, timestamp=now - 5 * 86400))  # older than keep_days
    store.record(nep_reading(today_wh=30.0, timestamp=now - 60))
    store.record(nep_reading(today_wh=31.0, timestamp=now - 30))
    store.compact(now)
    kept = store.history("12345678", 0, now)
    assert [f["energy_today_wh"] for _, f in kept] == [15.0, 30.0, 31.0]


def test_energy_per_day(store):
    store.record(nep_reading(today_wh=100.0, timestamp=T0))
    store.record(enecsys_reading(lifetime_wh=5000.0, timestamp=T0))
    store.record(enecsys_reading(lifetime_wh=5040.0, timestamp=T0 + 60))
    (day, wh), = store.energy_per_day()
    assert wh == 140.0
    assert store.energy_per_day("100095471")[0][1] == 40.0


def test_status_roundtrip(store):
    store.set_status("zigbee", {"connected": True, "channel": 13})
    ts, data = store.status()["zigbee"]
    assert data == {"connected": True, "channel": 13} and abs(ts - time.time()) < 5


def _writer(data_dir, family, count, start):
    store = Store(data_dir)
    for i in range(count):
        if family == "nep":
            store.record(nep_reading(serial="0000abcd", today_wh=float(i), timestamp=start + i))
        else:
            store.record(enecsys_reading(lifetime_wh=1000.0 + i, timestamp=start + i))


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    Store(tmp_path)
    count = 300
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), fam, count, T0)) for fam in ("nep", "enecsys")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(tmp_path)
    assert len(store.history("0000abcd", 0, T0 + count)) == count
    assert len(store.history("100095471", 0, T0 + count)) == count
    assert store.inverter("0000abcd").lifetime_wh == count - 1
    assert store.inverter("100095471").lifetime_wh == 1000.0 + count - 1
    counters = store.counters()
    assert counters[("readings_recorded", "nep")] == counters[("readings_recorded", "enecsys")] == count


def test_close_closes_the_connection_of_every_thread(tmp_path):
    store = Store(tmp_path)
    store.record(nep_reading(timestamp=T0))
    opened, done = threading.Barrier(4), threading.Event()

    def reader() -> None:  # like a gunicorn thread: long-lived, with its own connection
        store.inverters()
        opened.wait()
        done.wait(10)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    opened.wait()
    assert (tmp_path / "solargw.db-wal").exists()
    store.close()
    wal_left = (tmp_path / "solargw.db-wal").exists()
    done.set()
    for thread in readers:
        thread.join()
    assert not wal_left  # SQLite removes the WAL file when its last connection closes
    assert [inv.serial for inv in store.inverters()] == ["12345678"]  # usable again: a fresh connection
    store.close()


def test_an_unusable_data_directory_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=f"cannot create the data directory {tmp_path / 'file' / 'data'}"):
        Store(tmp_path / "file" / "data")
    garbage = b"not a database, whatever the name says\n" * 50
    (tmp_path / "solargw.db").write_bytes(garbage)
    with pytest.raises(StoreError, match="file is not a database"):
        Store(tmp_path)
    assert (tmp_path / "solargw.db").read_bytes() == garbage  # nothing overwritten
