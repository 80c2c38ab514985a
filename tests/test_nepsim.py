"""The NEP inverter simulator: day curve, night silence, dawn reset, real packets, and the CLI."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from appliance.protocols import nep
from appliance.sim import nep_inverters, sun
from server import running_web

DAY = datetime(2026, 6, 21)


def moments(start: datetime, end: datetime, step_minutes: int = 5):
    while start <= end:
        yield start
        start += timedelta(minutes=step_minutes)


def test_the_sun_rises_peaks_and_sets():
    assert sun.sun_fraction(DAY.replace(hour=2)) is None
    assert sun.sun_fraction(DAY.replace(hour=5, minute=45)) == 0.0
    assert sun.sun_fraction(DAY.replace(hour=13)) == pytest.approx(1.0)
    assert 0 < sun.sun_fraction(DAY.replace(hour=8)) < sun.sun_fraction(DAY.replace(hour=11)) < 1
    assert sun.sun_fraction(DAY.replace(hour=20, minute=15)) == 0.0
    assert sun.sun_fraction(DAY.replace(hour=23)) is None


@pytest.mark.parametrize("model", list(nep_inverters.RATED_W))
def test_every_packet_is_a_valid_frame_of_its_model(model):
    fleet = nep_inverters.make_fleet(1, [model], seed=5)
    packets = list(nep_inverters.rounds_iter(fleet, moments(DAY.replace(hour=5), DAY.replace(hour=21))))
    assert packets
    rated = nep_inverters.RATED_W[model]
    for moment, inverter, body in packets:
        assert len(body) == (69 if model in nep_inverters.T_PHP_MODELS else 45)
        assert inverter.path == ("/t.php" if len(body) == 69 else "/i.php")
        reading = nep.decode(body, model=model, received_at=moment.timestamp())
        assert reading.checksum_ok and reading.serial == inverter.serial
        assert 0 <= reading.fields["ac_power_w"] <= rated
        assert reading.fields["state"] in ("producing", "standby")
    peak = max(nep.decode(b, model=model, received_at=0).fields["ac_power_w"] for _, _, b in packets)
    assert peak > 0.6 * rated


def test_night_silence_and_the_dawn_reset_of_the_daily_counter():
    [inverter] = nep_inverters.make_fleet(1, ["bdm800"], seed=2)
    two_days = list(nep_inverters.rounds_iter([inverter], moments(DAY.replace(hour=4), DAY.replace(hour=4) + timedelta(days=1, hours=10))))
    times = [m for m, _, _ in two_days]
    night = [m for m in times if m.hour >= 21 or m.hour < 5]
    assert not night, "an inverter posted at night"
    energies = [(m, nep.decode(b, model="bdm800", received_at=0).fields["energy_today_wh"]) for m, _, b in two_days]
    day1 = [e for m, e in energies if m.date() == DAY.date()]
    day2 = [e for m, e in energies if m.date() != DAY.date()]
    assert day1 == sorted(day1) and day1[-1] > 2000
    assert day2[0] < 1 and day2 == sorted(day2)  # restarted at the first packet of the morning


def test_the_same_seed_gives_the_same_fleet():
    a = nep_inverters.make_fleet(4, ["bdm400", "bdm2250"], seed=9)
    b = nep_inverters.make_fleet(4, ["bdm400", "bdm2250"], seed=9)
    assert [(i.serial, i.model) for i in a] == [(i.serial, i.model) for i in b]
    assert [i.model for i in a] == ["bdm400", "bdm2250", "bdm400", "bdm2250"]
    assert len({i.serial for i in a}) == 4
    with pytest.raises(ValueError, match="unknown model"):
        nep_inverters.make_fleet(1, ["bdm999"])


def test_the_simulated_clock_runs_at_its_speed():
    ticks = iter([100.0, 110.0])
    clock = sun.SimClock(DAY.replace(hour=6), speed=60, monotonic=lambda: next(ticks))
    assert clock.now() == DAY.replace(hour=6, minute=10)


def test_requests_look_like_an_inverters():
    request = nep.build_request(nep.PORTAL_HOST, "/i.php", b"\x79abc")
    assert request == (b"POST /i.php HTTP/1.1\r\nHost: www.nepviewer.net\r\nConnection: close\r\n"
                       b"Content-Length: 4\r\n\r\n\x79abc")


def test_cli_rejects_bad_arguments_in_one_line():
    result = subprocess.run([sys.executable, "-m", "appliance", "simulate", "nep", "--models", "bdm999",
                             "--rounds", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown model 'bdm999'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_simulate_nep_against_the_real_collector(tmp_path):
    with running_web(tmp_path) as web:
        result = subprocess.run(
            [sys.executable, "-m", "appliance", "simulate", "nep", "--url", web.url, "--inverters", "3",
             "--models", "bdm400,bdm800,bdm1200", "--interval", "0.2", "--rounds", "3", "--start", "11:00",
             "--speed", "300"],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "9 posts answered with the time, 0 failed" in result.stdout
        store = web.store()
        models = {inv.serial: inv.model for inv in store.inverters()}
        fleet = nep_inverters.make_fleet(3, ["bdm400", "bdm800", "bdm1200"], seed=1)
        assert models == {inv.serial: inv.model for inv in fleet}
        assert store.counters()[("readings_recorded", "nep")] == 9
        assert all(inv.lifetime_wh > 0 for inv in store.inverters())
        assert ("packets_rejected", "nep") not in store.counters()
