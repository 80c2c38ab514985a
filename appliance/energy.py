"""The energy ledger's arithmetic: one monotonic lifetime total per inverter.

Pure code. Inverters report one of two counters (``EnergyCounter.kind``):

* ``lifetime`` (Enecsys kWh + Wh): the total follows the counter; when the
  counter goes backwards (the inverter was reset or replaced) the ledger
  re-bases on the new value and adds nothing.
* ``daily`` (NEP): the counter restarts at dawn, not at midnight, and after a
  DC-side outage it may jump back to an older value. A drop after a long
  silence (the night) or to a near-zero value is a restart of the count, and
  so is any value after a night that spans a change of date: the new value is
  energy produced since dawn, and is added. Any other drop is the backward
  jump: the ledger re-bases without adding, so energy that was already counted
  is not counted twice.

Whatever the input, the total never decreases. A step larger than any
inverter could produce in the elapsed time is treated as a glitch and
re-based, not added, so one corrupt-but-valid frame cannot inflate the total.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appliance.reading import EnergyCounter

NIGHT_GAP_SECONDS = 2 * 3600
"""A drop after this much silence is the morning restart of a daily counter."""
RESTART_WH = 10.0
"""A daily counter that drops to this or less has restarted, whatever the gap."""
MAX_INVERTER_W = 5000.0
"""More than any micro-inverter we support (the BDM-2250 is the largest)."""
SLACK_WH = 50.0
"""Allowance on top of MAX_INVERTER_W x elapsed time (clock skew, rounding)."""


@dataclass(frozen=True)
class LedgerState:
    total_wh: float = 0.0
    last_counter_wh: float | None = None
    last_timestamp: float | None = None


def _plausible(delta_wh: float, elapsed_s: float) -> bool:
    return delta_wh <= MAX_INVERTER_W * max(elapsed_s, 60.0) / 3600.0 + SLACK_WH


def _date(timestamp: float | None):
    return None if timestamp is None else datetime.fromtimestamp(timestamp).date()


def advance(state: LedgerState, counter: EnergyCounter, timestamp: float) -> tuple[LedgerState, float]:
    """Apply one counter reading; returns the new state and the energy added (>= 0)."""
    value = max(0.0, float(counter.wh))
    if state.last_counter_wh is None:
        # First sight: a lifetime counter *is* the total; a daily counter's value is today's energy.
        total = max(state.total_wh, value) if counter.kind == "lifetime" else state.total_wh + value
        added = 0.0 if counter.kind == "lifetime" else value
        return LedgerState(total, value, timestamp), added

    last = state.last_counter_wh
    elapsed = timestamp - state.last_timestamp if state.last_timestamp is not None else 0.0
    new_morning = elapsed >= NIGHT_GAP_SECONDS and _date(timestamp) != _date(state.last_timestamp)
    if counter.kind == "daily" and new_morning:
        delta = value if _plausible(value, elapsed) else 0.0
    elif value >= last:
        delta = value - last
        if not _plausible(delta, elapsed):
            delta = 0.0
    elif counter.kind == "daily" and (elapsed >= NIGHT_GAP_SECONDS or value <= RESTART_WH):
        delta = value if _plausible(value, elapsed) else 0.0
    else:
        delta = 0.0
    # An older frame arriving late must not move the clock backwards.
    new_timestamp = max(timestamp, state.last_timestamp or timestamp)
    return LedgerState(state.total_wh + delta, value, new_timestamp), delta
