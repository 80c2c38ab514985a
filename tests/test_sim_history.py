"""The demo's week of history (appliance.sim.history): written through the store, plausible per day,
and continued by the live simulators without a jump in any energy total."""
from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from appliance.protocols import enecsys, nep
from appliance.sim import history, nep_inverters
from appliance.sim.enecsys_inverters import EnecsysInverter
from appliance.sim.sun import SimClock
from appliance.store import Store, local_day

NOW = datetime.now().replace(hour=15, minute=0, second=0, microsecond=0)
ZIGBEE, GATEWAY = [100095471, 100012445], [120069930]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    # NOW is 15:00 today: from late morning on, the first day's dawn is more than 7 days before the real
    # clock, and the store's compaction (full_resolution_days, on the real clock) would thin it out.
    store = Store(tmp_path_factory.mktemp("history"), full_resolution_days=9)
    fleet = nep_inverters.make_fleet(2, ["bdm400", "bdm1200"], seed=1)
    result = history.write(store, zigbee_serials=ZIGBEE, gateway_serials=GATEWAY, nep_fleet=fleet, now=NOW, days=7)
    yield store, result, fleet
    store.close()


def test_every_inverter_has_a_week_of_days_and_readings(written):
    store, result, fleet = written
    assert result.inverters == 5 and result.days == 7
    serials = [str(s) for s in ZIGBEE + GATEWAY] + [inverter.serial for inverter in fleet]
    assert sorted(i.serial for i in store.inverters()) == sorted(serials)
    past = [local_day((NOW - timedelta(days=n)).timestamp()) for n in range(7, -1, -1)]
    for serial in serials:
        days = dict(store.energy_per_day(serial, days=30))
        assert sorted(days) == past[1:] or sorted(days) == past, serial  # 7 days ago counts from its first reading
        for day in past[1:-1]:  # whole days: plausible for a 220-1200 W inverter
            assert 50 < days[day] < 1200 * 14, (serial, day, days[day])
        points = store.history(serial, (NOW - timedelta(days=2)).timestamp(), (NOW - timedelta(days=1)).timestamp())
        assert len(points) >= 60, serial  # every 10 minutes of a day's light
    assert result.readings == sum(len(store.history(s, 0, NOW.timestamp())) for s in serials)


def test_days_differ_like_weather_and_the_sources_name_the_live_services(written):
    store, _, _ = written
    days = [wh for _, wh in store.energy_per_day("100095471", days=30)][1:-1]
    assert max(days) > 1.5 * min(days)  # not seven copies of one clear day
    latest = store.latest()
    assert latest["100095471"].source.startswith("zigbee:") and latest["120069930"].source.startswith("gateway:")
    assert not any(latest[s].source.startswith(("zigbee:", "gateway:")) for s in latest if not s.isdigit())


def test_enecsys_history_ends_where_the_live_simulator_starts(written):
    store, _, _ = written
    for serial in ZIGBEE + GATEWAY:
        live = EnecsysInverter(None, serial, interval=10, clock=SimClock.at(12.0))  # what the demo starts
        info = store.inverter(str(serial))
        assert info.lifetime_wh == pytest.approx(int(live.lifetime_wh), abs=1)
        before = store.energy_per_day(str(serial), days=1)
        frame = live.next_report()
        recorded = store.record(enecsys.decode(frame, received_at=NOW.timestamp() + 60), source="zigbee:0x1234")
        assert 0 <= recorded.delta_wh < 5  # ten seconds of sun, not a week's worth
        assert store.energy_per_day(str(serial), days=1)[0][1] == pytest.approx(before[0][1] + recorded.delta_wh)


def test_a_nep_live_counter_restarting_at_zero_adds_only_its_own_energy(written):
    store, _, fleet = written
    serial = fleet[0].serial
    today_before = store.inverter(serial).energy_today_wh
    live = nep_inverters.make_fleet(2, ["bdm400", "bdm1200"], seed=1)[0]  # the live simulator's own copy
    added = 0.0
    for n, minute in enumerate((0, 1, 2, 3)):
        moment = datetime.combine(NOW.date(), datetime.min.time()).replace(hour=12, minute=minute)
        body = live.packet(moment, random.Random(n))
        recorded = store.record(nep.decode(body, model="auto", received_at=NOW.timestamp() + 120 + 60 * n),
                                source="127.0.0.1")
        added += recorded.delta_wh
    assert store.inverter(serial).energy_today_wh == pytest.approx(today_before + added)
    assert 0 < added <= live.energy_today_wh + 1e-6  # taken as a restart, never more than it says
