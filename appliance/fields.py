"""The one table of inverter fields: name, unit, label, Home Assistant class, metric.

Decoders use these keys where the quantity exists (the unit is in the name:
``ac_power_w``, ``temperature_c``); family-specific extras (raw codes, per-module
values) may sit beside them and get a unit from their name's suffix and a label
from the name itself. The web UI, Home Assistant discovery and ``/metrics`` all
read this table, so a field is called the same everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Follows = Literal["service", "inverter"]


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    unit: str = ""
    """Unit of the value as decoded ("" for none)."""
    device_class: str | None = None
    """Home Assistant sensor device class."""
    state_class: str | None = None
    precision: int | None = None
    """Decimals worth showing (Home Assistant's suggested display precision)."""
    follows: Follows = "inverter"
    """Availability rule (see :mod:`appliance.mqtt.discovery`): ``service`` values stay valid
    while the inverter sleeps, ``inverter`` ones turn unavailable with it."""
    percent: bool = False
    """A 0-1 ratio shown as a percentage."""
    metric: str | None = None
    """Prometheus gauge of the instantaneous value (fresh inverters only)."""
    metric_help: str = ""
    ha_unit: str | None = None
    """The unit Home Assistant shows instead of ``unit`` (converted by the entity's template)."""
    ha_precision: int | None = None
    """Decimals Home Assistant shows in ``ha_unit``."""


FIELDS: tuple[Field, ...] = (
    Field("ac_power_w", "AC power", "W", "power", "measurement", 1, follows="service",
          metric="solargw_inverter_ac_power_watts", metric_help="AC output power"),
    Field("lifetime_wh", "Lifetime energy", "Wh", "energy", "total_increasing", 0, follows="service",
          ha_unit="kWh", ha_precision=2),
    Field("energy_today_wh", "Energy today", "Wh", "energy", None, 0, follows="service"),
    Field("dc_power_w", "DC power", "W", "power", "measurement", 1, follows="service",
          metric="solargw_inverter_dc_power_watts", metric_help="DC input power"),
    Field("ac_voltage_v", "AC voltage", "V", "voltage", "measurement", 1,
          metric="solargw_inverter_ac_voltage_volts", metric_help="AC (grid) voltage as decoded"),
    Field("ac_frequency_hz", "AC frequency", "Hz", "frequency", "measurement", 2,
          metric="solargw_inverter_ac_frequency_hertz", metric_help="AC grid frequency"),
    Field("dc_current_a", "DC current", "A", "current", "measurement", 2,
          metric="solargw_inverter_dc_current_amperes", metric_help="DC input current, all inputs"),
    Field("dc_current_1_a", "DC current, input 1", "A", "current", "measurement", 2),
    Field("dc_current_2_a", "DC current, input 2", "A", "current", "measurement", 2),
    Field("dc_voltage_v", "DC voltage", "V", "voltage", "measurement", 1,
          metric="solargw_inverter_dc_voltage_volts", metric_help="DC input voltage"),
    Field("temperature_c", "Temperature", "°C", "temperature", "measurement", 1,
          metric="solargw_inverter_temperature_celsius", metric_help="Inverter temperature"),
    Field("efficiency_ratio", "Efficiency", "", None, "measurement", 1, percent=True,
          metric="solargw_inverter_efficiency_ratio", metric_help="Conversion efficiency (0-1)"),
    Field("state", "State", device_class="enum", follows="service"),
    Field("alarms", "Alarms"),
    Field("last_seen", "Last seen", device_class="timestamp", follows="service"),
)
"""Every common field, in display order. ``last_seen`` is no decoded field: the store knows it
and the MQTT publisher adds it to an inverter's state. The energy-today counter has no
``state_class``: it resets at dawn and can jump back (NEP), so only the ledger's lifetime
total is offered to Home Assistant's Energy dashboard.

The lifetime total goes to Home Assistant in kWh (three decimals: every Wh kept) shown with two:
"2723.17 kWh" rather than "2723172 Wh". A display precision alone cannot do that, and an MQTT
sensor has no ``suggested_unit_of_measurement`` (its discovery schema drops unknown keys,
checked in Home Assistant 2026.11). kWh is the unit the Energy dashboard and its users work in,
and a sensor whose statistics began in Wh keeps them: the recorder converts within a device
class's units. The state JSON keeps ``lifetime_wh`` in Wh for every other reader."""

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}

UNIT_FACTORS: dict[tuple[str, str], float] = {("Wh", "kWh"): 1000.0}
"""``(unit, ha_unit)`` -> what a value in ``unit`` is divided by to read in ``ha_unit``."""

_SUFFIX_UNITS = (("_kwh", "kWh"), ("_wh", "Wh"), ("_w", "W"), ("_v", "V"), ("_a", "A"), ("_hz", "Hz"), ("_c", "°C"))


def unit_for(name: str) -> str:
    """A field's unit: the table first, else the unit its name ends with (``module_1_power_w``)."""
    if name in BY_KEY:
        return BY_KEY[name].unit
    return next((unit for suffix, unit in _SUFFIX_UNITS if name.endswith(suffix)), "")


def label_for(name: str) -> str:
    """A field's label: the table's, else its name as words (``module_1_power_w``: "Module 1 power w")."""
    field = BY_KEY.get(name)
    return field.label if field is not None else name.replace("_", " ").capitalize()
