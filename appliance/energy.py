"""The energy ledger's arithmetic: one monotonic lifetime total per inverter.

Pure code. Inverters report one of two counters (``EnergyCounter.kind``):
``lifetime`` (Enecsys kWh + Wh, only grows) and ``daily`` (NEP, restarts at
dawn). Both go through one path; the rules work on the counter sequence:

1. **High-water mark.** The ledger keeps the counter's highest accepted value
   (the *mark*). A frame at or above the mark adds what exceeds it; anything
   else adds nothing. So a duplicate adds nothing, and a frame below the mark
   (a late, older frame, or a glitch to ~0) adds nothing and is *held*: if the
   next frame is back at the mark or above it, only the excess counts.
2. **Restart** (daily only). A held frame near zero (at most ``RESTART_WH``)
   followed by a frame that climbs above it while staying below the mark is a
   real restart: the counter counts again from zero, so its value is new
   energy and becomes the mark. One frame is never enough, and a return to
   the old mark is a glitch, not a restart: alternating 0 and 130 adds 130 once.
3. **Dawn** (daily only). The first frame of a later calendar day whose value
   is below the mark starts the day's count from zero: its value is added
   whole. A new date whose counter did not drop is the same count going on
   (a clock step, or production across midnight), not a new day.
4. **Plausibility.** A rise larger than any inverter could produce since the
   mark was reached (``MAX_INVERTER_W`` for that long, at least a minute, plus
   ``SLACK_WH``) is held too; it counts only when the next frame climbs past
   it, so one corrupt frame cannot inflate the total.

A lifetime counter never restarts: its total is the highest accepted counter
value, the first one included (it is not energy produced today). What a
daily counter's ledger adds is bounded by the sum, over each day's stretches
between near-zero values, of the stretch's highest value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import datetime

from appliance.reading import EnergyCounter

RESTART_WH = 10.0
"""A daily counter at or below this is "near zero": where a restart starts from."""
MAX_INVERTER_W = 5000.0
"""More than any micro-inverter we support (the BDM-2250 is the largest)."""
SLACK_WH = 50.0
"""Allowance on top of MAX_INVERTER_W x elapsed time (clock skew, rounding)."""
MIN_ELAPSED_S = 60.0
"""The plausibility bound never assumes less time than this since the mark."""


@dataclass(frozen=True)
class LedgerState:
    """What the store keeps per inverter (one column per field, in this order)."""

    total_wh: float = 0.0
    last_counter_wh: float | None = None
    """The counter in the latest frame, whatever was made of it (a lifetime zero before any value is not kept)."""
    last_timestamp: float | None = None
    """The latest receive time seen (a late frame does not move it back)."""
    mark_wh: float | None = None
    """The high-water mark: the highest accepted counter value of the current count."""
    mark_timestamp: float | None = None
    """When the counter reached the mark."""
    held_wh: float | None = None
    """The previous frame's counter when it was held back (below the mark, or an implausible rise)."""


LEDGER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerState))
"""The state's fields in order: the store keeps one column each."""


def _plausible(rise_wh: float, elapsed_s: float) -> bool:
    return rise_wh <= MAX_INVERTER_W * max(elapsed_s, MIN_ELAPSED_S) / 3600.0 + SLACK_WH


def _later_day(timestamp: float, before: float | None) -> bool:
    return before is not None and datetime.fromtimestamp(timestamp).date() > datetime.fromtimestamp(before).date()


def _upgraded(state: LedgerState) -> LedgerState:
    """A state stored before the mark existed counted from its last counter value."""
    if state.mark_wh is None and state.last_counter_wh is not None:
        return replace(state, mark_wh=state.last_counter_wh, mark_timestamp=state.last_timestamp)
    return state


def advance(state: LedgerState, counter: EnergyCounter, timestamp: float) -> tuple[LedgerState, float]:
    """Apply one counter reading; returns the new state and the energy added (>= 0)."""
    value = float(counter.wh)
    if not math.isfinite(value):
        return state, 0.0
    value = max(0.0, value)
    state = _upgraded(state)
    seen = {
        "last_counter_wh": value,
        "last_timestamp": timestamp if state.last_timestamp is None else max(timestamp, state.last_timestamp),
    }
    lifetime = counter.kind == "lifetime"

    if state.mark_wh is None:
        if lifetime and value == 0.0:  # a zero says nothing about a lifetime total: not even kept
            return replace(state, last_timestamp=seen["last_timestamp"]), 0.0
        # First sight: a lifetime counter *is* the total; a daily counter's value is today's energy.
        added = 0.0 if lifetime else value
        total = max(state.total_wh, value) if lifetime else state.total_wh + value
        return LedgerState(total, mark_wh=value, mark_timestamp=timestamp, **seen), added

    mark, held = state.mark_wh, state.held_wh
    since_mark = math.inf if state.mark_timestamp is None else timestamp - state.mark_timestamp
    if not lifetime and value < mark and _plausible(value, since_mark):
        restarted = held is not None and held <= RESTART_WH and held < value
        if restarted or _later_day(timestamp, state.last_timestamp):
            mark = 0.0  # the counter counts from zero again: its whole value is new energy

    confirms_held_rise = held is not None and mark < held < value
    if value >= mark and (_plausible(value - mark, since_mark) or confirms_held_rise):
        added = value - mark
        raised = added > 0 or mark < state.mark_wh
        return LedgerState(
            state.total_wh + added,
            mark_wh=value,
            mark_timestamp=timestamp if raised else state.mark_timestamp,
            **seen,
        ), added
    return replace(state, held_wh=value, **seen), 0.0
