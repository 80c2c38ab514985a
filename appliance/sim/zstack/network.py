"""Who is on the emulated network: short addresses and parents.

Addresses are stochastic, as Z-Stack 3 assigns them: a random address from 0x0001-0xFFF7 that
no joined device holds (a device that joins again while still joined keeps its own). A device
associates with the coordinator while its child table has room, else with the router nearest
to the coordinator that has room (every Enecsys inverter is a router), one hop further out;
with no room anywhere the association is refused.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Protocol

COORDINATOR_NWK = 0x0000
LAST_UNICAST_NWK = 0xFFF7  # 0xFFF8-0xFFFF are broadcast and reserved addresses
ROUTER_CAPABILITY = 0x02  # MAC capability flags: full-function device (a router)


class RadioDevice(Protocol):
    """A simulated device on the air behind the coordinator."""

    ieee: int

    def deliver(self, cluster: int, profile: int, src_ep: int, dst_ep: int, data: bytes) -> None: ...


@dataclass
class Joined:
    device: RadioDevice
    nwk: int
    capabilities: int
    parent: int = COORDINATOR_NWK
    hops: int = 1
    """Hops between the device and the coordinator."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """Held while the device transmits: its frames go out one after the other, in order."""

    @property
    def router(self) -> bool:
        return bool(self.capabilities & ROUTER_CAPABILITY)


class Network:
    def __init__(self, max_children: int | None = None, router_max_children: int | None = None, seed: int = 1):
        self.max_children = max_children
        self.router_max_children = router_max_children
        self.random = random.Random(seed)
        self.by_ieee: dict[int, Joined] = {}

    def place(self, device: RadioDevice, capabilities: int) -> Joined | None:
        """Give an associating device an address and a parent; None when no parent has room."""
        current = self.by_ieee.get(device.ieee)
        if current is not None:
            current.device, current.capabilities = device, capabilities
            return current
        parent = self._parent()
        if parent is None:
            return None
        nwk, hops = (COORDINATOR_NWK, 1) if parent is True else (parent.nwk, parent.hops + 1)
        joined = Joined(device, self._free_address(), capabilities, nwk, hops)
        self.by_ieee[device.ieee] = joined
        return joined

    def remove(self, ieee: int) -> Joined | None:
        return self.by_ieee.pop(ieee, None)

    def clear(self) -> None:
        self.by_ieee.clear()

    def get(self, ieee: int) -> Joined | None:
        return self.by_ieee.get(ieee)

    def by_nwk(self, nwk: int) -> Joined | None:
        return next((j for j in self.by_ieee.values() if j.nwk == nwk), None)

    def children(self, nwk: int) -> list[Joined]:
        return [j for j in self.by_ieee.values() if j.parent == nwk]

    def _parent(self) -> Joined | bool | None:
        """True for the coordinator, a router, or None when nobody has room."""
        if self.max_children is None or len(self.children(COORDINATOR_NWK)) < self.max_children:
            return True
        routers = [j for j in self.by_ieee.values() if j.router and (
            self.router_max_children is None or len(self.children(j.nwk)) < self.router_max_children)]
        return min(routers, key=lambda j: j.hops, default=None)

    def _free_address(self) -> int:
        taken = {j.nwk for j in self.by_ieee.values()} | {COORDINATOR_NWK}
        if len(taken) > LAST_UNICAST_NWK:
            raise RuntimeError("no short address left")
        while True:
            nwk = self.random.randint(0x0001, LAST_UNICAST_NWK)
            if nwk not in taken:
                return nwk
