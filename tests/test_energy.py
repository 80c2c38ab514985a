"""The energy ledger: monotonic, no energy lost at the dawn reset, no double counting."""
from datetime import datetime

from hypothesis import given, strategies as st

from appliance.energy import LedgerState, advance
from appliance.reading import EnergyCounter


def run(kind, steps, start=0.0):
    state, ts, added = LedgerState(), start, []
    for gap, value in steps:
        ts += gap
        state, delta = advance(state, EnergyCounter(kind, value), ts)
        added.append(delta)
    return state, added


def test_first_daily_reading_counts_today_so_far():
    state, added = run("daily", [(0, 120.0)])
    assert state.total_wh == 120.0 and added == [120.0]


def test_first_lifetime_reading_is_the_total():
    state, added = run("lifetime", [(0, 1_347_515.0)])
    assert state.total_wh == 1_347_515.0 and added == [0.0]


def test_dawn_reset_loses_nothing():
    day1 = [(3600, v) for v in (100.0, 400.0, 900.0, 1500.0)]
    day2 = [(10 * 3600, 4.0)] + [(3600, v) for v in (50.0, 800.0)]
    state, _ = run("daily", day1 + day2)
    assert state.total_wh == 1500.0 + 800.0


def test_backward_jump_is_not_counted_twice():
    state, added = run("daily", [(0, 1000.0), (300, 1100.0), (300, 900.0), (300, 950.0)])
    assert added == [1000.0, 100.0, 0.0, 50.0]
    assert state.total_wh == 1150.0


def test_duplicate_packets_add_nothing():
    state, added = run("daily", [(0, 500.0), (0, 500.0), (1, 500.0)])
    assert state.total_wh == 500.0 and added[1:] == [0.0, 0.0]


def test_lifetime_counter_reset_rebases():
    state, added = run("lifetime", [(0, 5000.0), (60, 5010.0), (60, 3.0), (60, 13.0)])
    assert added == [0.0, 10.0, 0.0, 10.0]
    assert state.total_wh == 5020.0


def test_implausible_jump_is_a_glitch_not_energy():
    state, added = run("lifetime", [(0, 5000.0), (60, 9_000_000.0), (60, 5010.0), (60, 5020.0)])
    assert state.total_wh == 5010.0
    assert added[1] == 0.0


def test_same_value_next_morning_is_a_new_day():
    state, added = run("daily", [(0, 1.0), (86400, 1.0)])
    assert state.total_wh == 2.0 and added == [1.0, 1.0]


def test_long_daytime_outage_is_not_a_reset():
    state, added = run("daily", [(0, 1000.0), (3 * 3600, 1800.0)], start=datetime(2025, 6, 15, 9, 0).timestamp())
    assert added == [1000.0, 800.0]


def test_late_frame_does_not_rewind_the_clock():
    state, _ = run("daily", [(0, 10.0), (600, 20.0), (-300, 15.0)])
    assert state.last_timestamp == 600.0


steps = st.lists(
    st.tuples(st.floats(min_value=-600, max_value=48 * 3600), st.floats(min_value=-10, max_value=70_000)),
    max_size=60,
)


@given(kind=st.sampled_from(["daily", "lifetime"]), sequence=steps)
def test_total_never_decreases(kind, sequence):
    state, ts, total = LedgerState(), 1e9, 0.0
    for gap, value in sequence:
        ts += gap
        state, delta = advance(state, EnergyCounter(kind, value), ts)
        assert delta >= 0
        assert state.total_wh >= total
        total = state.total_wh


@given(days=st.lists(st.lists(st.floats(min_value=0, max_value=400), min_size=1, max_size=20),
                     min_size=1, max_size=8))
def test_days_of_growth_with_dawn_resets_sum_exactly(days):
    """Each day the counter climbs from near zero; the ledger ends with the sum of the days' finals."""
    sequence, expected = [], 0.0
    for day in days:
        value, first = 0.0, True
        for step in day:
            value += step
            sequence.append((86400 if first else 300, value))
            first = False
        expected += value
    state, _ = run("daily", sequence)
    assert abs(state.total_wh - expected) < 1e-6 * max(1.0, expected)
