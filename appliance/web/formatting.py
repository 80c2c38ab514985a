"""How values read on the pages: one function per kind of text, no Flask, no I/O.

The dashboard cards, the inverter page and the live events all format through here,
so a value never looks different after an update.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from appliance.fields import BY_KEY, label_for, unit_for
from appliance.settings import Settings
from appliance.store.records import StoreHealth

__all__ = ["ago", "energy_text", "format_value", "label_for", "local_time", "power_text", "readings_waiting",
           "short_time", "storage_problem", "timezone", "unit_for"]


def format_value(name: str, value: Any) -> str:
    """A field's value with its unit (``169 W``, ``92.5 %``, ``none``)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    field = BY_KEY.get(name)
    if field is not None and field.percent and isinstance(value, (int, float)):
        return f"{value * 100:.{field.precision or 0}f} %"
    if name == "state" and isinstance(value, str):
        return value.replace("_", " ")
    unit = unit_for(name)
    if isinstance(value, float):
        text = f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def energy_text(wh: float) -> str:
    return f"{wh / 1000:.2f} kWh" if wh >= 1000 else f"{wh:.0f} Wh"


def power_text(watts: float | None) -> str:
    return "–" if watts is None else f"{watts:.0f} W" if watts >= 10 else f"{watts:.1f} W"


def timezone(settings: Settings) -> ZoneInfo:
    """``[system] timezone``, or UTC when the file names a zone this system does not know."""
    try:
        return ZoneInfo(settings.system.timezone)
    except Exception:  # noqa: BLE001 - a bad zone in the file must not take the pages down
        return ZoneInfo("UTC")


def local_time(ts: float | None, tz: ZoneInfo) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def short_time(ts: float | None, tz: ZoneInfo, now: float | None = None) -> str:
    """``14:05`` today, ``2026-11-30 14:05`` another day."""
    if not ts:
        return "never"
    when = datetime.fromtimestamp(ts, tz)
    today = datetime.fromtimestamp(now or time.time(), tz).date()
    return when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")


def readings_waiting(health: StoreHealth, tz: ZoneInfo) -> str:
    """``12 readings wait in memory, the oldest from 13:40``."""
    text = f"{health.queued} reading{'' if health.queued == 1 else 's'} wait{'s' if health.queued == 1 else ''} in memory"
    return text + (f", the oldest from {short_time(health.oldest_queued, tz)}" if health.oldest_queued else "")


def storage_problem(health: StoreHealth, tz: ZoneInfo) -> str:
    """What every page says while the SD card does not take the store's writes ("" while it does)."""
    if health.ok:
        return ""
    return (f"The SD card does not take writes ({health.state}) since {short_time(health.since, tz)}: "
            f"{readings_waiting(health, tz)}")
