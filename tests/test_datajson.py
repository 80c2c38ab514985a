"""/data.json (the seed's shape, extended; Enecsys with the seed PoC's names) and the /api JSON."""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from appliance.protocols import enecsys
from appliance.settings import Settings
from appliance.store import Store
from appliance.web.app import create_app
from factories import nep_reading
from server import running_web
from vectors import ENECSYS_REPORT_1, NEP_BDM400, NEP_BDM800


@pytest.fixture
def setup(tmp_path: Path):
    settings = Settings()
    settings.data.dir = str(tmp_path / "data")
    settings.mqtt.enabled = False
    store = Store(settings.data_dir)
    return create_app(settings, store).test_client(), store


def test_data_json_keeps_the_seed_shape_and_adds_every_field(setup):
    client, store = setup
    now = time.time()
    client.post("/i.php", data=bytes.fromhex(NEP_BDM400["hex"]))
    document = client.get("/data.json").get_json()
    entry = document["12345678"]
    # The seed server's keys, with the same meaning.
    assert entry["datapoint"] == {"serial_number": "12345678", "watt": pytest.approx(223.89)}
    assert entry["payload"] == NEP_BDM400["hex"]
    assert abs(datetime.fromisoformat(entry["timestamp"]).timestamp() - now) < 5
    # And the rest.
    assert entry["family"] == "nep" and entry["model"] == "bdm400"
    assert entry["lifetime_wh"] == pytest.approx(1349.6)
    assert entry["fields"]["ac_frequency_hz"] == pytest.approx(49.9922, abs=1e-3)
    assert entry["fields"]["energy_today_wh"] == pytest.approx(1349.6)
    assert "serial" not in entry  # the PoC names are for Enecsys inverters


def test_enecsys_entries_carry_the_poc_names(setup):
    client, store = setup
    store.record(enecsys.decode(bytes.fromhex(ENECSYS_REPORT_1["hex"]), received_at=time.time()))
    entry = client.get("/data.json").get_json()["100095471"]
    v = ENECSYS_REPORT_1
    expected = {
        "serial": "100095471", "mac": v["ieee"], "state": 0, "dc_current": v["dc_current_a"],
        "dc_watts": v["dc_power_w"], "efficiency": v["efficiency_ratio"], "ac_freq": v["ac_frequency_hz"],
        "ac_volt": v["ac_voltage_v"], "temp": v["temperature_c"], "wh": v["wh"], "kwh": v["kwh"],
        "lifetime_wh": v["lifetime_wh"],
    }
    for name, value in expected.items():
        assert entry[name] == pytest.approx(value), name
    assert entry["ac_watts"] == pytest.approx(v["ac_power_w"], abs=0.05)
    assert entry["dc_volt"] == pytest.approx(v["dc_voltage_v"], abs=0.05)
    assert entry["datapoint"]["watt"] == entry["ac_watts"]
    assert entry["family"] == "enecsys"


def test_api_inverters_latest_history_and_energy(setup):
    client, store = setup
    now = time.time()
    for i in range(5):
        store.record(nep_reading("12345678", today_wh=100 + 20 * i, power_w=200 + i, timestamp=now - 400 + 60 * i))
    store.rename("12345678", "Shed")

    inverters = client.get("/api/inverters").get_json()
    assert [(i["serial"], i["name"], i["online"]) for i in inverters] == [("12345678", "Shed", True)]
    assert inverters[0]["lifetime_wh"] == pytest.approx(180)

    latest = client.get("/api/latest").get_json()
    assert latest["12345678"]["fields"]["ac_power_w"] == 204

    reply = client.get(f"/api/inverters/12345678/history?start={now - 290}&end={now}")
    points = reply.get_json()["points"]
    assert [p["fields"]["ac_power_w"] for p in points] == [202, 203, 204]
    assert points == sorted(points, key=lambda p: p["timestamp"])

    energy = client.get("/api/energy/daily?serial=12345678&days=7").get_json()["energy"]
    assert sum(day["wh"] for day in energy) == pytest.approx(180)
    all_inverters = client.get("/api/energy/daily?days=2").get_json()  # 2: the readings may straddle midnight
    assert all_inverters["serial"] is None
    assert sum(day["wh"] for day in all_inverters["energy"]) == pytest.approx(180)


@pytest.mark.parametrize("url, status", [
    ("/api/inverters/nope/history", 404),
    ("/api/inverters/12345678/history?start=abc", 400),
    ("/api/inverters/12345678/history?start=nan", 400),
    ("/api/inverters/12345678/history?start=10&end=5", 400),
    ("/api/energy/daily?days=0", 400),
    ("/api/energy/daily?days=x", 400),
])
def test_api_errors_are_json(setup, url, status):
    client, store = setup
    store.record(nep_reading("12345678", timestamp=time.time()))
    reply = client.get(url)
    assert reply.status_code == status
    assert reply.get_json()["error"]


@pytest.mark.slow
def test_data_json_through_gunicorn(tmp_path):
    from appliance.sim import nep_inverters

    with running_web(tmp_path) as web:
        for vector in (NEP_BDM400, NEP_BDM800):
            assert nep_inverters.post(web.url, "/i.php", bytes.fromhex(vector["hex"])).status == 200
        document = requests.get(web.url + "data.json", timeout=5).json()
        assert {k: v["datapoint"]["serial_number"] for k, v in document.items()} == {
            "12345678": "12345678", "deadbeef": "deadbeef"}
        assert document["deadbeef"]["payload"] == NEP_BDM800["hex"]
        assert document["deadbeef"]["datapoint"]["watt"] == pytest.approx(282.72, abs=0.01)
