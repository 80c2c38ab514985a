"""Finding the coordinator stick: ``auto`` means the first known Z-Stack dongle under /dev/serial/by-id."""
from __future__ import annotations

import glob
from pathlib import Path

BY_ID = Path("/dev/serial/by-id")
KNOWN_STICKS = (
    "*Sonoff*Zigbee_3.0*",  # Sonoff Zigbee 3.0 USB Dongle Plus (P: CC2652P behind a CP210x)
    "*SONOFF*Zigbee_3.0*",
    "*Texas_Instruments*CC26*",  # TI LaunchPads (CC2652R/P, CC1352P-2) through the XDS110
    "*Texas_Instruments*CC13*",
    "*zStack*",
    "*Silicon_Labs_CP2102N*",  # many CC2652 sticks use this bridge (listed last: it is generic)
)


def detect(by_id: Path = BY_ID) -> str | None:
    """The path of a plugged-in coordinator stick, or None."""
    for pattern in KNOWN_STICKS:
        matches = sorted(glob.glob(str(by_id / pattern)))
        if matches:
            return matches[0]
    return None


def resolve(setting: str, by_id: Path = BY_ID) -> str | None:
    """The device path to open for ``settings.zigbee.device``; None if ``auto`` finds nothing."""
    setting = setting.strip()
    if setting in ("", "auto"):
        return detect(by_id)
    return setting
