"""What Home Assistant users saw (issue 17, item 3), each against a real mosquitto: the appliance
named once, the inverter count that follows the store, the vendor's model names, the firmware
an inverter tells, and lifetime energy in kWh."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest

from appliance.mqtt import make_publisher
from appliance.pipeline import Pipeline
from appliance.protocols import enecsys, nep
from appliance.settings import Settings
from appliance.store import Store
from brokers import mosquitto
from server import running_web
from vectors import NEP_BDM400, NEP_BDM1200_T

pytestmark = pytest.mark.slow

APPLIANCE_WEB = "homeassistant/device/solargw_solargw_web/config"


def payload(message) -> dict:
    return json.loads(message.payload)


@pytest.fixture
def broker():
    with mosquitto() as running:
        yield running


def publisher_for(broker, tmp_path, service="web", **options):
    base = Settings()
    settings = dataclasses.replace(base, mqtt=broker.mqtt_settings(),
                                   data=dataclasses.replace(base.data, dir=str(tmp_path / "data")))
    options.setdefault("config_settle", 0.2)
    options.setdefault("republish_delay", (0.2, 0.4))
    publisher = make_publisher(settings, service, **options)
    assert publisher is not None and publisher.connection.wait_connected(10)
    return publisher, settings


def enecsys_report(serial: int, lifetime_wh: int, when: float | None = None):
    frame = enecsys.encode_report(serial, 2, 0, 1.3, 44, 0.846, 49, 243, 32, lifetime_wh)
    return enecsys.decode(frame, received_at=time.time() if when is None else when)


def test_the_appliance_device_is_named_solargw_once(broker, tmp_path):
    with broker.subscribe("homeassistant/#") as log:
        publisher, _ = publisher_for(broker, tmp_path)
        try:
            publisher.publish_status({"inverters": 0})
            device = payload(log.wait(APPLIANCE_WEB))["device"]
        finally:
            publisher.close()
    # Home Assistant names the entities "<device> <entity>": sensor.solargw_zigbee, not solargw_solargw_zigbee
    assert device["name"] == "solargw" and device["identifiers"] == ["solargw_solargw"]


def test_the_inverter_count_follows_the_store_and_a_republish_sends_the_current_one(broker, tmp_path):
    """No NEP inverter posts here: the Zigbee service (another process) records inverters in the
    shared store, and the web service's Inverters sensor follows, also after Home Assistant restarts."""
    settings = {"mqtt": {"enabled": True, "host": broker.host, "port": broker.port}}
    with broker.subscribe("solargw/#", "homeassistant/#") as log, running_web(tmp_path, settings) as web:
        zigbee = Pipeline(Store(web.data_dir))  # the other process's writes
        first = payload(log.wait("solargw/web/status", timeout=20))
        assert first["inverters"] == 0 and "wifi" in first
        zigbee.handle(enecsys_report(100095471, 1_347_515), source="zigbee:0x1a2b")
        log.wait("solargw/web/status", lambda m: payload(m)["inverters"] == 1, timeout=15)
        zigbee.handle(enecsys_report(100048590, 1_819_359), source="zigbee:0x3c4d")
        log.wait("solargw/web/status", lambda m: payload(m)["inverters"] == 2, timeout=15)

        zigbee.handle(enecsys_report(100012445, 900_000), source="zigbee:0x5e6f")
        mark = log.mark()
        broker.publish("homeassistant/status", "online")  # Home Assistant restarted
        log.wait(APPLIANCE_WEB, after=mark, timeout=15)
        republished = log.wait("solargw/web/status", after=mark, timeout=15)
        assert payload(republished)["inverters"] == 3  # what is true now, not the last count sent
        zigbee.store.close()


def test_nep_models_carry_the_vendors_names(broker, tmp_path):
    with broker.subscribe("homeassistant/#") as log:
        publisher, settings = publisher_for(broker, tmp_path)
        pipeline = Pipeline(Store(settings.data_dir), publisher)
        try:
            pipeline.handle(nep.decode(bytes.fromhex(NEP_BDM400["hex"]), model="auto", received_at=time.time()))
            pipeline.handle(nep.decode(bytes.fromhex(NEP_BDM1200_T["hex"]), model="auto", received_at=time.time()))
            bdm400 = payload(log.wait("homeassistant/device/solargw_nep_12345678/config"))
            bdm1200 = payload(log.wait(f"homeassistant/device/solargw_nep_{NEP_BDM1200_T['serial']}/config"))
        finally:
            publisher.close()
    assert bdm400["device"]["model"] == "BDM-400"
    assert bdm1200["device"]["model"] == "BDM-1200-LV"


def test_an_enecsys_inverter_carries_the_firmware_its_info_frame_tells(broker, tmp_path):
    config_topic = "homeassistant/device/solargw_enecsys_100095471/config"
    with broker.subscribe("homeassistant/#") as log:
        publisher, settings = publisher_for(broker, tmp_path, service="zigbee")
        pipeline = Pipeline(Store(settings.data_dir), publisher)
        try:
            pipeline.handle(enecsys_report(100095471, 1_347_515))
            before = payload(log.wait(config_topic))
            info = enecsys.encode_info(100095471, "WSI-00003", "25-04-12 06:58", counter=1)
            pipeline.handle(enecsys.decode(info, received_at=time.time()))
            pipeline.handle(enecsys_report(100095471, 1_347_530))
            after = payload(log.wait(config_topic, lambda m: "sw_version" in payload(m)["device"]))
        finally:
            publisher.close()
    assert "sw_version" not in before["device"]
    assert after["device"]["sw_version"] == "WSI-00003 (25-04-12 06:58)"


def test_lifetime_energy_reaches_home_assistant_in_kwh_with_two_decimals(broker, tmp_path):
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        publisher, settings = publisher_for(broker, tmp_path, service="zigbee")
        pipeline = Pipeline(Store(settings.data_dir), publisher)
        try:
            pipeline.handle(enecsys_report(100095471, 2_723_172))
            config = payload(log.wait("homeassistant/device/solargw_enecsys_100095471/config"))
            state = payload(log.wait("solargw/inverter/100095471/state"))
        finally:
            publisher.close()
    lifetime = config["components"]["lifetime_wh"]
    assert (lifetime["unit_of_measurement"], lifetime["suggested_display_precision"]) == ("kWh", 2)
    assert (lifetime["device_class"], lifetime["state_class"]) == ("energy", "total_increasing")
    assert "suggested_unit_of_measurement" not in lifetime  # no such key for MQTT sensors
    assert state["lifetime_wh"] == 2_723_172  # the state JSON keeps Wh for every other reader
    import jinja2

    shown = jinja2.Environment().from_string(lifetime["value_template"]).render(value_json=state)
    assert shown == "2723.172"  # Home Assistant displays 2723.17 kWh
