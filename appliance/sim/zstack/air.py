"""The radio between the emulated coordinator and the devices on its air: time, loss, APS acks.

:data:`IDEAL` (the default) carries every frame at once, in order, and never loses one. Other
:class:`RadioConditions` make it a radio:

- each hop takes ``hop_delay`` plus up to ``hop_jitter`` (uniform), and each transmission over
  a hop is lost with probability ``loss`` (what is left after the MAC's own retries);
- an APS unicast with an ACK requested is acknowledged end to end over the same hops; an
  attempt whose frame or ACK is lost is sent again ``aps_ack_wait`` after it went out, at most
  ``aps_retries`` times (Z-Stack's APSC_MAX_FRAME_RETRIES is 3; Koenkk's coordinator builds wait
  1 s, APSC_ACK_WAIT_DURATION_POLLED 500 in units of 2 ms). The receiver passes a frame up once
  however often it arrives (APS duplicate rejection);
- a broadcast is sent ``broadcast_copies`` times (the original and nwkMaxBroadcastRetries 2
  repeats: the capture of a real join shows the inverter's Device_annce three times); the first
  copy that arrives counts and the others are dropped as duplicates;
- the coordinator has room for ``max_children`` devices that associate with it directly
  (NWK_MAX_DEVICE_LIST, 50 in Koenkk's builds) and each router (every inverter is one) for
  ``router_max_children``; a device that finds no room joins through a router, one hop further
  out, or not at all. None means no limit.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class RadioConditions:
    hop_delay: float = 0.0
    hop_jitter: float = 0.0
    loss: float = 0.0
    aps_retries: int = 3
    aps_ack_wait: float = 1.0
    broadcast_copies: int = 3
    max_children: int | None = None
    router_max_children: int | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        if self.hop_delay < 0 or self.hop_jitter < 0 or not 0 <= self.loss < 1:
            raise ValueError("radio conditions: delays must not be negative and the loss rate must be in [0, 1)")

    @property
    def instant(self) -> bool:
        """No time passes and nothing is lost: frames are handed over synchronously."""
        return self.hop_delay == self.hop_jitter == self.loss == 0

    def describe(self) -> str:
        if self.instant:
            return "ideal radio (no delay, no loss)"
        return (f"{1000 * self.hop_delay:.0f}-{1000 * (self.hop_delay + self.hop_jitter):.0f} ms per hop, "
                f"{100 * self.loss:g}% loss, {self.aps_retries} APS retries {1000 * self.aps_ack_wait:.0f} ms apart")


IDEAL = RadioConditions()
REALISTIC = RadioConditions(hop_delay=0.010, hop_jitter=0.030, loss=0.02, max_children=50)
"""10-40 ms per hop, 2% loss, Z-Stack's APS retries, the child table of Koenkk's builds."""


@dataclass
class AirStats:
    transmissions: int = 0
    lost: int = 0
    aps_acks: int = 0
    aps_retries: int = 0
    aps_failures: int = 0
    """Unicasts whose every attempt went unacknowledged."""


class Air:
    """Carries frames under ``conditions``; one random stream (seeded) for delays and losses."""

    def __init__(self, conditions: RadioConditions = IDEAL):
        self.conditions = conditions
        self.random = random.Random(conditions.seed)
        self.stats = AirStats()

    def path(self, hops: int) -> tuple[float, bool]:
        """One transmission over ``hops`` hops: how long it takes, and whether it arrives."""
        c = self.conditions
        delay = sum(c.hop_delay + self.random.uniform(0, c.hop_jitter) for _ in range(hops))
        arrives = True
        for _ in range(hops):
            self.stats.transmissions += 1
            if c.loss and self.random.random() < c.loss:
                self.stats.lost += 1
                arrives = False
                break
        return delay, arrives

    async def unicast(self, hops: int, deliver: Callable[[], None], *, ack: bool = True) -> bool:
        """Carry one APS unicast; ``deliver()`` is called once if it arrives. True if it was
        acknowledged (without an ACK request: if the one transmission arrived)."""
        delivered = False
        attempts = 1 + (self.conditions.aps_retries if ack else 0)
        for attempt in range(attempts):
            if attempt:
                self.stats.aps_retries += 1
            delay, arrives = self.path(hops)
            await asyncio.sleep(delay)
            if arrives and not delivered:
                deliver()
                delivered = True
            if not ack:
                return arrives
            if arrives:
                back, acked = self.path(hops)
                if acked:
                    await asyncio.sleep(back)
                    self.stats.aps_acks += 1
                    return True
            await asyncio.sleep(max(0.0, self.conditions.aps_ack_wait - delay))
        self.stats.aps_failures += 1
        return False

    async def broadcast(self, hops: int, deliver: Callable[[], None]) -> bool:
        """Carry a broadcast (repeated ``broadcast_copies`` times); ``deliver()`` once for the first copy."""
        for _ in range(max(1, self.conditions.broadcast_copies)):
            delay, arrives = self.path(hops)
            await asyncio.sleep(delay)
            if arrives:
                deliver()
                return True
        return False
