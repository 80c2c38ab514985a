"""Simulated Enecsys inverters (and one foreign device) on the emulated coordinator's air.

An inverter behaves like the one in a real capture of a join (the test fixture
``enecsys-join-100095471.json``) as far as the gateway can tell: it waits for a network with
PAN id 0x02AA, stack profile 0 and permit-join open, joins (TC device indication, then a device
announce if the trust-center key matches), sends its handshake request and waits a few seconds
for the gateway's reply. No reply: it leaves and tries again later. With a reply:

- ``confirm``, ``ready``, the info frame, ``ready`` again;
- a report on channel 1 and two alarm reports on channel 2, all with counter 0 (the second
  alarm 1), the grid connection's start-up alarm bits clearing one by one
  (DISC + grid low + bit 12, then DISC + bit 12, then bit 12 alone);
- then every ``interval`` a report on channel 1, halfway between two of them a short frame
  on channel 2, and every second interval ``ready`` again. Each channel counts on its own,
  from 0 at every join (now and then, with ``alarm_probability``, a full alarm report on
  channel 2 takes the short frame's place).

Power follows the day curve of :mod:`appliance.sim.sun`, the lifetime counter only grows, and at
night the inverter is silent: its radio runs on panel power, so it joins again at sunrise.
The coordinator APS-acknowledges every frame. Frames are built by :mod:`appliance.protocols.enecsys`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from dataclasses import dataclass, field

from appliance.protocols import enecsys
from appliance.sim.sun import SimClock
from appliance.sim.zstack.coordinator import CoordinatorEmulator

log = logging.getLogger(__name__)

DEFAULT_SERIALS = (100095471, 100012445, 100048236, 100048590, 100036587, 100077001, 100077002, 100077003)
FIRST_SERIAL_BEYOND_DEFAULTS = 100100000
STARTUP_ALARMS = ((1, 1, 0x1005), (2, 3, 0x1001), (2, None, 0x1000))
"""(channel, state, alarm bits) of the three reports right after the info frame, as captured;
state None: the state the sun gives."""
READY_EVERY = 2
"""Reports between two repeated ``ready`` frames."""


def network_suits(emulator: CoordinatorEmulator) -> bool:
    """What an inverter looks for in the beacons: PAN 0x02AA, stack profile 0, joins permitted."""
    beacon = emulator.beacon()
    return (beacon is not None and beacon.permit_join and beacon.pan_id == enecsys.PAN_ID
            and beacon.stack_profile == enecsys.STACK_PROFILE)


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
    short_frames_sent: int = 0
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
        date_string: str = "25-04-12 06:58",
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
        self.date_string = date_string
        self.stats = InverterStats()
        self.counters = {0: 0, 1: 0, 2: 0}
        """The next counter of each channel (0 info, 1 report, 2 alarm)."""
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

    async def run(self) -> None:
        while True:
            if self.clock.daylight() <= 0 or not network_suits(self.emulator):  # the radio runs on panel power
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
        self.counters = {0: 0, 1: 0, 2: 0}  # a new join is a new power-up
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
        confirm, ready = enecsys.encode_handshake_followups(self.serial)
        self.send(confirm)
        self.send(ready)
        self.counters[0] = 1
        self.send(enecsys.encode_info(self.serial, self.model_string, self.date_string, self.counters[0]))
        self.send(ready)
        for channel, state, alarm in STARTUP_ALARMS:
            self.send(self.next_report(channel=channel, alarm=alarm, state=state))
        return True

    async def _report_until_lost(self) -> None:
        self.reporting = True
        cycles = 0
        try:
            while self.emulator.nwk_of(self) is not None:
                await asyncio.sleep(self.interval / 2)
                if not self._still_up():
                    break
                self.send_alarm_channel()
                await asyncio.sleep(self.interval / 2)
                if not self._still_up():
                    break
                self.send_report()
                cycles += 1
                if cycles % READY_EVERY == 0:
                    self.send(enecsys.encode_handshake_followups(self.serial)[1])
        finally:
            self.reporting = False

    def _still_up(self) -> bool:
        if self.emulator.nwk_of(self) is None:
            return False
        if self.clock.daylight() <= 0:  # sunset: the radio goes dark
            self.emulator.leave(self)
            return False
        return True

    # --- frames ---------------------------------------------------------------------------

    def send(self, frame: bytes, **kwargs) -> bool:
        return self.emulator.send_from(self, frame, **kwargs)

    def next_report(self, *, channel: int = 1, alarm: int = 0, state: int | None = None) -> bytes:
        """The next report (channel 1) or alarm report (channel 2); the sun decides the values."""
        fraction = self.clock.daylight()
        dc_power = round(self.peak_w * fraction * self.random.uniform(0.92, 1.0))
        if state not in (None, 0):
            dc_power = 0  # starting up: not on the grid yet
        efficiency = 0.93 + 0.02 * fraction if dc_power else 0.0
        ac_power = dc_power * efficiency
        self.lifetime_wh += ac_power * self.interval / 3600
        dc_voltage = 30.0 + 8 * fraction
        if state is None:
            state = 0 if dc_power >= 5 else 1
        counter = self._count(channel)
        return enecsys.encode_report(
            self.serial, counter, state, dc_power / dc_voltage if dc_power else 0.0, dc_power,
            efficiency, 50, self.random.choice((239, 240, 241, 242)), 20 + 25 * fraction,
            int(self.lifetime_wh), alarm=alarm, channel=channel)

    def _count(self, channel: int) -> int:
        counter = self.counters[channel]
        self.counters[channel] = counter + 1
        return counter

    def send_report(self) -> bool:
        self.stats.reports_sent += 1
        return self.send(self.next_report())

    def send_alarm_channel(self) -> bool:
        """Between two reports: a short frame on channel 2, or now and then a full alarm report."""
        if self.alarm_probability and self.random.random() < self.alarm_probability:
            self.stats.alarms_sent += 1
            return self.send(self.next_report(channel=2, alarm=1 << self.random.choice((1, 2, 6))))
        self.stats.short_frames_sent += 1
        return self.send(enecsys.encode_short(self.serial, self._count(2)))

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

    def send(self, data: bytes, **kwargs) -> bool:
        """Any frame (by default on the Enecsys cluster and profile, as a forger would)."""
        return self.emulator.send_from(self, data, **kwargs)

    def send_zcl(self) -> bool:
        """A ZCL On/Off attribute report, profile 0x0104."""
        return self.send(bytes.fromhex("18010a0000100001"), cluster=0x0006, profile=0x0104)

    def send_on_enecsys_cluster(self) -> bool:
        """Something on cluster 0x0057 that is not an Enecsys frame."""
        return self.send(bytes.fromhex("1801020304"))


class InverterFleet:
    """Several inverters behind one emulator (for ``solargw simulate enecsys``, tests and the bench)."""

    def __init__(self, emulator: CoordinatorEmulator, serials: list[int] | tuple[int, ...], **options):
        self.inverters = [EnecsysInverter(emulator, serial, **options) for serial in serials]

    @classmethod
    def default_serials(cls, count: int) -> list[int]:
        serials = list(DEFAULT_SERIALS[:count])
        serials += [FIRST_SERIAL_BEYOND_DEFAULTS + n for n in range(count - len(serials))]
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

    def count(self, predicate) -> int:
        return sum(1 for inverter in self.inverters if predicate(inverter))


async def serve(emulator: CoordinatorEmulator, count: int, host: str, port: int, **options) -> int:
    """``solargw simulate enecsys``: the emulator on ``host:port`` with ``count`` inverters, until SIGINT/SIGTERM."""
    url = await emulator.start(host, port)
    fleet = InverterFleet(emulator, InverterFleet.default_serials(count), **options)
    print(url, flush=True)
    print(f"radio: {emulator.air.conditions.describe()}", flush=True)
    for inverter in fleet.inverters:
        print(f"inverter {inverter.serial} (IEEE {inverter.ieee:016x}) waits for PAN 0x02AA", flush=True)
    clock = fleet.inverters[0].clock if fleet.inverters else None
    if clock is not None and clock.daylight() <= 0:
        print(f"it is night at the simulated time ({clock.now():%H:%M}): the inverters stay silent until 06:00 "
              "(use --start 12:00 or a larger --speed)", flush=True)
    fleet.start()
    await _until_stopped()
    await fleet.stop()
    await emulator.stop()
    for inverter in fleet.inverters:
        s = inverter.stats
        print(f"inverter {inverter.serial}: {s.joins} joins, {s.handshake_replies} handshake replies, "
              f"{s.reports_sent} reports, {s.alarms_sent} alarms", flush=True)
    return 0


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
