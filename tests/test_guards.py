"""The small guards behind issue 14's fixes, on their own: rate-limited log lines, the new-inverter
admission, the server-side session registry."""
from __future__ import annotations

import json
import logging

from appliance.admission import Admission, Limits
from appliance.lograte import RateLimitedLog
from appliance.store import Store
from appliance.web.sessions import MAX_SESSIONS, Sessions
from factories import nep_reading


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_log_lines_is_cut_to_a_few_a_minute_and_summed_up(caplog):
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("flood"), "odd requests", per_minute=3, clock=clock)
    with caplog.at_level(logging.WARNING, "flood"):
        for number in range(100):
            limited.warning("odd request %d", number)
        clock.now += 61
        limited.warning("odd request %d", 100)
    assert [r.getMessage() for r in caplog.records] == [
        "odd request 0", "odd request 1", "odd request 2",
        "... 97 more odd requests in the last minute (not logged one by one)", "odd request 100"]


def test_admission_counts_new_serials_per_hour_and_in_all(tmp_path):
    store = Store(tmp_path)
    clock = Clock(1_800_000_000.0)
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


def test_sessions_are_kept_as_digests_bounded_and_ended(tmp_path):
    clock = Clock()
    path = tmp_path / "web-sessions.json"
    sessions = Sessions(path, lifetime=100, clock=clock)
    first = sessions.start()
    assert sessions.valid(first) and first not in path.read_text()
    assert Sessions(path, lifetime=100, clock=clock).valid(first)  # a restarted worker
    sessions.end(first)
    assert not sessions.valid(first) and not Sessions(path, lifetime=100, clock=clock).valid(first)
    many = [sessions.start() for _ in range(MAX_SESSIONS + 5)]
    assert len(json.loads(path.read_text())) == MAX_SESSIONS
    assert sessions.valid(many[-1]) and not sessions.valid(many[0])
    clock.now += 101
    assert not sessions.valid(many[-1])
    assert not sessions.valid(None) and not sessions.valid(12)


def test_an_unreadable_session_file_logs_everyone_out_without_failing(tmp_path, caplog):
    path = tmp_path / "web-sessions.json"
    path.write_bytes(b"\xff not json")
    sessions = Sessions(path, lifetime=100)
    assert not sessions.valid("anything") and "unreadable" in caplog.text
    assert sessions.valid(sessions.start())
