"""A simulated genuine Enecsys gateway: Enecsys inverters "behind a gateway" that uploads over TCP.

It connects to ``host:port`` (on the appliance: ``gw.enecsys.net``, port 5040) and sends what a
real gateway sends (:mod:`appliance.protocols.enecsys_gateway`): a ping every ``ping_interval``
seconds, its own ``WZ=`` report every other round, and for each inverter that the sun wakes a
``WS=`` line every ``interval`` seconds carrying that inverter's Zigbee report. The inverters
are the Zigbee simulator's (:class:`~appliance.sim.enecsys_inverters.EnecsysInverter`, whose
report generator needs no radio): the same day curve, the same growing lifetime counter. It
reads the server's answers (counted in ``stats``), and connects again with a backoff when the
connection drops, as a gateway does.
"""
from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field

from appliance.protocols import enecsys
from appliance.protocols import enecsys_gateway as protocol
from appliance.sim.enecsys_inverters import EnecsysInverter
from appliance.sim.sun import SimClock

log = logging.getLogger(__name__)

DEFAULT_SERIALS = (120069930, 120069931, 120069932, 120069933)
"""Apart from the Zigbee simulator's serials, so both can run side by side."""
GATEWAY_ID = "7735A88A"
"""The captured gateway's id; its IEEE address ended in ``7735a88b`` (one more): so does ours."""
WZ_STATUS = ",S=2000005259"
"""What followed the captured ``WZ=`` frames (meaning unknown), copied as is."""


def default_serials(count: int) -> list[int]:
    return [DEFAULT_SERIALS[n] if n < len(DEFAULT_SERIALS) else DEFAULT_SERIALS[-1] + n - len(DEFAULT_SERIALS) + 1
            for n in range(count)]


@dataclass
class GatewayStats:
    connects: int = 0
    pings_sent: int = 0
    reports_sent: int = 0
    gateway_reports_sent: int = 0
    answers: int = 0
    sent: dict[int, bytes] = field(default_factory=dict)
    """Each inverter's latest Zigbee report, as its ``WS=`` line carried it."""


class SimulatedGateway:
    def __init__(self, host: str, port: int, serials: list[int] | tuple[int, ...], *, interval: float = 60.0,
                 ping_interval: float = 60.0, clock: SimClock | None = None, gateway_id: str = GATEWAY_ID,
                 reconnect_delay: float = 5.0) -> None:
        self.host, self.port = host, port
        self.clock = clock or SimClock.at(12.0)
        self.interval = interval
        self.ping_interval = ping_interval
        self.gateway_id = gateway_id.upper()
        self.ieee = (0x34C69A00 << 32) | ((int(gateway_id, 16) + 1) & 0xFFFFFFFF)
        self.reconnect_delay = reconnect_delay
        self.inverters = [EnecsysInverter(None, serial, interval=interval, clock=self.clock)  # type: ignore[arg-type]
                          for serial in serials]
        self.stats = GatewayStats()
        self._pings = 0
        self._wz_counter = 0
        self._rounds = 0
        self.connected = asyncio.Event()

    # --- lines ----------------------------------------------------------------------------------

    def _time(self) -> str:
        return self.clock.now().strftime("%H%M%S")

    def ws_line(self, frame: bytes, link: int = 0xDC) -> str:
        """The line that carries one inverter's report (the 4 gateway bytes: seconds of its uptime)."""
        uptime = int(self._rounds * self.interval) & 0xFFFFFFFF
        return protocol.report_line(self.gateway_id, self._time(),
                                    enecsys.encode_ws_line(frame, uptime.to_bytes(4, "big"), link))

    def wz_line(self) -> str:
        """The gateway's own report, shaped like the captured ones (its content is not understood)."""
        ieee = self.ieee.to_bytes(8, "little")
        self._wz_counter += 1
        raw = (ieee + (int(self._rounds * self.interval) & 0xFFFFFFFF).to_bytes(4, "big")
               + bytes([0x21, 0x01]) + self._wz_counter.to_bytes(4, "big") + bytes([0x0A, 0x53]) + ieee + b"\x48")
        payload = base64.urlsafe_b64encode(raw).decode("ascii")
        return protocol.report_line(self.gateway_id, self._time(), f"WZ={payload}52{WZ_STATUS}")

    def ping_line(self) -> str:
        self._pings += 1
        return protocol.ping_line(self.gateway_id, self._pings)

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, talk, and connect again whenever the connection drops; until cancelled."""
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.info("gateway: cannot connect to %s:%d (%s); trying again", self.host, self.port, exc)
                await asyncio.sleep(self.reconnect_delay)
                continue
            self.stats.connects += 1
            self.connected.set()
            answers = asyncio.create_task(self._read_answers(reader))
            try:
                await self._talk(writer, answers)
            except (ConnectionError, OSError) as exc:
                log.info("gateway: connection lost (%s)", exc)
            finally:
                self.connected.clear()
                answers.cancel()
                writer.close()
            await asyncio.sleep(self.reconnect_delay)

    async def _talk(self, writer: asyncio.StreamWriter, answers: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time()
        next_round = loop.time()
        while not answers.done():
            now = loop.time()
            if now >= next_ping:
                self._send(writer, self.ping_line())
                self.stats.pings_sent += 1
                next_ping = now + self.ping_interval
            if now >= next_round:
                self._round(writer)
                next_round = now + self.interval
            await writer.drain()
            await asyncio.wait([answers], timeout=max(0.0, min(next_ping, next_round) - loop.time()))

    def _round(self, writer: asyncio.StreamWriter) -> None:
        self._rounds += 1
        if self._rounds % 2 == 1:
            self._send(writer, self.wz_line())
            self.stats.gateway_reports_sent += 1
        if self.clock.daylight() <= 0:  # the inverters' radios run on panel power
            return
        for inverter in self.inverters:
            frame = inverter.next_report()
            self._send(writer, self.ws_line(frame))
            self.stats.sent[inverter.serial] = frame
            self.stats.reports_sent += 1

    @staticmethod
    def _send(writer: asyncio.StreamWriter, line: str) -> None:
        writer.write(line.encode("ascii") + b"\r")

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        """Count the server's answers until the connection ends."""
        while True:
            try:
                data = await reader.readuntil(b"\r")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            if data.rstrip(b"\r").decode("ascii", "replace") == protocol.KEEPALIVE:
                self.stats.answers += 1


async def serve(host: str, port: int, count: int, **options) -> SimulatedGateway:
    """``solargw simulate enecsys-gateway``: run until SIGINT/SIGTERM, then print what was sent."""
    import signal

    gateway = SimulatedGateway(host, port, default_serials(count), **options)
    for inverter in gateway.inverters:
        print(f"inverter {inverter.serial} behind gateway {gateway.gateway_id}", flush=True)
    if gateway.clock.daylight() <= 0:
        print(f"it is night at the simulated time ({gateway.clock.now():%H:%M}): the inverters stay silent "
              "until 06:00 (use --start 12:00 or a larger --speed)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(gateway.run())
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    s = gateway.stats
    print(f"gateway {gateway.gateway_id}: {s.connects} connections, {s.pings_sent} pings, "
          f"{s.reports_sent} inverter reports, {s.answers} answers from the server", flush=True)
    return gateway
