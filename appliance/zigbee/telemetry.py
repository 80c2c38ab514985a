"""``telemetry.json`` in the shape of the seed proof of concept, for scripts written against it.

One object per inverter, keyed by the IEEE as it appears in the frames (``ef55f705009ac634``)::

    {"serial": "100095471", "mac": "34c69a0005f755ef", "state": 0, "dc_current": 0.45,
     "dc_watts": 21, "dc_volt": 46.7, "efficiency": 0.96, "ac_freq": 50, "ac_volt": 240,
     "ac_watts": 20.16, "temp": 23, "wh": 530, "kwh": 1349, "lifetime_wh": 1349530}

The file is replaced atomically, so a reader never sees half of it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from appliance.atomic import write_atomic
from appliance.reading import Reading

log = logging.getLogger(__name__)


def entry(reading: Reading) -> tuple[str, dict[str, Any]] | None:
    """The seed-shaped key and object for a report, or None for other frames."""
    if reading.kind not in ("report", "alarm") or not reading.checksum_ok:
        return None
    f, raw = reading.fields, reading.raw
    mac = str(f["ieee"])
    return bytes.fromhex(mac)[::-1].hex(), {
        "serial": reading.serial,
        "mac": mac,
        "state": raw["state_code"],
        "dc_current": f["dc_current_a"],
        "dc_watts": f["dc_power_w"],
        "dc_volt": f["dc_voltage_v"] if f["dc_voltage_v"] is not None else 0,
        "efficiency": f["efficiency_ratio"],
        "ac_freq": f["ac_frequency_hz"],
        "ac_volt": f["ac_voltage_v"],
        "ac_watts": f["ac_power_w"],
        "temp": f["temperature_c"],
        "wh": raw["wh"],
        "kwh": raw["kwh"],
        "lifetime_wh": f["lifetime_wh"],
    }


class TelemetryFile:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.data: dict[str, dict[str, Any]] = {}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.data = loaded
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable, starting a new one (%s)", self.path, exc)

    def update(self, reading: Reading) -> bool:
        item = entry(reading)
        if item is None:
            return False
        key, value = item
        self.data[key] = value
        self.write()
        return True

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # rewritten at every report: atomic for its readers, not worth a card flush each time
            write_atomic(self.path, json.dumps(self.data, indent=4) + "\n", 0o644, durable=False)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
