"""The one sun every simulator shares: a clear-sky day curve and a simulated clock.

The sun is up from 6:00 to 20:00. Half an hour either side is twilight: an inverter that keeps
its electronics on (NEP) is awake and produces 0 W; an inverter whose radio runs on panel power
(Enecsys) is silent. The clock can start at any time of day and run faster than real time, so a
demo shows a whole day in minutes.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Callable

SUNRISE_HOUR = 6.0
SUNSET_HOUR = 20.0
TWILIGHT_HOURS = 0.5
"""Before sunrise and after sunset, this long: awake but no output."""


def sun_fraction(moment: datetime) -> float | None:
    """0..1 of peak output at this time of day; 0 in twilight; None at night."""
    hour = moment.hour + moment.minute / 60 + moment.second / 3600
    if hour < SUNRISE_HOUR - TWILIGHT_HOURS or hour > SUNSET_HOUR + TWILIGHT_HOURS:
        return None
    if hour <= SUNRISE_HOUR or hour >= SUNSET_HOUR:
        return 0.0
    return math.sin(math.pi * (hour - SUNRISE_HOUR) / (SUNSET_HOUR - SUNRISE_HOUR)) ** 1.5


class SimClock:
    """Simulated time: starts at ``start`` and runs ``speed`` times faster than the real clock."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.start = start or datetime.now()
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    @classmethod
    def at(cls, hour: float, speed: float = 1.0) -> SimClock:
        """A clock that starts today at ``hour`` (12.5 is 12:30)."""
        midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(midnight + timedelta(hours=hour), speed)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self._monotonic() - self._t0) * self.speed)

    def daylight(self) -> float:
        """The sun's fraction now, 0 in twilight and at night."""
        return sun_fraction(self.now()) or 0.0
