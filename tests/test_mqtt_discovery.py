"""Home Assistant discovery and state payloads (pure: no broker)."""
from __future__ import annotations

import json
import math

import jinja2
import pytest

from appliance import __version__
from appliance.mqtt import discovery as ha
from appliance.mqtt.publisher import _dumps
from appliance.protocols import enecsys, nep
from appliance.reading import STATES
from support.vectors import NEP_BDM800

TOPICS = ha.Topics("homeassistant", "solargw", "web")
ENECSYS_REPORT = "5700ef55f705009ac63421010000000214300388000034002c034e3100f32002030543000049"
NOW = 1_790_000_000.0


def render(template: str, state: dict) -> str:
    """Render a value_template the way Home Assistant does (Jinja, ``value_json`` = parsed payload)."""
    return jinja2.Environment().from_string(template).render(value_json=json.loads(_dumps(state)))


def nep_bdm800():
    return nep.decode(bytes.fromhex(NEP_BDM800["hex"]), model="bdm800", received_at=NOW)


def enecsys_report():
    return enecsys.decode(bytes.fromhex(ENECSYS_REPORT), received_at=NOW)


def announce(reading, *, name="", per_entity=False, url="http://solargw.local/"):
    identity = ha.InverterIdentity(reading.family, reading.serial, name=name, model=reading.model,
                                   firmware="")
    keys = ha.inverter_entity_keys(reading.fields)
    return keys, ha.inverter_discovery(identity, keys, TOPICS, appliance="solargw_solargw", url=url,
                                       per_entity=per_entity)


def test_device_discovery_message_for_a_nep_inverter():
    keys, pairs = announce(nep_bdm800())
    assert len(pairs) == 1
    topic, payload = pairs[0]
    assert topic == "homeassistant/device/solargw_nep_deadbeef/config"
    assert set(payload) == {"device", "origin", "components"}
    assert payload["device"] == {
        "identifiers": ["solargw_nep_deadbeef"],
        "name": "NEP deadbeef",
        "manufacturer": "NEP",
        "model": "BDM-800",  # the vendor's name, not the scale's
        "serial_number": "deadbeef",
        "via_device": "solargw_solargw",
        "configuration_url": "http://solargw.local/inverter/deadbeef",
    }
    assert payload["origin"] == {"name": "solargw", "sw_version": __version__}
    components = payload["components"]
    assert list(components) == list(keys)
    for key, config in components.items():
        assert config["platform"] == "sensor"
        assert config["unique_id"] == f"solargw_nep_deadbeef_{key}"
        assert config["state_topic"] == "solargw/inverter/deadbeef/state"
        assert config["name"]
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids)


def test_only_the_entities_a_family_has():
    nep_keys, _ = announce(nep_bdm800())
    enecsys_keys, _ = announce(enecsys_report())
    assert set(nep_keys) == {"ac_power_w", "lifetime_wh", "energy_today_wh", "ac_voltage_v",
                             "ac_frequency_hz", "dc_current_a", "dc_current_1_a", "dc_current_2_a",
                             "temperature_c", "state", "last_seen"}
    assert set(enecsys_keys) == {"ac_power_w", "lifetime_wh", "energy_today_wh", "dc_power_w",
                                 "ac_voltage_v", "ac_frequency_hz", "dc_current_a", "dc_voltage_v",
                                 "temperature_c", "efficiency_ratio", "state", "alarms", "last_seen"}


def test_entity_classes_units_and_categories():
    _, [(_, payload)] = announce(enecsys_report(), name="Garage roof")
    c = payload["components"]
    assert payload["device"]["name"] == "Garage roof"
    assert payload["device"]["manufacturer"] == "Enecsys"
    assert "model" not in payload["device"]  # unknown until the info frame
    assert (c["ac_power_w"]["device_class"], c["ac_power_w"]["state_class"],
            c["ac_power_w"]["unit_of_measurement"]) == ("power", "measurement", "W")
    assert (c["lifetime_wh"]["device_class"], c["lifetime_wh"]["state_class"],
            c["lifetime_wh"]["unit_of_measurement"]) == ("energy", "total_increasing", "kWh")
    assert c["lifetime_wh"]["suggested_display_precision"] == 2
    assert (c["energy_today_wh"]["unit_of_measurement"], c["energy_today_wh"]["suggested_display_precision"]) == (
        "Wh", 0)
    assert c["energy_today_wh"]["device_class"] == "energy"
    assert "state_class" not in c["energy_today_wh"]  # resets at dawn: not for the Energy dashboard
    assert (c["ac_voltage_v"]["device_class"], c["ac_voltage_v"]["unit_of_measurement"]) == ("voltage", "V")
    assert (c["dc_voltage_v"]["device_class"], c["dc_voltage_v"]["unit_of_measurement"]) == ("voltage", "V")
    assert (c["ac_frequency_hz"]["device_class"], c["ac_frequency_hz"]["unit_of_measurement"]) == ("frequency", "Hz")
    assert (c["dc_current_a"]["device_class"], c["dc_current_a"]["unit_of_measurement"]) == ("current", "A")
    assert (c["temperature_c"]["device_class"], c["temperature_c"]["unit_of_measurement"]) == ("temperature", "°C")
    assert c["efficiency_ratio"]["unit_of_measurement"] == "%"
    assert c["state"]["device_class"] == "enum"
    assert c["state"]["options"] == list(STATES)
    assert "device_class" not in c["alarms"]
    assert (c["last_seen"]["device_class"], c["last_seen"]["entity_category"]) == ("timestamp", "diagnostic")
    for key, config in c.items():
        if key != "last_seen":
            assert "entity_category" not in config, key


def test_availability_rules_keep_energy_and_power_through_the_night():
    _, [(_, payload)] = announce(enecsys_report())
    service = {"topic": "solargw/web/availability"}
    inverter = {"topic": "solargw/inverter/100095471/availability"}
    for key, config in payload["components"].items():
        assert config["availability_mode"] == "all"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        if key in ("ac_power_w", "dc_power_w", "lifetime_wh", "energy_today_wh", "state", "last_seen"):
            assert config["availability"] == [service], key
        else:
            assert config["availability"] == [service, inverter], key


def test_configuration_url_uses_the_public_url():
    _, [(_, payload)] = announce(nep_bdm800(), url=ha.web_url("https://pv.example.org/solar", "x"))
    assert payload["device"]["configuration_url"] == "https://pv.example.org/solar/inverter/deadbeef"
    assert ha.web_url("", "roof") == "http://roof.local/"


def test_per_entity_discovery_topics():
    keys, pairs = announce(nep_bdm800(), per_entity=True)
    assert [topic for topic, _ in pairs] == [
        f"homeassistant/sensor/solargw_nep_deadbeef/{key}/config" for key in keys]
    for (_topic, payload), key in zip(pairs, keys, strict=True):
        assert payload["unique_id"] == f"solargw_nep_deadbeef_{key}"
        assert payload["device"]["identifiers"] == ["solargw_nep_deadbeef"]
        assert payload["origin"]["name"] == "solargw"
        assert "platform" not in payload
    # removal covers both forms, whichever was used
    removal = ha.inverter_discovery_topics("nep", "deadbeef", TOPICS)
    assert "homeassistant/device/solargw_nep_deadbeef/config" in removal
    assert {topic for topic, _ in pairs} <= set(removal)


def test_state_payload_and_templates_of_a_producing_inverter():
    reading = enecsys_report()
    keys, [(_, payload)] = announce(reading)
    state = ha.inverter_state(keys, reading.fields, lifetime_wh=1_347_515.0, energy_today_wh=215.0,
                              last_seen=NOW)
    assert set(state) == set(keys) | {"asleep"}
    values = {key: render(config["value_template"], state)
              for key, config in payload["components"].items()}
    assert values["ac_power_w"] == "37.224"
    assert values["lifetime_wh"] == "1347.515"  # kWh, every Wh kept (the state JSON stays in Wh)
    assert values["energy_today_wh"] == "215.0"
    assert values["efficiency_ratio"] == "84.6"
    assert values["dc_voltage_v"] == str(reading.fields["dc_voltage_v"])
    assert values["state"] == "producing"
    assert values["alarms"] == "none"
    assert values["last_seen"] == "2026-09-21T14:13:20+00:00"


def test_asleep_state_reads_zero_power_and_keeps_energy():
    reading = enecsys_report()
    keys, [(_, payload)] = announce(reading)
    state = ha.inverter_state(keys, reading.fields, lifetime_wh=1_347_515.0, energy_today_wh=980.0,
                              last_seen=NOW, asleep=True)
    assert state["asleep"] is True
    assert state["ac_power_w"] == 0 and state["dc_power_w"] == 0
    assert state["lifetime_wh"] == 1_347_515.0 and state["energy_today_wh"] == 980.0
    assert state["state"] == "sleeping"
    assert state["ac_voltage_v"] is None and state["efficiency_ratio"] is None
    # Home Assistant treats a template rendering "None" as unknown (and those are unavailable anyway)
    assert render(payload["components"]["efficiency_ratio"]["value_template"], state) == "None"
    assert render(payload["components"]["lifetime_wh"]["value_template"], state) == "1347.515"


def test_alarms_and_unknown_states():
    keys = ha.inverter_entity_keys(["alarms", "state"])
    state = ha.inverter_state(keys, {"alarms": ("grid_high", "islanding"), "state": "exploded"},
                              lifetime_wh=1.0, energy_today_wh=None, last_seen=NOW)
    assert state["alarms"] == ["grid_high", "islanding"]
    assert state["state"] == "unknown"
    _, [(_, payload)] = announce(enecsys_report())
    assert render(payload["components"]["alarms"]["value_template"], state) == "grid_high, islanding"


def test_missing_values_are_null_not_missing():
    keys = ha.inverter_entity_keys(["ac_voltage_v"])
    state = ha.inverter_state(keys, {}, lifetime_wh=None, energy_today_wh=None, last_seen=NOW)
    assert state["ac_voltage_v"] is None and state["ac_power_w"] is None and state["state"] is None
    assert json.loads(_dumps({"x": math.nan, "y": [math.inf, 1.5]})) == {"x": None, "y": [None, 1.5]}


def test_appliance_device_is_shared_by_both_services():
    web = ha.appliance_discovery("solargw", "http://solargw.local/", TOPICS, ["inverters", "wifi"])
    zigbee_topics = ha.Topics("homeassistant", "solargw", "zigbee")
    zigbee = ha.appliance_discovery("solargw", "http://solargw.local/", zigbee_topics,
                                    ["inverters", "zigbee", "coordinator firmware"])
    [(web_topic, web_payload)], [(zb_topic, zb_payload)] = web, zigbee
    assert web_topic == "homeassistant/device/solargw_solargw_web/config"
    assert zb_topic == "homeassistant/device/solargw_solargw_zigbee/config"
    assert web_payload["device"] == zb_payload["device"]
    device = web_payload["device"]
    assert device["identifiers"] == ["solargw_solargw"]
    assert device["sw_version"] == __version__
    assert device["configuration_url"] == "http://solargw.local/"
    assert set(web_payload["components"]) == {"started", "version", "inverters", "wifi"}
    assert set(zb_payload["components"]) == {"started", "version", "inverters", "zigbee",
                                             "coordinator_firmware"}
    ids = [c["unique_id"] for p in (web_payload, zb_payload) for c in p["components"].values()]
    assert len(set(ids)) == len(ids)
    started = web_payload["components"]["started"]
    assert (started["device_class"], started["state_topic"]) == ("timestamp", "solargw/web/status")
    assert started["availability"] == [{"topic": "solargw/web/availability"}]
    status = ha.status_state({"inverters": 3, "wifi": "ok", "zigbee": {"x": 1}}, started=NOW)
    assert status["version"] == __version__ and status["inverters"] == 3
    assert status["started"] == "2026-09-21T14:13:20+00:00"
    assert status["zigbee"] == "{'x': 1}"
    assert render(zb_payload["components"]["coordinator_firmware"]["value_template"],
                  ha.status_state({"coordinator firmware": "20220219"}, started=NOW)) == "20220219"


@pytest.mark.parametrize("text, expected", [("deadbeef", "deadbeef"), ("a/b+#", "a_b__"), ("", "_")])
def test_slug_makes_topic_levels_safe(text, expected):
    assert ha.slug(text) == expected


@pytest.mark.parametrize("hostname, name", [
    ("solargw", "solargw"), ("solargw-2", "solargw-2"), ("garage", "solargw garage"), ("SolarGW-loft", "SolarGW-loft"),
])
def test_the_appliance_is_named_solargw_once(hostname, name):
    assert ha.appliance_device(hostname, "http://x/")["name"] == name
    assert ha.appliance_device(hostname, "http://x/")["identifiers"] == [f"solargw_{hostname}"]  # unchanged


def test_every_nep_model_has_the_vendors_name():
    assert [ha.model_name("nep", m) for m in nep.MODELS if m != "auto"] == [
        "BDM-300", "BDM-400", "BDM-600", "BDM-800", "BDM-1200-LV", "BDM-2000", "BDM-2250"]
    assert ha.model_name("enecsys", "WSI-00003") == "WSI-00003" and ha.model_name("nep", "odd") == "odd"


def test_an_enecsys_info_frame_gives_the_firmware_and_the_announcement_carries_it():
    info = enecsys.decode(enecsys.encode_info(100095471, "WSI-00003", "25-04-12 06:58", counter=1), received_at=NOW)
    assert info.fields["firmware"] == "WSI-00003 (25-04-12 06:58)"
    identity = ha.InverterIdentity("enecsys", "100095471", model=info.model, firmware=info.fields["firmware"])
    assert ha.inverter_device(identity, "solargw_solargw", "http://x/")["sw_version"] == "WSI-00003 (25-04-12 06:58)"


def test_storage_is_a_problem_binary_sensor_on_the_appliance():
    """The web service's ``storage`` status (the store's health state) is Home Assistant's
    "Storage" problem sensor: on while the SD card does not take writes."""
    [(_, payload)] = ha.appliance_discovery("solargw", "http://solargw.local/", TOPICS, ["storage", "storage_queued"])
    storage, queued = payload["components"]["storage"], payload["components"]["storage_queued"]
    assert {k: storage[k] for k in ("platform", "name", "device_class", "entity_category", "state_topic")} == {
        "platform": "binary_sensor", "name": "Storage", "device_class": "problem",
        "entity_category": "diagnostic", "state_topic": "solargw/web/status"}
    assert "unit_of_measurement" not in storage and "state_class" not in storage  # not sensor options
    for state, shown in (("ok", "OFF"), ("read-only", "ON"), ("full", "ON"), ("error", "ON")):
        assert render(storage["value_template"], ha.status_state({"storage": state}, started=NOW)) == shown
    assert (queued["platform"], queued["state_class"], queued["entity_category"]) == (
        "sensor", "measurement", "diagnostic")
    assert render(queued["value_template"], ha.status_state({"storage_queued": 7}, started=NOW)) == "7"
    per_entity = dict(ha.appliance_discovery("solargw", "http://solargw.local/", TOPICS, ["storage"], per_entity=True))
    assert "homeassistant/binary_sensor/solargw_solargw_web/storage/config" in per_entity
    assert "platform" not in per_entity["homeassistant/binary_sensor/solargw_solargw_web/storage/config"]
