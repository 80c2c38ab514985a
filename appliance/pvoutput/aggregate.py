"""From the inverters' state to one PVOutput status per system and interval: pure code.

Each inverter belongs to one PVOutput system: the one ``[pvoutput] inverters`` maps
its serial to, else ``[pvoutput] system_id`` (0 in either place: not uploaded). A
system's status at an interval boundary (local time, ``[system] timezone``) is:

* v1, energy generated today: the sum of its inverters' energy today from the
  appliance's ledger (every inverter of the system, online or asleep);
* v2, power: the sum of the AC power of its inverters that are online;
* v5, temperature, and v6, AC voltage: the mean over its online inverters that
  report one (left out when none does).

A system with no inverter online (the night, an outage of the inverters) gets no
status: there is nothing live to say, and its energy today is already in the
last status it got.

Why energy-today in v1 and not the cumulative mode (``c1``, lifetime counters):
in cumulative mode PVOutput takes the day's energy as the counter minus its first
value *of that day*, so whatever was produced before the day's first status
(the appliance or the network down at dawn) would be lost for good, and an
inverter joining a system mid-day (its whole lifetime total appearing at once)
would be counted as that day's generation. The ledger's energy-today has neither
problem: it is what the inverters made that local day, whenever it is sent, and
a status sent twice says the same thing twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Iterable, Mapping

from appliance.pvoutput.api import Status


@dataclass(frozen=True)
class InverterNow:
    """What the status needs of one inverter at a boundary."""

    serial: str
    energy_today_wh: float
    online: bool
    fields: Mapping[str, Any]
    """Its latest reading's fields (``ac_power_w``, ``temperature_c``, ``ac_voltage_v``...)."""


def boundary(now: float, tz: tzinfo, interval_minutes: int) -> datetime:
    """The latest interval boundary at or before ``now``, in local time (``hh:mm`` a multiple of the interval)."""
    local = datetime.fromtimestamp(now, tz)
    return local.replace(minute=local.minute - local.minute % interval_minutes, second=0, microsecond=0)


def system_of(serial: str, default_system: int, inverters: Mapping[str, int]) -> int:
    """The PVOutput system an inverter reports to; 0: none."""
    return inverters.get(serial, default_system)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def statuses(at: datetime, inverters: Iterable[InverterNow], default_system: int,
             mapping: Mapping[str, int]) -> list[Status]:
    """One status per system with an inverter online at ``at`` (a boundary from :func:`boundary`)."""
    systems: dict[int, list[InverterNow]] = {}
    for inverter in inverters:
        system = system_of(inverter.serial, default_system, mapping)
        if system > 0:
            systems.setdefault(system, []).append(inverter)
    made = []
    for system, members in sorted(systems.items()):
        online = [m for m in members if m.online]
        if not online:
            continue
        power = [p for m in online if (p := _number(m.fields.get("ac_power_w"))) is not None]
        temperature = [t for m in online if (t := _number(m.fields.get("temperature_c"))) is not None]
        voltage = [v for m in online if (v := _number(m.fields.get("ac_voltage_v"))) is not None]
        made.append(Status(
            system_id=system,
            date=at.strftime("%Y%m%d"),
            time=at.strftime("%H:%M"),
            energy_wh=round(sum(max(0.0, m.energy_today_wh) for m in members)),
            power_w=round(max(0.0, sum(power))),
            temperature_c=_mean(temperature),
            voltage_v=_mean(voltage),
        ))
    return made
