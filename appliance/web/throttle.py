"""Login throttling: a few wrong passwords per address, then a pause."""
from __future__ import annotations

import threading
import time
from typing import Callable


class LoginThrottle:
    """At most ``attempts`` wrong passwords per address within ``window`` seconds."""

    def __init__(self, attempts: int = 5, window: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, address: str) -> bool:
        now = self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if now - t < self.window]
            if recent:
                self._failures[address] = recent
            else:
                self._failures.pop(address, None)
            return len(recent) >= self.attempts

    def failed(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, []).append(self.clock())

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
