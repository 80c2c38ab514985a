"""New inverters: at most ``[data] new_inverters_per_hour`` in any hour, ``[data] max_inverters`` in all.

Anyone who can post to the collector (or forge a Zigbee frame) can make up serials; without a
cap each one would add a row to the inverter table, a card to the UI, a device to Home Assistant
and series to ``/metrics``. A serial the store already knows always passes (also one that
another process recorded a moment ago: asked of the store before refusing); a new one passes
while fewer than ``new_inverters_per_hour`` were first seen in the last hour and fewer than
``max_inverters`` are shown (removed ones do not count: removing forged ones makes room).

The known serials are kept in memory; the store's list of inverters is read again at most
every :data:`REFRESH_SECONDS`, so a flood of made-up serials costs one indexed lookup each.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

REFRESH_SECONDS = 5.0
HOUR = 3600.0


@dataclass(frozen=True)
class Limits:
    max_inverters: int = 200
    new_inverters_per_hour: int = 50


class Admission:
    """``admit(serial) -> None`` when a reading of ``serial`` may be recorded, else the reason."""

    def __init__(self, store: Any, limits: Callable[[], Any] = Limits,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        """``limits()``: an object with ``max_inverters`` and ``new_inverters_per_hour`` (``[data]``)."""
        self.store = store
        self.limits = limits
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._shown = 0
        self._first_seen: list[float] = []
        self._loaded_at = float("-inf")

    def admit(self, serial: str) -> str | None:
        if serial in self._known:  # the common case, without the lock
            return None
        with self._lock:
            if self.monotonic() - self._loaded_at > REFRESH_SECONDS:
                self._load()
            if serial in self._known or self.store.inverter(serial) is not None:
                self._known.add(serial)
                return None
            limits, now = self.limits(), self.clock()
            recent = sum(1 for t in self._first_seen if now - t < HOUR)
            if self._shown >= limits.max_inverters:
                return (f"new inverter {serial} refused: {self._shown} inverters known, "
                        f"[data] max_inverters is {limits.max_inverters}")
            if recent >= limits.new_inverters_per_hour:
                return (f"new inverter {serial} refused: {recent} new inverters in the last hour, "
                        f"[data] new_inverters_per_hour is {limits.new_inverters_per_hour}")
            self._known.add(serial)
            self._shown += 1
            self._first_seen.append(now)
            return None

    def _load(self) -> None:
        inverters = self.store.inverters(include_removed=True)
        now = self.clock()
        self._known = {i.serial for i in inverters}
        self._shown = sum(1 for i in inverters if not i.removed)
        self._first_seen = [i.first_seen for i in inverters if now - i.first_seen < HOUR]
        self._loaded_at = self.monotonic()

    def forget(self, serial: str) -> None:
        """``serial`` was removed: it no longer counts (read again from the store at the next refresh)."""
        with self._lock:
            self._loaded_at = float("-inf")
