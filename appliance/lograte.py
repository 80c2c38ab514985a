"""Log lines that a flood must not multiply: at most a few per minute per kind, then one summary.

A malformed request, a refused report or a storage error is worth one line each, but a
client sending thousands of them must not fill the journal (or wear the SD card)::

    malformed = RateLimitedLog(log, "malformed requests", per_minute=10)
    malformed.warning("malformed request from %s: %s", address, reason)

The first ``per_minute`` lines of each minute are logged as given; the rest are counted and
said in one line (``... 1234 more malformed requests in the last minute``) with the next
line logged after the minute. Thread-safe; never raises.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, what: str, per_minute: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._window = float("-inf")
        self._logged = 0
        self._suppressed = 0

    def log(self, level: int, message: str, *args: Any) -> bool:
        """Log ``message`` unless this minute's quota is spent; True when it was logged."""
        with self._lock:
            now = self.clock()
            suppressed = 0
            if now - self._window >= 60.0:
                suppressed, self._suppressed = self._suppressed, 0
                self._window, self._logged = now, 0
            allowed = self._logged < self.per_minute
            if allowed:
                self._logged += 1
            else:
                self._suppressed += 1
        if suppressed:
            self.logger.log(level, "... %d more %s in the last minute (not logged one by one)", suppressed, self.what)
        if allowed:
            self.logger.log(level, message, *args)
        return allowed

    def warning(self, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, message, *args)

    def error(self, message: str, *args: Any) -> bool:
        return self.log(logging.ERROR, message, *args)

    def info(self, message: str, *args: Any) -> bool:
        return self.log(logging.INFO, message, *args)
