"""What the Zigbee service does with Enecsys frames, apart from any radio library (no zigpy here).

- :class:`EnecsysFrames` takes one cluster-0x0057 payload and its sender: answers a handshake
  request (through the ``send_reply`` coroutine it is given), hands reports to the pipeline,
  rejects malformed frames and ignores foreign ones. Store work runs on one worker thread, in
  order, so a slow disk never delays a handshake reply.
- A frame speaks for the inverter whose IEEE it carries, so it must come from that inverter:
  the sender's IEEE (what the network's device list says of its short address) must be the one
  inside the frame. A frame that claims another identity, or whose sender is unknown, is not
  answered and not recorded: it is kept with the rejected frames and counted as a
  ``sender_mismatches``.
- :class:`JoinWatch` remembers trust-center joins until their handshake request comes: inverters
  that join but never ask are the sign of a stick built without the Enecsys trust-center key.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from appliance.pipeline import Pipeline
from appliance.protocols import enecsys
from appliance.reading import FrameError
from appliance.store import Store
from appliance.zigbee.telemetry import TelemetryFile

log = logging.getLogger(__name__)

FAMILY = "enecsys"
SENDER_MISMATCH = "sender_mismatches"


@dataclass
class JoinWatch:
    """Trust-center joins waiting for their handshake request (the firmware diagnosis)."""

    timeout: float
    pending: dict[int, float] = field(default_factory=dict)
    joins_without_handshake: int = 0
    handshakes: int = 0

    def joined(self, ieee: int) -> None:
        self.pending.setdefault(ieee, time.monotonic())

    def handshake(self, ieee: int) -> None:
        self.pending.pop(ieee, None)
        self.handshakes += 1

    def expire(self) -> list[int]:
        now = time.monotonic()
        expired = [ieee for ieee, at in self.pending.items() if now - at > self.timeout]
        for ieee in expired:
            del self.pending[ieee]
        self.joins_without_handshake += len(expired)
        return expired

    @property
    def firmware_suspect(self) -> bool:
        return self.joins_without_handshake >= 2 and self.handshakes == 0


class EnecsysFrames:
    """What to do with one frame on cluster 0x0057: reply, record, reject or ignore.

    ``send_reply(nwk, frame)`` is a coroutine that sends the handshake reply.
    """

    def __init__(self, store: Store, pipeline: Pipeline, executor: concurrent.futures.Executor,
                 telemetry: TelemetryFile | None = None, joins: JoinWatch | None = None):
        self.store = store
        self.joins = joins
        self.pipeline = pipeline
        self.executor = executor
        self.telemetry = telemetry
        self.models: dict[str, str] = {}
        self.inverters: dict[str, float] = {}  # serial -> last handshake or report (monotonic)
        self.handshakes = 0
        self.handshake_reply_seconds: collections.deque[float] = collections.deque(maxlen=1000)
        """The latest handshakes' service times (frame in, reply acknowledged by the stick)."""

    def _io(self, fn: Callable, *args, **kwargs) -> asyncio.Future:
        """Run store work on the store thread (in order); after shutdown there is nothing left to do."""
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))
        except RuntimeError:  # the executor is shut down: the service is stopping
            future = loop.create_future()
            future.set_result(None)
            return future

    def ignore(self, why: str) -> None:
        log.debug("ignored a frame: %s", why)
        self._io(self.store.count, "frames_ignored", FAMILY)

    async def frame(self, nwk: int, payload: bytes, sender: int | None, gateway_ieee: bytes,
                    send_reply: Callable[[int, bytes], Any], received_at: float | None = None) -> None:
        """Handle ``payload`` from short address ``nwk``, whose IEEE is ``sender`` (None: unknown)."""
        started = time.monotonic()
        received_at = time.time() if received_at is None else received_at
        source = f"zigbee:0x{nwk:04x}"
        kind = enecsys.classify(payload)
        if kind == enecsys.FrameKind.FOREIGN:
            self.ignore(f"not an Enecsys frame from 0x{nwk:04x}")
            return
        if kind == enecsys.FrameKind.MALFORMED:
            self._io(self.pipeline.reject, payload, FAMILY, source, "malformed Enecsys frame", received_at)
            return
        mismatch = sender_mismatch(nwk, sender, enecsys.ieee_from_frame(payload))
        if mismatch:
            log.warning("refused a frame from 0x%04x: %s", nwk, mismatch)
            self._io(self.pipeline.reject, payload, FAMILY, source, mismatch, received_at, (SENDER_MISMATCH,))
            return
        if kind == enecsys.FrameKind.REPORT:
            await self._report(payload, source, received_at)
            return
        try:
            handshake = enecsys.decode_handshake(payload)
        except FrameError as exc:
            self._io(self.pipeline.reject, payload, FAMILY, source, str(exc), received_at)
            return
        if not handshake.checksum_ok:
            self._io(self.pipeline.reject, payload, FAMILY, source, f"handshake {handshake.step}: checksum mismatch",
                     received_at)
            return
        if kind == enecsys.FrameKind.HANDSHAKE_REQUEST:
            reply = enecsys.handshake_reply(gateway_ieee)
            await send_reply(nwk, reply)
            self.handshake_reply_seconds.append(time.monotonic() - started)
            self.handshakes += 1
            if self.joins is not None:
                self.joins.handshake(handshake.ieee)
            self.inverters[handshake.serial] = time.monotonic()
            log.info("inverter %s (0x%04x) asked to join: handshake reply sent in %.0f ms", handshake.serial, nwk,
                     1000 * (time.monotonic() - started))
            self._io(self.store.count, "handshakes", FAMILY)
        else:
            log.debug("inverter %s: handshake %s", handshake.serial, handshake.step)

    async def _report(self, payload: bytes, source: str, received_at: float) -> None:
        serial = enecsys.serial_text(enecsys.ieee_from_frame(payload))
        try:
            reading = enecsys.decode(payload, received_at=received_at, model=self.models.get(serial, ""))
        except FrameError as exc:
            self._io(self.pipeline.reject, payload, FAMILY, source, str(exc), received_at)
            return
        if reading.checksum_ok:
            self.inverters[serial] = time.monotonic()
            if reading.kind == "info" and reading.model:
                self.models[serial] = reading.model
        try:
            await self._io(self._record, reading, source)
        except Exception:  # a storage failure loses this reading, never the service
            log.exception("recording a reading of %s failed", serial)

    def _record(self, reading, source: str) -> None:
        recorded = self.pipeline.handle(reading, source=source)
        if recorded is not None and self.telemetry is not None:
            self.telemetry.update(reading)


def sender_mismatch(nwk: int, sender: int | None, claimed: int) -> str | None:
    """Why a frame carrying IEEE ``claimed`` must not be trusted from ``sender``; None if it may."""
    said = f"the frame says {enecsys.ieee_text(claimed)} (serial {enecsys.serial_text(claimed)})"
    if sender is None:
        return f"sender mismatch: 0x{nwk:04x} is not on the network's device list; {said}"
    if sender != claimed:
        return f"sender mismatch: 0x{nwk:04x} is {enecsys.ieee_text(sender)}; {said}"
    return None
