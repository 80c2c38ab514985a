"""The web UI's server-side session registry (issue 14): digests on disk, bounded, ended, and an
unreadable file logs everyone out without failing."""
from __future__ import annotations

import json

from appliance.web.sessions import MAX_SESSIONS, Sessions
from support.clock import ManualClock


def test_sessions_are_kept_as_digests_bounded_and_ended(tmp_path):
    clock = ManualClock()
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
