"""The new-inverter admission on its own (issue 14): new serials counted per hour and in all,
the store asked before a serial is refused."""
from __future__ import annotations

from appliance.admission import Admission, Limits
from appliance.store import Store
from support.clock import ManualClock
from support.readings import nep_reading


def test_admission_counts_new_serials_per_hour_and_in_all(tmp_path):
    store = Store(tmp_path)
    clock = ManualClock(1_800_000_000.0)
    limits = Limits(max_inverters=5, new_inverters_per_hour=3)
    admission = Admission(store, lambda: limits, clock=clock)
    taken = []
    for index in range(5):
        serial = f"0000000{index}"
        if admission.admit(serial) is None:
            store.record(nep_reading(serial, timestamp=clock.now))
            taken.append(serial)
    assert taken == ["00000000", "00000001", "00000002"]
    assert "3 new inverters in the last hour" in admission.admit("00000009")
    assert admission.admit("00000001") is None  # known
    clock.now += 3601
    admission._loaded_at = float("-inf")  # (the next refresh reads the store again)
    assert admission.admit("00000003") is None and admission.admit("00000004") is None
    store.record(nep_reading("00000003", timestamp=clock.now))
    store.record(nep_reading("00000004", timestamp=clock.now))
    assert "5 inverters known, [data] max_inverters is 5" in admission.admit("00000005")


def test_admission_asks_the_store_before_refusing_a_serial_another_process_recorded(tmp_path):
    store = Store(tmp_path)
    admission = Admission(store, lambda: Limits(max_inverters=1, new_inverters_per_hour=1))
    assert admission.admit("aaaaaaaa") is None
    Store(tmp_path).record(nep_reading("bbbbbbbb"))  # the other service, meanwhile
    assert admission.admit("bbbbbbbb") is None
    assert admission.admit("cccccccc") is not None
