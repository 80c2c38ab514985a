"""/metrics: parsed with prometheus_client's own parser; names, types, labels, values, staleness."""
from __future__ import annotations

import re
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from appliance import __version__
from appliance.protocols import enecsys, nep
from appliance.reading import STATES
from support.readings import nep_reading
from support.vectors import ENECSYS_REPORT_1, NEP_BDM400
from support.web_service import running_web

UNIT_SUFFIXES = ("_watts", "_volts", "_amperes", "_hertz", "_celsius", "_ratio", "_seconds", "_joules",
                 "_info", "_total", "_up", "_state", "_bytes", "_fds",
                 "_readings")  # a gauge that counts things is in those things (the guide's plural unit)


@pytest.fixture
def settings(settings):
    settings.web.stale_seconds = 600
    return settings


def scrape(client) -> dict:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.content_type.startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(reply.get_data(as_text=True))}


def samples(metric_family, **labels) -> list:
    return [s for s in metric_family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def value(families, name, **labels) -> float:
    found = [s for f in families.values() for s in f.samples if s.name == name
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0].value


def test_empty_store_still_has_build_info(client, store):
    families = scrape(client)
    # The 0.0.4 text format has no info type: an _info gauge of value 1 (OpenMetrics says "info").
    assert families["solargw_build_info"].type == "gauge"
    assert value(families, "solargw_build_info", version=__version__) == 1
    assert not [f for f in families if f.startswith("solargw_inverter") and families[f].samples]


def test_fresh_inverters_of_both_families(client, store):
    now = time.time()
    body = bytes.fromhex(NEP_BDM400["hex"])
    store.record(nep.decode(body, received_at=now - 5), source="10.42.0.9")
    store.count("packets_received", "nep", 2)
    store.reject(frame=b"\x00", family="nep", source="10.42.0.9", reason="test garbage")
    store.record(enecsys.decode(bytes.fromhex(ENECSYS_REPORT_1["hex"]), received_at=now - 3))
    store.rename("12345678", "Garage roof")

    families = scrape(client)
    nep_labels = {"serial": "12345678", "family": "nep"}
    ene_labels = {"serial": "100095471", "family": "enecsys"}

    assert families["solargw_inverter_info"].type == "gauge"
    info = samples(families["solargw_inverter_info"], **nep_labels)[0]
    assert info.name == "solargw_inverter_info" and info.value == 1
    assert info.labels["model"] == "bdm400" and info.labels["name"] == "Garage roof"
    assert "firmware" in info.labels

    assert families["solargw_inverter_energy_joules"].type == "counter"
    assert value(families, "solargw_inverter_energy_joules_total", **nep_labels) == pytest.approx(1349.6 * 3600)
    assert value(families, "solargw_inverter_energy_joules_total", **ene_labels) == pytest.approx(1347515 * 3600)

    assert value(families, "solargw_inverter_ac_power_watts", **nep_labels) == pytest.approx(223.89)
    assert value(families, "solargw_inverter_ac_voltage_volts", **nep_labels) == pytest.approx(233.2)
    assert value(families, "solargw_inverter_ac_frequency_hertz", **nep_labels) == pytest.approx(49.9922, abs=1e-3)
    assert value(families, "solargw_inverter_temperature_celsius", **nep_labels) == pytest.approx(53.27)
    assert value(families, "solargw_inverter_dc_input_current_amperes", input="2", **nep_labels) == pytest.approx(4.3)
    assert value(families, "solargw_inverter_efficiency_ratio", **ene_labels) == pytest.approx(0.846)
    assert value(families, "solargw_inverter_dc_power_watts", **ene_labels) == 44
    assert value(families, "solargw_inverter_up", **nep_labels) == 1
    assert value(families, "solargw_inverter_last_seen_timestamp_seconds", **nep_labels) == pytest.approx(now - 5)
    states = {s.labels["state"]: s.value for s in samples(families["solargw_inverter_state"], **nep_labels)}
    assert set(states) == set(STATES) and states["producing"] == 1 and sum(states.values()) == 1

    assert families["solargw_packets_rejected"].type == "counter"
    assert value(families, "solargw_packets_rejected_total", family="nep") == 1
    assert value(families, "solargw_packets_received_total", family="nep") == 2
    assert value(families, "solargw_readings_recorded_total", family="enecsys") == 1


def test_silent_inverters_lose_their_instant_values_not_their_energy(client, store):
    now = time.time()
    store.record(nep_reading("aaaaaaaa", power_w=321.0, today_wh=500, timestamp=now - 3600))
    store.record(nep_reading("bbbbbbbb", power_w=123.0, today_wh=50, timestamp=now - 10))
    families = scrape(client)
    assert value(families, "solargw_inverter_up", serial="aaaaaaaa") == 0
    assert value(families, "solargw_inverter_up", serial="bbbbbbbb") == 1
    power = {s.labels["serial"]: s.value for s in families["solargw_inverter_ac_power_watts"].samples}
    assert power == {"bbbbbbbb": 123.0}
    assert not samples(families["solargw_inverter_state"], serial="aaaaaaaa")
    assert value(families, "solargw_inverter_energy_joules_total", serial="aaaaaaaa") == pytest.approx(500 * 3600)
    assert samples(families["solargw_inverter_info"], serial="aaaaaaaa")


def test_names_follow_the_naming_guide(client, store):
    store.record(nep_reading(timestamp=time.time()))
    store.count("relay_sent", "nep")
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", family.name)
        assert family.name.startswith(("solargw_", "process_", "solargw_web_process")), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.name.startswith("solargw_"):
            full = family.samples[0].name if family.samples else family.name
            assert full.endswith(UNIT_SUFFIXES), full
    names = re.findall(r"^(solargw_\w+)", text, re.M)
    assert names and not [n for n in names if "_wh" in n or "watt_hours" in n or "kwh" in n]  # joules only


def test_each_scrape_is_fresh(client, store):
    store.record(nep_reading("12345678", power_w=100.0, timestamp=time.time()))
    assert value(scrape(client), "solargw_inverter_ac_power_watts", serial="12345678") == 100
    store.record(nep_reading("12345678", power_w=250.0, today_wh=150, timestamp=time.time()))
    assert value(scrape(client), "solargw_inverter_ac_power_watts", serial="12345678") == 250


@pytest.mark.slow
def test_metrics_through_gunicorn_openmetrics_and_text(tmp_path):
    from appliance.sim import nep_inverters

    with running_web(tmp_path) as web:
        assert nep_inverters.post(web.url, "/i.php", bytes.fromhex(NEP_BDM400["hex"])).status == 200
        text = requests.get(web.url + "metrics", timeout=5)
        assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(text.text)}
        assert value(families, "solargw_inverter_ac_power_watts", serial="12345678") == pytest.approx(223.89)
        assert value(families, "solargw_packets_received_total", family="nep") == 1
        om = requests.get(web.url + "metrics", timeout=5,
                          headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        assert "# TYPE solargw_inverter info" in om.text and "# TYPE solargw_build info" in om.text


def test_storage_state_and_readings_waiting_for_the_card(client, store):
    """The store's health: ``solargw_storage_state`` (1 for the current state), the readings waiting in
    memory and the last write that reached the card. (The real read-only and full cards:
    tests/test_storage_visible.py.)"""
    store.record(nep_reading(timestamp=time.time()))
    families = scrape(client)
    assert [value(families, "solargw_storage_state", state=s) for s in ("ok", "read-only", "full", "error")] == [
        1, 0, 0, 0]
    assert value(families, "solargw_storage_queued_readings") == 1
    assert "solargw_storage_last_write_timestamp_seconds" not in families  # nothing written yet
    assert store.flush()
    families = scrape(client)
    assert value(families, "solargw_storage_queued_readings") == 0
    assert time.time() - value(families, "solargw_storage_last_write_timestamp_seconds") < 60
