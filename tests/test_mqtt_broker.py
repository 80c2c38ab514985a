"""The MQTT publisher against a real mosquitto, checked by a real paho subscriber."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.mqtt import make_publisher
from appliance.pipeline import Pipeline
from appliance.protocols import enecsys, nep
from appliance.reading import STATES
from appliance.settings import Settings
from appliance.store import Store
from brokers import Broker, mosquitto, wait_for

pytestmark = pytest.mark.slow

NEP_CONFIG = "homeassistant/device/solargw_nep_deadbeef/config"
NEP_STATE = "solargw/inverter/deadbeef/state"
NEP_AVAILABILITY = "solargw/inverter/deadbeef/availability"
ENECSYS_CONFIG = "homeassistant/device/solargw_enecsys_100095471/config"
ENECSYS_STATE = "solargw/inverter/100095471/state"
REPO = Path(__file__).resolve().parent.parent


def make_settings(broker: Broker, tmp_path: Path, *, stale_seconds: int = 900, **mqtt) -> Settings:
    base = Settings()
    return dataclasses.replace(
        base, mqtt=broker.mqtt_settings(**mqtt),
        web=dataclasses.replace(base.web, stale_seconds=stale_seconds, public_url=""),
        data=dataclasses.replace(base.data, dir=str(tmp_path / "data")),
    )


def nep_frame(power: float, today_wh: float, when: float | None = None):
    body = nep.encode_i(serial="deadbeef", model="bdm800", ac_power_w=power, ac_voltage_v=231.0,
                        dc_current_1_a=3.0, dc_current_2_a=3.5, ac_frequency_hz=50.0,
                        temperature_c=41.0, energy_today_wh=today_wh)
    return nep.decode(body, model="bdm800", received_at=time.time() if when is None else when)


def enecsys_frame(counter: int, lifetime_wh: int, dc_power: float = 44.0, when: float | None = None):
    frame = enecsys.encode_report(100095471, counter, 0, 1.3, dc_power, 0.846, 49, 243, 32, lifetime_wh)
    return enecsys.decode(frame, received_at=time.time() if when is None else when)


def payload(message) -> dict:
    return json.loads(message.payload)


@pytest.fixture
def broker():
    with mosquitto() as running:
        yield running


@pytest.fixture
def service(broker, tmp_path):
    """A started publisher for the web service, with a real store and pipeline behind it."""
    started = []

    def start(**options):
        settings = make_settings(broker, tmp_path, stale_seconds=options.pop("stale_seconds", 900),
                                 **options.pop("mqtt", {}))
        options.setdefault("config_settle", 0.2)
        options.setdefault("republish_delay", (0.3, 0.6))
        options.setdefault("reconnect_delay", (1, 2))
        publisher = make_publisher(settings, options.pop("service", "web"), **options)
        assert publisher is not None
        started.append(publisher)
        assert publisher.connection.wait_connected(10)
        return publisher, Pipeline(Store(settings.data_dir), publisher)

    yield start
    for publisher in started:
        publisher.close()


def test_discovery_states_and_availability(broker, service):
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        publisher, pipeline = service()
        recorded = pipeline.handle(nep_frame(250.0, 500.0))
        pipeline.handle(enecsys_frame(2, 1_347_515))
        publisher.publish_status({"inverters": 2, "wifi": "access point up"})

        config = payload(log.wait(NEP_CONFIG))
        device = config["device"]
        assert device["identifiers"] == ["solargw_nep_deadbeef"]
        assert (device["name"], device["manufacturer"], device["model"]) == ("NEP deadbeef", "NEP", "BDM-800")
        assert device["serial_number"] == "deadbeef"
        assert device["via_device"] == "solargw_solargw"
        assert device["configuration_url"] == "http://solargw.local/inverter/deadbeef"
        assert config["origin"]["name"] == "solargw"
        components = config["components"]
        assert {"ac_power_w", "lifetime_wh", "ac_voltage_v", "ac_frequency_hz", "dc_current_1_a",
                "dc_current_2_a", "temperature_c", "state", "last_seen"} <= set(components)
        assert "efficiency_ratio" not in components and "dc_voltage_v" not in components
        assert components["lifetime_wh"]["state_class"] == "total_increasing"
        assert components["state"]["options"] == list(STATES)
        assert all(c["unique_id"].startswith("solargw_nep_deadbeef_") for c in components.values())

        enecsys_config = payload(log.wait(ENECSYS_CONFIG))
        assert enecsys_config["device"]["manufacturer"] == "Enecsys"
        assert {"efficiency_ratio", "dc_voltage_v", "alarms", "dc_power_w"} <= set(enecsys_config["components"])

        state = payload(log.wait(NEP_STATE))
        assert state["ac_power_w"] == pytest.approx(250.0, abs=0.1)
        assert state["lifetime_wh"] == pytest.approx(recorded.lifetime_wh)
        assert state["state"] == "producing" and state["asleep"] is False
        enecsys_state = payload(log.wait(ENECSYS_STATE))
        assert enecsys_state["lifetime_wh"] == 1_347_515
        assert enecsys_state["efficiency_ratio"] == pytest.approx(0.846)

        assert log.wait("solargw/web/availability").payload == b"online"
        assert log.wait(NEP_AVAILABILITY).payload == b"online"
        status = payload(log.wait("solargw/web/status"))
        assert status["inverters"] == 2 and status["wifi"] == "access point up"
        appliance = payload(log.wait("homeassistant/device/solargw_solargw_web/config",
                                     lambda m: b'"wifi"' in m.payload))
        assert appliance["device"]["identifiers"] == ["solargw_solargw"]
        assert {"started", "version", "inverters", "wifi"} == set(appliance["components"])

    # what a Home Assistant starting later sees: retained configs and availability, no states
    assert publisher.wait_idle()
    time.sleep(0.6)  # past the delayed state re-sends that follow a first config
    retained = {NEP_CONFIG, ENECSYS_CONFIG, NEP_AVAILABILITY, "solargw/web/availability"}
    with broker.subscribe("homeassistant/#", "solargw/#") as late:
        wait_for(lambda: retained <= late.topics(), 5, "retained messages")
        time.sleep(0.2)
        assert all(m.retain for m in late.messages)
        assert NEP_STATE not in late.topics() and ENECSYS_STATE not in late.topics()


def test_states_are_one_message_per_reading_and_not_retained(broker, service):
    with broker.subscribe("solargw/inverter/+/state") as log:
        publisher, pipeline = service(config_settle=30)  # no delayed re-send inside this test
        for power in (100.0, 120.0, 140.0):
            pipeline.handle(nep_frame(power, 500.0))
        assert publisher.wait_idle()
        wait_for(lambda: len(log.on(NEP_STATE)) == 3, 5, "three states")
        assert [round(payload(m)["ac_power_w"]) for m in log.on(NEP_STATE)] == [100, 120, 140]
    with broker.subscribe("solargw/inverter/+/state") as late:
        time.sleep(0.5)
        assert late.messages == []


def test_last_will_marks_a_killed_service_offline(broker, tmp_path):
    script = textwrap.dedent("""
        import dataclasses, sys, time
        from appliance.mqtt import make_publisher
        from appliance.settings import MqttSettings, Settings
        settings = dataclasses.replace(Settings(), mqtt=MqttSettings(host="127.0.0.1", port=int(sys.argv[1])))
        publisher = make_publisher(settings, "zigbee")
        assert publisher.connection.wait_connected(10)
        print("connected", flush=True)
        time.sleep(120)
    """)
    with broker.subscribe("solargw/#") as log:
        process = subprocess.Popen([sys.executable, "-c", script, str(broker.port)], cwd=REPO,
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "connected"
            log.wait("solargw/zigbee/availability", lambda m: m.payload == b"online")
            mark = log.mark()
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            log.wait("solargw/zigbee/availability", lambda m: m.payload == b"offline", after=mark)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    with broker.subscribe("solargw/zigbee/availability") as late:
        message = late.wait("solargw/zigbee/availability")
        assert (message.payload, message.retain) == (b"offline", True)


def test_clean_close_marks_the_service_offline(broker, service):
    publisher, _ = service(service="zigbee")
    publisher.close()
    with broker.subscribe("solargw/zigbee/availability") as log:
        assert log.wait("solargw/zigbee/availability").payload == b"offline"


def test_republish_after_home_assistant_restarts(broker, service):
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        publisher, pipeline = service(republish_delay=(0.3, 0.6))
        pipeline.handle(nep_frame(250.0, 500.0))
        log.wait(NEP_STATE)
        assert publisher.wait_idle()
        time.sleep(0.5)  # let the delayed re-send after the first config pass
        mark = log.mark()
        sent = time.time()
        broker.publish("homeassistant/status", "online")
        config = log.wait(NEP_CONFIG, after=mark)
        state = log.wait(NEP_STATE, after=mark)
        assert config.received - sent >= 0.25  # a random delay, not a stampede
        later = log.messages[mark:]
        assert later.index(config) < later.index(state)  # configs first, then states
        assert payload(state)["ac_power_w"] == pytest.approx(250.0, abs=0.1)
        log.wait("homeassistant/device/solargw_solargw_web/config", after=mark)
        log.wait("solargw/web/status", after=mark)
        # "offline" from Home Assistant triggers nothing
        mark = log.mark()
        broker.publish("homeassistant/status", "offline")
        time.sleep(1.0)
        assert [m for m in log.messages[mark:] if m.topic == NEP_CONFIG] == []


def test_a_silent_inverter_sleeps_at_zero_watts_and_keeps_its_energy(broker, service):
    with broker.subscribe("solargw/#") as log:
        publisher, pipeline = service(stale_seconds=1)
        recorded = pipeline.handle(enecsys_frame(2, 1_347_515))
        log.wait(ENECSYS_STATE, lambda m: payload(m)["asleep"] is False)
        asleep = payload(log.wait(ENECSYS_STATE, lambda m: payload(m)["asleep"] is True, timeout=5))
        assert asleep["ac_power_w"] == 0 and asleep["dc_power_w"] == 0
        assert asleep["lifetime_wh"] == recorded.lifetime_wh == 1_347_515
        assert asleep["state"] == "sleeping"
        assert asleep["ac_voltage_v"] is None
        log.wait("solargw/inverter/100095471/availability", lambda m: m.payload == b"offline")
        # the service itself stays online: power and energy entities stay available
        assert log.last("solargw/web/availability").payload == b"online"
        mark = log.mark()
        pipeline.handle(enecsys_frame(3, 1_347_600))  # morning
        log.wait("solargw/inverter/100095471/availability", lambda m: m.payload == b"online", after=mark)
        awake = payload(log.wait(ENECSYS_STATE, after=mark))
        assert awake["asleep"] is False and awake["lifetime_wh"] == 1_347_600
        assert awake["ac_power_w"] > 0


def test_energy_today_restarts_at_midnight_while_asleep(broker, service):
    now = [time.time()]
    with broker.subscribe("solargw/#") as log:
        _, pipeline = service(stale_seconds=4, clock=lambda: now[0])  # checks every second
        pipeline.handle(nep_frame(250.0, 1500.0, when=now[0]))
        first = payload(log.wait(NEP_STATE))
        assert first["energy_today_wh"] > 0
        now[0] += 3600  # an hour of silence: asleep, energy kept
        asleep = payload(log.wait(NEP_STATE, lambda m: payload(m)["asleep"], timeout=10))
        assert asleep["energy_today_wh"] == first["energy_today_wh"]
        now[0] += 86400  # the next day, still before dawn
        next_day = payload(log.wait(NEP_STATE, lambda m: payload(m)["energy_today_wh"] == 0, timeout=10))
        assert next_day["lifetime_wh"] == first["lifetime_wh"] and next_day["ac_power_w"] == 0


def test_recovery_after_the_broker_restarts(broker, service, tmp_path):
    publisher, pipeline = service(reconnect_delay=(1, 1))
    store = pipeline.store
    fed: list[float] = []
    slowest = 0.0

    def feed(count: int, start_power: float) -> None:
        nonlocal slowest
        for i in range(count):
            power = start_power + i
            began = time.monotonic()
            recorded = pipeline.handle(nep_frame(power, 500.0 + len(fed)))
            slowest = max(slowest, time.monotonic() - began)
            assert recorded is not None
            fed.append(power)
            time.sleep(0.05)

    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        feed(10, 100.0)
        log.wait(NEP_STATE, lambda m: round(payload(m)["ac_power_w"]) == 109)
    broker.stop()
    wait_for(lambda: not publisher.connection.connected, 10, "the publisher to notice")
    feed(30, 200.0)  # readings keep arriving while the broker is away
    broker.start()
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        # the restarted broker lost everything (no persistence): the publisher republishes
        config = log.wait(NEP_CONFIG, timeout=15)
        assert payload(config)["device"]["identifiers"] == ["solargw_nep_deadbeef"]
        state = payload(log.wait(NEP_STATE, timeout=15))
        assert round(state["ac_power_w"]) == 229  # the latest reading, fed while the broker was down
        assert log.wait("solargw/web/availability").payload == b"online"
        feed(5, 300.0)
        log.wait(NEP_STATE, lambda m: round(payload(m)["ac_power_w"]) == 304)
    # nothing lost or late in the store, and the ingest never waited for the broker
    history = store.history("deadbeef", 0, time.time() + 1)
    assert [round(fields["ac_power_w"]) for _, fields in history] == [round(p) for p in fed]
    assert slowest < 0.5, f"pipeline.handle took {slowest:.3f}s with the broker down"


def test_remove_clears_retained_discovery(broker, service):
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        publisher, pipeline = service()
        pipeline.handle(nep_frame(250.0, 500.0))
        log.wait(NEP_CONFIG)
        pipeline.remove("deadbeef")
        log.wait(NEP_CONFIG, lambda m: m.payload == b"")
        log.wait(NEP_AVAILABILITY, lambda m: m.payload == b"")
        assert publisher.wait_idle()
    with broker.subscribe("homeassistant/#", "solargw/inverter/#") as late:
        time.sleep(0.5)
        assert NEP_CONFIG not in late.topics() and NEP_AVAILABILITY not in late.topics()


def test_per_entity_discovery_and_seed_compat(broker, service):
    with broker.subscribe("homeassistant/#") as log:
        _, pipeline = service(mqtt={"per_entity_discovery": True, "seed_compat": True})
        pipeline.handle(nep_frame(250.0, 500.0))
        entity = payload(log.wait("homeassistant/sensor/solargw_nep_deadbeef/ac_power_w/config"))
        assert entity["unique_id"] == "solargw_nep_deadbeef_ac_power_w"
        assert entity["device"]["identifiers"] == ["solargw_nep_deadbeef"]
        assert entity["state_topic"] == NEP_STATE
        log.wait("homeassistant/sensor/solargw_nep_deadbeef/lifetime_wh/config")
        watt = log.wait("homeassistant/sensor/deadbeef/watt")
        assert float(watt.payload) == pytest.approx(250.0, abs=0.1)
        assert NEP_CONFIG not in log.topics()


def test_restore_announces_inverters_asleep_at_boot(broker, service, tmp_path):
    # yesterday's readings, stored by an earlier run of the service
    store = Store(tmp_path / "data")
    yesterday = time.time() - 12 * 3600
    Pipeline(store).handle(enecsys_frame(2, 1_347_515, when=yesterday))
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        Pipeline(store).handle(nep_frame(250.0, 500.0, when=yesterday))  # the web service's
        publisher, _ = service(service="zigbee", store=store)  # restores what the store knows
        log.wait(ENECSYS_CONFIG)
        assert log.wait("solargw/inverter/100095471/availability").payload == b"offline"
        state = payload(log.wait(ENECSYS_STATE))
        assert state["asleep"] is True and state["ac_power_w"] == 0
        assert state["lifetime_wh"] == 1_347_515
        assert publisher.wait_idle()
        assert NEP_CONFIG not in log.topics()  # the web service's inverter is not the zigbee's


def test_an_inverter_removed_by_the_other_service_is_not_announced_again(broker, service, tmp_path):
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        # with the store, the zigbee service asks it before announcing an inverter again
        zigbee, zigbee_pipeline = service(service="zigbee", store=Store(tmp_path / "data"))
        web, web_pipeline = service(service="web")
        zigbee_pipeline.handle(enecsys_frame(2, 1_347_515))
        log.wait(ENECSYS_CONFIG)
        time.sleep(0.5)  # let the delayed state re-send after a first config pass
        web_pipeline.remove("100095471")  # the web UI's "remove", in the web process
        log.wait(ENECSYS_CONFIG, lambda m: m.payload == b"")
        log.wait("solargw/inverter/100095471/availability", lambda m: m.payload == b"")  # the last
        assert web.wait_idle() and zigbee.wait_idle()
        mark = log.mark()
        broker.publish("homeassistant/status", "online")
        log.wait("homeassistant/device/solargw_solargw_zigbee/config", after=mark)
        time.sleep(1.0)  # the zigbee service's states would follow its configs by now
        assert zigbee.wait_idle()
        assert [m.topic for m in log.messages[mark:] if "100095471" in m.topic] == []


def test_an_inverter_moving_from_the_gateway_to_the_stick_keeps_its_device(broker, service, tmp_path):
    """A genuine Enecsys gateway's readings come through the web service, the stick's through the
    Zigbee service: the same device (identifiers, unique ids) is taken over, not duplicated, and
    the service that no longer receives it stops publishing it."""
    store = Store(tmp_path / "data")
    with broker.subscribe("homeassistant/#", "solargw/#") as log:
        web, web_pipeline = service(service="web", store=store)
        web_pipeline.handle(enecsys_frame(2, 1_347_515), source="gateway:192.168.1.40")
        via_gateway = payload(log.wait(ENECSYS_CONFIG))
        assert via_gateway["components"]["ac_power_w"]["availability"][0]["topic"] == "solargw/web/availability"

        zigbee, zigbee_pipeline = service(service="zigbee", store=store)  # restores only its own
        assert zigbee.wait_idle()
        time.sleep(0.5)
        # the web service's inverter is not the zigbee's yet: only the web service announced it
        assert all(b"solargw/zigbee/availability" not in m.payload for m in log.on(ENECSYS_CONFIG))
        zigbee_pipeline.handle(enecsys_frame(3, 1_347_530), source="zigbee:0x1a2b")
        via_stick = payload(log.wait(ENECSYS_CONFIG, lambda m: b"solargw/zigbee/availability" in m.payload))
        assert via_stick["device"]["identifiers"] == via_gateway["device"]["identifiers"]
        assert ({c["unique_id"] for c in via_stick["components"].values()}
                >= {c["unique_id"] for c in via_gateway["components"].values()})

        assert web.wait_idle() and zigbee.wait_idle()
        time.sleep(0.5)
        mark = log.mark()
        broker.publish("homeassistant/status", "online")
        log.wait("homeassistant/device/solargw_solargw_web/config", after=mark)
        log.wait("homeassistant/device/solargw_solargw_zigbee/config", after=mark)
        time.sleep(1.0)  # both services' states follow their configs by now
        configs = [payload(m) for m in log.messages[mark:] if m.topic == ENECSYS_CONFIG]
        assert configs and all(c["components"]["ac_power_w"]["availability"][0]["topic"] == "solargw/zigbee/availability"
                   for c in configs)  # only the Zigbee service announces it now


def test_broker_down_at_boot_is_normal(tmp_path):
    with mosquitto() as broker:
        port = broker.port
        broker.stop()
        settings = make_settings(broker, tmp_path)
        publisher = make_publisher(settings, "web", reconnect_delay=(1, 1), config_settle=0.2)
        try:
            pipeline = Pipeline(Store(settings.data_dir), publisher)
            assert pipeline.handle(nep_frame(250.0, 500.0)) is not None  # no error, no wait
            broker.start()
            assert broker.port == port
            with broker.subscribe("homeassistant/#", "solargw/#") as log:
                log.wait(NEP_CONFIG, timeout=15)
                assert round(payload(log.wait(NEP_STATE, timeout=15))["ac_power_w"]) == 250
        finally:
            publisher.close()


def test_password_and_tls(tmp_path):
    with mosquitto(tls=True, password=("solargw", "s3cret")) as broker:
        settings = make_settings(broker, tmp_path)
        assert settings.mqtt.tls and settings.mqtt.ca_file and settings.mqtt.username
        with broker.subscribe("homeassistant/#", "solargw/#") as log:
            publisher = make_publisher(settings, "web", config_settle=0.2)
            try:
                assert publisher.connection.wait_connected(10)
                Pipeline(Store(settings.data_dir), publisher).handle(nep_frame(250.0, 500.0))
                log.wait(NEP_CONFIG)
                log.wait(NEP_STATE)
            finally:
                publisher.close()

            # a wrong password is refused; publishing still never raises
            wrong = dataclasses.replace(settings, mqtt=dataclasses.replace(settings.mqtt, password="nope"))
            publisher = make_publisher(wrong, "zigbee", reconnect_delay=(1, 1))
            try:
                Pipeline(Store(tmp_path / "other"), publisher).handle(enecsys_frame(2, 1_347_515))
                # the TLS handshake succeeds and the broker itself says no to the password
                wait_for(lambda: publisher.connection.refused is not None, 15, "the broker's refusal")
                assert publisher.connection.refused in ("Not authorized", "Bad user name or password")
                assert not publisher.connection.connected
                assert ENECSYS_CONFIG not in log.topics()
            finally:
                publisher.close()


def test_plain_connection_to_a_tls_broker_fails_cleanly(tmp_path):
    with mosquitto(tls=True) as broker:
        settings = make_settings(broker, tmp_path, tls=False, ca_file="")
        publisher = make_publisher(settings, "web", reconnect_delay=(1, 1))
        try:
            publisher.publish_status({"inverters": 0})
            assert not publisher.connection.wait_connected(2)
        finally:
            publisher.close()
        missing = make_settings(broker, tmp_path, tls=True, ca_file=str(tmp_path / "missing.pem"))
        assert make_publisher(missing, "web") is None  # logged; the service runs without MQTT


def test_disabled_means_no_publisher(tmp_path):
    settings = dataclasses.replace(Settings(), mqtt=dataclasses.replace(Settings().mqtt, enabled=False))
    assert make_publisher(settings, "web") is None


def test_publish_never_blocks_the_caller(broker, service):
    """A burst far beyond the queue is dropped, not waited for, and the publisher carries on."""
    publisher, pipeline = service()
    recorded = pipeline.handle(nep_frame(250.0, 500.0))
    began = time.monotonic()
    for _ in range(20_000):
        publisher.publish(recorded)
    publisher.publish(object())  # not a Recorded: logged by the worker, never raised here
    assert time.monotonic() - began < 5
    assert publisher.wait_idle(60)
    with broker.subscribe("solargw/inverter/+/state") as log:
        pipeline.handle(nep_frame(111.0, 501.0))
        # (paho may still be flushing the burst: wait for the new reading's state)
        log.wait(NEP_STATE, lambda m: round(payload(m)["ac_power_w"]) == 111, timeout=30)
