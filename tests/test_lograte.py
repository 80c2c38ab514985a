"""Rate-limited log lines (issue 14): a flood is cut to a few a minute and summed up."""
from __future__ import annotations

import logging

from appliance.lograte import RateLimitedLog
from support.clock import ManualClock


def test_a_flood_of_log_lines_is_cut_to_a_few_a_minute_and_summed_up(caplog):
    clock = ManualClock()
    limited = RateLimitedLog(logging.getLogger("flood"), "odd requests", per_minute=3, clock=clock)
    with caplog.at_level(logging.WARNING, "flood"):
        for number in range(100):
            limited.warning("odd request %d", number)
        clock.now += 61
        limited.warning("odd request %d", 100)
    assert [r.getMessage() for r in caplog.records] == [
        "odd request 0", "odd request 1", "odd request 2",
        "... 97 more odd requests in the last minute (not logged one by one)", "odd request 100"]
