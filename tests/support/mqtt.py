"""What the MQTT publisher tests share: the topics of their two inverters, settings that point
the publisher at a test broker, frames decoded the way the services decode them."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from appliance.protocols import enecsys, nep
from appliance.settings import Settings
from support.brokers import Broker

NEP_CONFIG = "homeassistant/device/solargw_nep_deadbeef/config"
NEP_STATE = "solargw/inverter/deadbeef/state"
NEP_AVAILABILITY = "solargw/inverter/deadbeef/availability"
ENECSYS_CONFIG = "homeassistant/device/solargw_enecsys_100095471/config"
ENECSYS_STATE = "solargw/inverter/100095471/state"


def broker_settings(broker: Broker, tmp_path: Path, *, stale_seconds: int = 900, **mqtt) -> Settings:
    """Default settings with MQTT on ``broker`` (``mqtt`` overrides its section) and the data in
    ``tmp_path``."""
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


def enecsys_frame(counter: int, lifetime_wh: int, dc_power: float = 44.0, when: float | None = None, *,
                  serial: int = 100095471):
    frame = enecsys.encode_report(serial, counter, 0, 1.3, dc_power, 0.846, 49, 243, 32, lifetime_wh)
    return enecsys.decode(frame, received_at=time.time() if when is None else when)


def payload(message) -> dict:
    """A received message's JSON."""
    return json.loads(message.payload)
