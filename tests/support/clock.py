"""A clock that moves only when the test moves it: pass it where the code takes ``clock=``."""
from __future__ import annotations

from datetime import datetime


class ManualClock:
    """Unix time, read by calling it; ``now`` may also be set directly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, when: datetime) -> None:
        self.now = when.timestamp()
