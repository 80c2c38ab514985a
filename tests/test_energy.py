"""The energy ledger: the counter-sequence rules case by case, then properties over random sequences."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from hypothesis import assume, given, strategies as st

from appliance.energy import MAX_INVERTER_W, RESTART_WH, LedgerState, advance
from appliance.reading import EnergyCounter

MORNING = datetime(2025, 6, 15, 9, 0)  # local time: the ledger's days are local days
T0 = MORNING.timestamp()
HTTP_GAP = 0.05  # frames posted back to back, as the HTTP tests and the tester did


def run(kind: str, steps, start: float = T0) -> tuple[LedgerState, list[float]]:
    """Feed ``(gap_seconds, counter_wh)`` steps; returns the final state and what each step added."""
    state, ts, added = LedgerState(), start, []
    for gap, value in steps:
        ts += gap
        state, delta = advance(state, EnergyCounter(kind, value), ts)
        added.append(delta)
    return state, added


def quick(kind: str, values, gap: float = HTTP_GAP) -> tuple[float, list[float]]:
    state, added = run(kind, [(gap, v) for v in values])
    return state.total_wh, added


# --- the cases of issue 14 ---------------------------------------------------------------

def test_a_one_frame_drop_to_zero_counts_only_what_exceeds_the_mark():
    assert quick("daily", [100, 110, 0, 115]) == (115, [100, 10, 0, 5])


def test_a_late_older_frame_is_not_counted_twice():
    assert quick("daily", [100, 120, 110, 130]) == (130, [100, 20, 0, 10])


@pytest.mark.parametrize("pair", [(0, 130), (130, 0)])
def test_alternating_forgeries_add_nothing_beyond_the_highest_value(pair):
    total, _ = quick("daily", list(pair) * 50)
    assert total == 130


def test_alternating_forgeries_on_a_producing_inverter_add_at_most_one_restart():
    total, added = quick("daily", [1000] + [0, 130] * 50)
    assert total == 1130 and added.count(130) == 1


def test_a_real_restart_counts_the_climb_from_zero():
    assert quick("daily", [100, 110, 0, 2, 5, 9]) == (119, [100, 10, 0, 2, 3, 4])


def test_a_single_near_zero_frame_is_not_a_restart():
    assert quick("daily", [100, 110, 5]) == (110, [100, 10, 0])
    assert quick("daily", [100, 110, 5, 5, 112]) == (112, [100, 10, 0, 0, 2])  # a repeated glitch neither


def test_a_late_frame_that_is_not_near_zero_never_starts_a_count():
    assert quick("daily", [100, 120, 105, 110, 130])[0] == 130


def test_duplicates_add_nothing():
    assert quick("daily", [500, 500, 500]) == (500, [500, 0, 0])
    assert quick("daily", [100, 110, 0, 0, 115])[0] == 115
    assert quick("lifetime", [5000, 5000, 5010, 5010]) == (5010, [0, 0, 10, 0])


def test_dawn_reset_loses_nothing():
    day1 = [(3600, v) for v in (100.0, 400.0, 900.0, 1500.0)]
    day2 = [(12 * 3600, 4.0)] + [(3600, v) for v in (50.0, 800.0)]
    state, added = run("daily", day1 + day2)
    assert state.total_wh == 1500.0 + 800.0
    assert added[4] == 4.0  # the new day's first value is new energy, whole


def test_without_a_date_change_the_dawn_is_a_restart():
    # A clock that did not move to the next day (no time source): the counter's restart still shows.
    state, _ = run("daily", [(0, 1500.0), (1, 4.0), (60, 50.0), (2 * 3600, 800.0)],
                   start=datetime(2025, 6, 15, 0, 30).timestamp())
    assert state.total_wh == 2300.0


def test_a_new_date_whose_counter_did_not_drop_goes_on_counting():
    # Production across midnight, or the clock stepping to another day: not a new day's count.
    state, added = run("daily", [(0, 800.0), (20 * 60, 810.0)], start=datetime(2025, 6, 20, 23, 50).timestamp())
    assert state.total_wh == 810.0 and added == [800.0, 10.0]


def test_the_same_small_value_next_morning_is_not_counted_twice():
    state, added = run("daily", [(0, 1.0), (86400, 1.0)])
    assert state.total_wh == 1.0 and added == [1.0, 0.0]


def test_an_implausible_rise_is_held_until_confirmed():
    # One corrupt frame adds nothing; the mark stays where the counter really is.
    state, added = run("lifetime", [(0, 5000.0), (60, 9_000_000.0), (60, 5010.0), (60, 5020.0)])
    assert state.total_wh == 5020.0 and added == [0.0, 0.0, 10.0, 10.0]
    state, _ = run("daily", [(0, 100.0), (60, 13_000.0), (60, 110.0)])
    assert state.total_wh == 110.0
    # A rise that the next frame climbs past is real (say the appliance missed the morning's frames).
    state, added = run("daily", [(0, 100.0), (60, 5000.0), (60, 5100.0)])
    assert state.total_wh == 5100.0 and added == [100.0, 0.0, 5000.0]


def test_a_big_rise_after_a_long_silence_is_plausible():
    state, added = run("daily", [(0, 100.0), (3 * 3600, 9000.0)])
    assert added == [100.0, 8900.0]
    assert 8900.0 <= MAX_INVERTER_W * 3


def test_first_daily_reading_counts_today_so_far():
    assert quick("daily", [120.0]) == (120.0, [120.0])


def test_first_lifetime_reading_is_the_total_not_todays_energy():
    assert quick("lifetime", [1_347_515.0]) == (1_347_515.0, [0.0])
    assert quick("lifetime", [0.0, 1_347_515.0]) == (1_347_515.0, [0.0, 0.0])  # a zero says nothing


def test_a_zero_or_late_lifetime_frame_never_inflates_it():
    assert quick("lifetime", [5000, 0, 5010]) == (5010, [0, 0, 10])
    assert quick("lifetime", [5000, 5020, 5010, 5030]) == (5030, [0, 20, 0, 10])
    assert quick("lifetime", [5000, 0, 3, 8, 5010])[0] == 5010  # a lifetime counter never restarts


def test_a_lifetime_counter_that_drops_is_never_rebased():
    state, added = run("lifetime", [(0, 5000.0), (60, 5010.0), (60, 3.0), (60, 13.0), (60, 5020.0)])
    assert added == [0.0, 10.0, 0.0, 0.0, 10.0]
    assert state.total_wh == 5020.0


def test_a_late_frame_does_not_rewind_the_clock():
    state, _ = run("daily", [(0, 10.0), (600, 20.0), (-300, 15.0)])
    assert state.last_timestamp == T0 + 600


def test_a_state_stored_before_the_mark_counts_from_its_last_counter():
    old = LedgerState(total_wh=1150.0, last_counter_wh=950.0, last_timestamp=T0)
    state, added = advance(old, EnergyCounter("daily", 1000.0), T0 + 300)
    assert (state.total_wh, added, state.mark_wh) == (1200.0, 50.0, 1000.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_counter_changes_nothing(value):
    state, _ = run("daily", [(0, 100.0)])
    assert advance(state, EnergyCounter("daily", value), T0 + 60) == (state, 0.0)


# --- properties over random sequences -------------------------------------------------

any_steps = st.lists(
    st.tuples(st.floats(min_value=-600, max_value=48 * 3600), st.floats(min_value=-10, max_value=70_000)),
    max_size=60,
)


def justified_daily(steps, start: float = T0) -> float:
    """What a daily counter's values can justify, without the ledger's rules: the sum, over each
    day's stretches that begin at a near-zero value (or a later date), of the stretch's maximum."""
    ts, latest, bound, stretch = start, None, 0.0, None
    for gap, value in steps:
        ts += gap
        value = max(0.0, value)
        later = latest is not None and datetime.fromtimestamp(ts).date() > datetime.fromtimestamp(latest).date()
        latest = ts if latest is None else max(latest, ts)
        if stretch is None or later or value <= RESTART_WH:
            bound += stretch or 0.0
            stretch = value
        stretch = max(stretch, value)
    return bound + (stretch or 0.0)


@given(kind=st.sampled_from(["daily", "lifetime"]), steps=any_steps)
def test_total_never_decreases_and_adds_what_it_says(kind, steps):
    state, ts = LedgerState(), T0
    for gap, value in steps:
        ts += gap
        new, delta = advance(state, EnergyCounter(kind, value), ts)
        assert delta >= 0
        assert new.total_wh >= state.total_wh
        if kind == "daily":
            assert new.total_wh == pytest.approx(state.total_wh + delta)
        state = new


@given(steps=any_steps)
def test_a_daily_total_never_exceeds_what_the_counter_justifies(steps):
    state, _ = run("daily", steps)
    assert state.total_wh <= justified_daily(steps) * (1 + 1e-9) + 1e-9


@given(steps=any_steps)
def test_a_lifetime_total_never_exceeds_the_highest_counter(steps):
    state, _ = run("lifetime", steps)
    assert state.total_wh <= max([0.0] + [v for _, v in steps]) * (1 + 1e-9)


ANOMALIES = ("none", "duplicate", "late", "late twice", "glitch", "spike")


@st.composite
def climbing_days(draw, kind: str):
    """Days of a counter climbing every five minutes (a daily one from near zero each morning),
    with one anomaly or none after each frame: a duplicate, a late copy of an earlier frame of
    the day (once or twice), a near-zero glitch, or an implausible spike. Returns the frames
    ``(timestamp, value)`` and the true total."""
    frames, truth = [], 0.0
    base = draw(st.floats(min_value=1000, max_value=2_000_000)) if kind == "lifetime" else 0.0
    for day in range(draw(st.integers(min_value=1, max_value=4))):
        start = (MORNING.replace(hour=6) + timedelta(days=day)).timestamp()
        first = base if kind == "lifetime" else draw(st.floats(min_value=0, max_value=RESTART_WH))
        steps = draw(st.lists(st.floats(min_value=0, max_value=400), min_size=1, max_size=12))
        values = [first]
        for step in steps:
            values.append(values[-1] + step)
        if kind == "daily":
            assume(values[-1] > RESTART_WH)  # so the next morning's value is a drop
            truth += values[-1]
        else:
            base = truth = values[-1]
        for k, value in enumerate(values):
            ts = start + 300 * k
            frames.append((ts, value))
            anomaly = draw(st.sampled_from(ANOMALIES))
            if anomaly == "duplicate":
                frames.append((ts + 1, value))
            elif anomaly.startswith("late"):
                late = values[draw(st.integers(min_value=0, max_value=k))]
                frames += [(ts + 1, late)] * (2 if anomaly == "late twice" else 1)
            elif anomaly == "glitch":  # a drop to near zero
                frames.append((ts + 1, draw(st.floats(min_value=0, max_value=min(value, RESTART_WH)))))
            elif anomaly == "spike":
                frames.append((ts + 1, 3_000_000.0 + draw(st.floats(min_value=0, max_value=1e6))))
    return frames, truth


def replay(kind: str, frames) -> LedgerState:
    state = LedgerState()
    for ts, value in frames:
        state, _ = advance(state, EnergyCounter(kind, value), ts)
    return state


@given(days=climbing_days("daily"))
def test_daily_totals_are_exact_through_dawns_duplicates_late_frames_glitches_and_spikes(days):
    frames, truth = days
    assert replay("daily", frames).total_wh == pytest.approx(truth)


@given(days=climbing_days("lifetime"))
def test_lifetime_totals_are_exact_through_duplicates_late_frames_zeros_and_spikes(days):
    frames, truth = days
    assert replay("lifetime", frames).total_wh == pytest.approx(truth)
