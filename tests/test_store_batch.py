"""Store batches: many writes, one transaction of the working copy, the same result as one by one."""
from __future__ import annotations

import sqlite3
import threading
import time
from datetime import date, datetime

import pytest

from appliance.pipeline import Pipeline
from appliance.store import Store
from appliance.store.batch import BatchFailed
from support.readings import enecsys_reading, nep_reading

T0 = max(time.time() - 3600, datetime.combine(date.today(), datetime.min.time()).timestamp() + 1)


def burst():
    """Readings as a burst of reports brings them: the same inverter twice, a glitch to zero, a
    frame older than the latest, an Enecsys lifetime counter, a failed checksum."""
    return [
        nep_reading("11111111", today_wh=100.0, timestamp=T0),
        nep_reading("22222222", today_wh=50.0, timestamp=T0 + 1),
        nep_reading("11111111", today_wh=130.0, timestamp=T0 + 300),
        nep_reading("11111111", today_wh=0.0, timestamp=T0 + 600),
        nep_reading("22222222", today_wh=40.0, timestamp=T0 - 300),
        nep_reading("11111111", today_wh=150.0, timestamp=T0 + 900),
        enecsys_reading(lifetime_wh=1000.0, timestamp=T0 + 5),
        enecsys_reading(lifetime_wh=1010.0, timestamp=T0 + 65),
        nep_reading("33333333", checksum_ok=False, timestamp=T0 + 2),
    ]


def state(store: Store) -> dict:
    db = store._db
    return {
        "inverters": store.inverters(),
        "latest": {serial: (r.timestamp, r.fields) for serial, r in store.latest().items()},
        "counters": store.counters(),
        "ledger": db.execute("SELECT * FROM ledger ORDER BY serial").fetchall(),
        "days": db.execute("SELECT * FROM energy_days ORDER BY serial, day").fetchall(),
        "recent": db.execute("SELECT serial, timestamp, kind, fields, frame FROM recent ORDER BY id").fetchall(),
        "rejected": [(r.reason, r.frame_hex) for r in store.rejected()],
        "pending": db.execute("SELECT tbl, row FROM pending ORDER BY tbl, row").fetchall(),
        "changed": store.changes_since(0)[1],
        "dirty": store._meta()["dirty_since"] is not None,
    }


def returned(recorded) -> list:
    return [None if r is None else (r.inverter, r.lifetime_wh, r.energy_today_wh, r.delta_wh) for r in recorded]


def test_a_batch_is_one_transaction_with_the_same_result_as_one_by_one(tmp_path):
    alone, batched = Store(tmp_path / "alone", autoflush=False), Store(tmp_path / "batched", autoflush=False)
    one_by_one = [Pipeline(alone).handle(reading, source="10.42.0.9") for reading in burst()]
    statements: list[str] = []
    batched._db.set_trace_callback(statements.append)
    pipeline = Pipeline(batched)
    with batched.batch():
        together = [pipeline.handle(reading, source="10.42.0.9") for reading in burst()]
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert returned(together) == returned(one_by_one)
    assert state(batched) == state(alone)
    assert state(batched)["counters"][("readings_recorded", "nep")] == 6


def test_nothing_of_a_batch_is_seen_before_its_end(tmp_path):
    store = Store(tmp_path, autoflush=False)

    def seen() -> set[str]:
        found: list[set[str]] = []
        reader = threading.Thread(target=lambda: found.append(set(store.latest())))  # its own connection
        reader.start()
        reader.join()
        return found[0]

    with store.batch():
        store.record(nep_reading(timestamp=T0))
        store.count("relay_sent", "nep")
        assert seen() == set() and store.latest().keys() == {"12345678"}  # this thread sees its own writes
    assert seen() == {"12345678"}


def test_a_write_that_fails_inside_a_batch_keeps_nothing_of_it(tmp_path):
    store = Store(tmp_path, autoflush=False)
    published: list = []
    pipeline = Pipeline(store, publisher=type("P", (), {"publish": lambda self, r: published.append(r)})())
    with pytest.raises(BatchFailed) as failed:
        with store.batch():
            pipeline.handle(nep_reading(timestamp=T0))
            with pytest.raises(KeyError):
                store.rename("99999999", "no such inverter")  # fails after writing nothing of its own
            with pytest.raises(BatchFailed):  # and nothing more is written in the broken batch
                store.count("relay_sent", "nep")
    assert isinstance(failed.value.__cause__, KeyError)
    assert store.latest() == {} and store.counters() == {} and published == []
    assert store._meta()["dirty_since"] is None
    pipeline.handle(nep_reading(timestamp=T0))  # the connection is usable again, outside any batch
    assert "12345678" in store.latest() and len(published) == 1


def test_published_once_committed(tmp_path):
    store = Store(tmp_path, autoflush=False)
    published: list = []

    class Publisher:
        def publish(self, recorded) -> None:
            row = sqlite3.connect(store.ram_path).execute(
                "SELECT COUNT(*) FROM recent WHERE serial = ?", (recorded.reading.serial,)).fetchone()
            published.append((recorded.reading.timestamp, row[0]))

    pipeline = Pipeline(store, Publisher())
    with store.batch():
        pipeline.handle(nep_reading(timestamp=T0))
        pipeline.handle(nep_reading(timestamp=T0 + 300, today_wh=120.0))
        assert published == []
    assert published == [(T0, 2), (T0 + 300, 2)]  # each seen by another connection when published
    pipeline.handle(nep_reading(timestamp=T0 + 600, today_wh=130.0))  # no batch: at once
    assert published[-1] == (T0 + 600, 3)


def test_the_same_callback_asked_by_every_report_runs_once_per_batch(tmp_path):
    store = Store(tmp_path, autoflush=False)
    calls: list[str] = []

    class Services:
        def report_status(self) -> None:
            calls.append("status")

    services = Services()
    with store.batch():
        for n in range(3):
            store.count("reports", "nep")
            store.after_commit(services.report_status)
            store.after_commit(lambda n=n: calls.append(f"publish {n}"))
    assert calls == ["status", "publish 0", "publish 1", "publish 2"]


def test_the_change_log_stays_bounded_whatever_the_batches(tmp_path):
    store = Store(tmp_path, autoflush=False)
    for start in range(0, 2600, 7):  # batches of 7 inverters: the 100-row marks fall inside batches
        with store.batch():
            for serial in range(start, start + 7):
                store.record(nep_reading(f"{serial:08x}", timestamp=T0))
    kept = store._db.execute("SELECT COUNT(*), MAX(id) FROM changes").fetchone()
    assert kept[1] == 2604 and 2000 <= kept[0] <= 2100
