"""Simulated Enecsys inverters (and one foreign device) on the emulated coordinator's air.

An inverter behaves like the real ones as far as the gateway can tell: it waits for a
network with PAN id 0x02AA, stack profile 0 and permit-join open, joins (TC device
indication, then a device announce if the trust-center key matches), sends its handshake
request and waits a few seconds for the gateway's reply. No reply: it leaves and tries
again later. With a reply: confirm and ready frames, an info frame, then a report every
``interval`` seconds (an alarm-channel report now and then). Power follows a day curve,
the lifetime counter only grows, and at night the inverter is silent (its radio runs on
panel power, so it joins again at sunrise). The sun is :mod:`appliance.sim.sun`'s; frames are
built by :mod:`appliance.protocols.enecsys`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from appliance.protocols import enecsys
from appliance.sim.sun import SimClock
from appliance.sim.zstack.coordinator import CoordinatorEmulator

log = logging.getLogger(__name__)

DEFAULT_SERIALS = (100095471, 100012445, 100048236, 100048590, 100036587, 100077001, 100077002, 100077003)


@dataclass
class InverterStats:
    joins: int = 0
    failed_joins: int = 0
    handshake_requests: int = 0
    handshake_replies: int = 0
    handshake_timeouts: int = 0
    handshake_latencies: list[float] = field(default_factory=list)
    reports_sent: int = 0
    alarms_sent: int = 0
    ignored_frames: int = 0


class EnecsysInverter:
    """One simulated Enecsys inverter on the emulated coordinator's air."""

    def __init__(
        self,
        emulator: CoordinatorEmulator,
        serial: int,
        *,
        interval: float = 60.0,
        handshake_timeout: float = 3.0,
        retry_delay: float = 10.0,
        peak_w: float = 220.0,
        lifetime_wh: float | None = None,
        alarm_probability: float = 0.02,
        clock: SimClock | None = None,
        link_key: bytes = enecsys.TC_LINK_KEY,
        model_string: str = "WSI-00003",
    ):
        self.emulator = emulator
        self.serial = serial
        self.ieee = enecsys.serial_to_ieee(serial)
        self.interval = interval
        self.handshake_timeout = handshake_timeout
        self.retry_delay = retry_delay
        self.peak_w = peak_w
        self.random = random.Random(serial)
        self.lifetime_wh = lifetime_wh if lifetime_wh is not None else 1_000_000 + self.random.randrange(2_000_000)
        self.alarm_probability = alarm_probability
        self.clock = clock or SimClock.at(12.0)
        self.link_key = link_key
        self.model_string = model_string
        self.stats = InverterStats()
        self.counter = 0
        self.reporting = False
        self._reply = asyncio.Event()
        self._request_sent_at = 0.0
        self._task: asyncio.Task | None = None

    # --- the emulator's side ------------------------------------------------------------

    def deliver(self, cluster: int, profile: int, src_ep: int, dst_ep: int, data: bytes) -> None:
        if (cluster, profile) != (enecsys.CLUSTER_ID, enecsys.PROFILE_ID) or (src_ep, dst_ep) != (1, 1):
            self.stats.ignored_frames += 1  # only what the genuine gateway sends counts
            return
        if enecsys.classify(data) != enecsys.FrameKind.HANDSHAKE_REPLY:
            return
        if enecsys.checksum_ok(data) and self._request_sent_at and not self._reply.is_set():
            self.stats.handshake_latencies.append(time.monotonic() - self._request_sent_at)
            self._reply.set()

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"inverter-{self.serial}")
        self._task.add_done_callback(self._ended)
        return self._task

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("simulated inverter %s crashed", self.serial, exc_info=task.exception())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.emulator.leave(self)

    def _network_suits(self) -> bool:
        beacon = self.emulator.beacon()
        return (beacon is not None and beacon.permit_join and beacon.pan_id == enecsys.PAN_ID
                and beacon.stack_profile == enecsys.STACK_PROFILE)

    async def run(self) -> None:
        while True:
            if self.clock.daylight() <= 0 or not self._network_suits():  # the radio runs on panel power
                await asyncio.sleep(min(self.retry_delay, 1.0))
                continue
            if await self._join_and_handshake():
                await self._report_until_lost()
            await asyncio.sleep(self.retry_delay)

    async def _join_and_handshake(self) -> bool:
        nwk = self.emulator.associate(self, self.link_key)
        if nwk is None:
            self.stats.failed_joins += 1
            return False
        self.stats.joins += 1
        self.counter = 0
        self._reply.clear()
        self._request_sent_at = time.monotonic()
        self.stats.handshake_requests += 1
        self.send(enecsys.encode_handshake_request(self.serial))
        try:
            await asyncio.wait_for(self._reply.wait(), self.handshake_timeout)
        except TimeoutError:
            self.stats.handshake_timeouts += 1
            log.debug("inverter %s: no handshake reply, leaving", self.serial)
            self.emulator.leave(self)
            return False
        self.stats.handshake_replies += 1
        for frame in enecsys.encode_handshake_followups(self.serial):
            self.send(frame)
        self.counter += 1
        self.send(enecsys.encode_info(self.serial, self.model_string, "2013-05-14", self.counter))
        return True

    async def _report_until_lost(self) -> None:
        self.reporting = True
        try:
            while self.emulator.nwk_of(self) is not None:
                if self.clock.daylight() <= 0:  # sunset: the radio goes dark
                    self.emulator.leave(self)
                    break
                self.send_report()
                await asyncio.sleep(self.interval)
        finally:
            self.reporting = False

    # --- frames ---------------------------------------------------------------------------

    def send(self, frame: bytes, **kwargs) -> bool:
        return self.emulator.send_from(self, frame, **kwargs)

    def next_report(self, *, channel: int = 1, alarm: int = 0) -> bytes:
        fraction = self.clock.daylight()
        dc_power = round(self.peak_w * fraction * self.random.uniform(0.92, 1.0))
        efficiency = 0.93 + 0.02 * fraction if dc_power else 0.0
        ac_power = dc_power * efficiency
        self.lifetime_wh += ac_power * self.interval / 3600
        dc_voltage = 30.0 + 8 * fraction
        state = 0 if dc_power >= 5 else 1
        self.counter += 1
        return enecsys.encode_report(
            self.serial, self.counter, state, dc_power / dc_voltage if dc_power else 0.0, dc_power,
            efficiency, 50, self.random.choice((239, 240, 241, 242)), 20 + 25 * fraction,
            int(self.lifetime_wh), alarm=alarm, channel=channel)

    def send_report(self) -> bool:
        if self.alarm_probability and self.random.random() < self.alarm_probability:
            self.stats.alarms_sent += 1
            return self.send(self.next_report(channel=2, alarm=1 << self.random.choice((1, 2, 6))))
        self.stats.reports_sent += 1
        return self.send(self.next_report())

    def send_corrupt_report(self) -> bytes:
        """A report whose checksum byte is wrong (as a radio glitch would leave it)."""
        frame = bytearray(self.next_report())
        frame[-1] ^= 0x5A
        self.send(bytes(frame))
        return bytes(frame)


class ForeignDevice:
    """A non-Enecsys Zigbee device on the same network (a ZHA on/off switch, say)."""

    def __init__(self, emulator: CoordinatorEmulator, ieee: int = 0x00158D0001A2B3C4):
        self.emulator = emulator
        self.ieee = ieee
        self.received: list[bytes] = []

    def deliver(self, cluster: int, profile: int, src_ep: int, dst_ep: int, data: bytes) -> None:
        self.received.append(data)

    def join(self) -> int | None:
        return self.emulator.associate(self, self.emulator.tc_link_key)

    def send_zcl(self) -> bool:
        """A ZCL On/Off attribute report, profile 0x0104."""
        return self.emulator.send_from(self, bytes.fromhex("18010a0000100001"), cluster=0x0006, profile=0x0104)

    def send_on_enecsys_cluster(self) -> bool:
        """Something on cluster 0x0057 that is not an Enecsys frame."""
        return self.emulator.send_from(self, bytes.fromhex("1801020304"))


class InverterFleet:
    """Several inverters behind one emulator (for ``solargw simulate enecsys`` and tests)."""

    def __init__(self, emulator: CoordinatorEmulator, serials: list[int] | tuple[int, ...], **options):
        self.inverters = [EnecsysInverter(emulator, serial, **options) for serial in serials]

    @classmethod
    def default_serials(cls, count: int) -> list[int]:
        serials = list(DEFAULT_SERIALS[:count])
        serials += [100100000 + n for n in range(count - len(serials))]
        return serials

    def start(self) -> None:
        for inverter in self.inverters:
            inverter.start()

    async def stop(self) -> None:
        await asyncio.gather(*(inverter.stop() for inverter in self.inverters))

    def latencies(self) -> list[float]:
        return [value for inverter in self.inverters for value in inverter.stats.handshake_latencies]

    def reporting(self) -> bool:
        return all(inverter.reporting for inverter in self.inverters)
