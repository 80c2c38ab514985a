"""The same publish path against nats-server's MQTT listener (JetStream on), the seed's
alternative broker. nats' MQTT has no QoS 2 (the publisher uses 0 and 1 only) and keeps
retained messages in a JetStream stream."""
from __future__ import annotations

import json
import time

import pytest

from appliance.mqtt import make_publisher
from appliance.pipeline import Pipeline
from appliance.store import Store
from support.brokers import nats
from support.mqtt import NEP_CONFIG, NEP_STATE, broker_settings, enecsys_frame, nep_frame

pytestmark = pytest.mark.slow


def test_publisher_works_against_nats_mqtt(tmp_path):
    with nats() as broker:
        settings = broker_settings(broker, tmp_path, seed_compat=True)
        with broker.subscribe("homeassistant/#", "solargw/#") as log:
            publisher = make_publisher(settings, "web", config_settle=0.2, republish_delay=(0.2, 0.4))
            try:
                assert publisher.connection.wait_connected(10)
                pipeline = Pipeline(Store(settings.data_dir), publisher)
                pipeline.handle(nep_frame(250.0, 500.0))
                pipeline.handle(enecsys_frame(2, 1_347_515))
                config = json.loads(log.wait(NEP_CONFIG).payload)
                assert config["device"]["identifiers"] == ["solargw_nep_deadbeef"]
                state = json.loads(log.wait(NEP_STATE).payload)
                assert state["ac_power_w"] == pytest.approx(250.0, abs=0.1)
                assert float(log.wait("homeassistant/sensor/deadbeef/watt").payload) == pytest.approx(250, abs=0.1)
                assert log.wait("solargw/web/availability").payload == b"online"

                # Home Assistant restarting on a nats broker: the republish works the same way
                mark = log.mark()
                broker.publish("homeassistant/status", "online")
                log.wait(NEP_CONFIG, after=mark)
                log.wait(NEP_STATE, after=mark)
            finally:
                publisher.close()

        # retained configs and the service's "offline" live in JetStream for later subscribers
        with broker.subscribe("homeassistant/#", "solargw/#") as late:
            assert late.wait(NEP_CONFIG).retain
            assert late.wait("homeassistant/device/solargw_enecsys_100095471/config").retain
            message = late.wait("solargw/web/availability")
            assert (message.payload, message.retain) == (b"offline", True)
            time.sleep(0.3)
            assert NEP_STATE not in late.topics()
