"""The view models of the dashboard: one card per inverter and the totals over them.

Pages render them and the live events push them as JSON, built by the same functions
so a value never looks different after an update.
"""
from __future__ import annotations

import time
from typing import Any

from appliance.settings import Settings
from appliance.web.formatting import energy_text, format_value, local_time, power_text, timezone


def inverter_card(info: Any, latest: Any, now: float, settings: Settings) -> dict[str, Any]:
    """What the dashboard shows for one inverter, as JSON-ready values and display text."""
    fields = dict(latest.fields) if latest is not None else {}
    online = bool(latest) and now - info.last_seen < settings.web.stale_seconds
    power = fields.get("ac_power_w") if online else None
    state = fields.get("state") if online else "offline"
    alarms = fields.get("alarms") or ()
    return {
        "serial": info.serial,
        "name": info.display_name,
        "family": info.family,
        "family_text": "NEP (Wi-Fi)" if info.family == "nep" else "Enecsys (Zigbee)",
        "model": (latest.model if latest is not None and latest.model else info.model) or "unknown model",
        "power_w": power,
        "power_text": power_text(power if isinstance(power, (int, float)) else None),
        "state": state or "unknown",
        "state_text": format_value("state", state or "unknown"),
        "online": online,
        "last_seen": info.last_seen,
        "last_seen_text": local_time(info.last_seen, timezone(settings)),
        "alarms": list(alarms) if isinstance(alarms, (list, tuple)) else [str(alarms)],
        "energy_today_wh": info.energy_today_wh,
        "energy_today_text": energy_text(info.energy_today_wh),
        "lifetime_wh": info.lifetime_wh,
        "lifetime_text": energy_text(info.lifetime_wh),
        "fields": {name: format_value(name, value) for name, value in fields.items()},
    }


def all_cards(store: Any, settings: Settings) -> list[dict[str, Any]]:
    """Every inverter's card (callable outside a request: the live events do)."""
    latest = store.latest()
    now = time.time()
    return [inverter_card(info, latest.get(info.serial), now, settings) for info in store.inverters()]


def totals(cards: list[dict[str, Any]]) -> dict[str, Any]:
    power = sum(c["power_w"] for c in cards if isinstance(c["power_w"], (int, float)))
    today = sum(c["energy_today_wh"] for c in cards)
    lifetime = sum(c["lifetime_wh"] for c in cards)
    return {
        "power_w": power, "power_text": power_text(power),
        "energy_today_wh": today, "energy_today_text": energy_text(today),
        "lifetime_wh": lifetime, "lifetime_text": energy_text(lifetime),
        "online": sum(1 for c in cards if c["online"]), "count": len(cards),
    }
