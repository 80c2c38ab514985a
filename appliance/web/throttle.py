"""Login throttling: a few password attempts per address, then a pause.

An attempt is counted *before* the password is checked (:meth:`LoginThrottle.attempt`), under one
lock, so a burst of parallel attempts gets no more checks through than the limit; a right
password clears the address's count.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class LoginThrottle:
    """At most ``attempts`` password checks per address within ``window`` seconds, unless one succeeds."""

    def __init__(self, attempts: int = 5, window: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._attempts: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def attempt(self, address: str) -> bool:
        """True when ``address`` may have its password checked now (the attempt is counted)."""
        now = self.clock()
        with self._lock:
            for known in [a for a, times in self._attempts.items() if now - times[-1] >= self.window]:
                del self._attempts[known]  # forget quiet addresses (the table stays small)
            recent = [t for t in self._attempts.get(address, []) if now - t < self.window]
            if len(recent) >= self.attempts:
                self._attempts[address] = recent
                return False
            self._attempts[address] = [*recent, now]
            return True

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._attempts.pop(address, None)
