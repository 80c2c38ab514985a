"""Readings built directly, for tests of the store and ledger that need no decoder."""
from __future__ import annotations

from appliance.reading import EnergyCounter, Reading


def nep_reading(serial: str = "12345678", *, today_wh: float = 100.0, power_w: float = 200.0,
                timestamp: float = 1_750_000_000.0, checksum_ok: bool = True) -> Reading:
    return Reading(
        family="nep", serial=serial, model="bdm400", kind="report",
        fields={"ac_power_w": power_w, "energy_today_wh": today_wh, "state": "producing"},
        raw={"ac_power_w": int(power_w * 100), "energy_today_wh": int(today_wh / 0.2)},
        frame=b"\x79" + serial.encode(), checksum_ok=checksum_ok, timestamp=timestamp,
        energy=EnergyCounter("daily", today_wh),
    )


def enecsys_reading(serial: str = "100095471", *, lifetime_wh: float = 1_347_515.0, power_w: float = 37.2,
                    timestamp: float = 1_750_000_000.0, kind: str = "report") -> Reading:
    return Reading(
        family="enecsys", serial=serial, model="", kind=kind,
        fields={"ac_power_w": power_w, "lifetime_wh": lifetime_wh, "state": "producing"},
        raw={"lifetime_wh": int(lifetime_wh)}, frame=b"\x57\x00" + serial.encode(),
        checksum_ok=True, timestamp=timestamp, energy=EnergyCounter("lifetime", lifetime_wh),
    )
