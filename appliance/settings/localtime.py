"""``[system] timezone`` as this process's local time."""
from __future__ import annotations

import os
import time
import zoneinfo

from appliance.settings.model import Settings


def apply_timezone(settings: Settings) -> bool:
    """Make ``[system] timezone`` this process's local time (``TZ`` + ``tzset``).

    Every service calls it at start and on a settings change, so "today" in the
    store's energy totals, the ledger's dawn detection and the UI's clock are
    one and the same day. An unknown zone changes nothing and returns False.
    """
    name = settings.system.timezone
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    if os.environ.get("TZ") != name:
        os.environ["TZ"] = name
        time.tzset()
    return True
