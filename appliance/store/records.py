"""What the store hands out: plain frozen records."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.reading import Reading


@dataclass(frozen=True)
class InverterInfo:
    serial: str
    family: str
    model: str
    model_setting: str
    name: str
    firmware: str
    first_seen: float
    last_seen: float
    lifetime_wh: float
    energy_today_wh: float
    removed: bool
    resumed: bool = False
    """The appliance restarted after losing its RAM (a power cut, a reboot) and this inverter has
    not reported since: ``lifetime_wh`` is the ledger as last written to the card, possibly a few
    minutes behind the total published before. It catches up, exactly, at the next report (the
    inverter's own counter kept counting); until then publish no lifetime, so that no published
    total ever goes down."""

    @property
    def display_name(self) -> str:
        return self.name or f"{'NEP' if self.family == 'nep' else 'Enecsys'} {self.serial}"


@dataclass(frozen=True)
class LatestReading:
    serial: str
    timestamp: float
    kind: str
    model: str
    model_guessed: bool
    fields: dict[str, Any]
    raw: dict[str, int]
    frame_hex: str
    source: str


@dataclass(frozen=True)
class Recorded:
    """What ``Store.record`` did with a reading: the ledger's view after it."""

    reading: Reading
    inverter: InverterInfo
    lifetime_wh: float
    energy_today_wh: float
    delta_wh: float


@dataclass(frozen=True)
class RejectedFrame:
    timestamp: float
    family: str | None
    source: str
    reason: str
    frame_hex: str


HEALTH_STATES = ("ok", "read-only", "full", "error")


@dataclass(frozen=True)
class StoreHealth:
    """Whether the card takes the group commits (``Store.health()``), shared by every service.

    ``state``: ``ok``, ``read-only`` (the file system was remounted read-only, as the kernel does
    after card errors), ``full`` or ``error`` (anything else; ``message`` says what). ``since``: when
    the state began. ``queued``: readings waiting in RAM for the card (bounded: see
    ``Store.queue_limit``); ``oldest_queued``: the receive time of the oldest of them.
    ``last_flush``: the last group commit that reached the card."""

    state: str
    since: float | None
    queued: int
    oldest_queued: float | None
    message: str
    last_flush: float | None
    journal_records: int = 0
    """Journal records written since the working copy was made (at boot), one per loss window with news."""
    commits: int = 0
    """Database commits since the working copy was made (every few hours, and at each service stop)."""

    @property
    def ok(self) -> bool:
        return self.state == "ok"
