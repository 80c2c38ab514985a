"""A real over-the-air capture played through the emulated coordinator (``solargw simulate enecsys --replay``).

A capture is JSON: ``{"frames": [{"t": 0.0, "from": "inverter", "nwk": "0xa2cd", "hex": "5701..."},
...]}``, the APS payloads of cluster 0x0057 (profile 0xC00F, endpoint 1 -> 1) in both directions,
``t`` in seconds. Inverters are told apart by the IEEE inside their frames; a ``gateway`` frame
belongs to the inverter whose short address it went to.

Each captured inverter becomes a device on the emulator's air: it waits for the Enecsys network,
associates and announces itself, then sends its captured frames with the captured timing divided
by ``speed``. Where the capture has the genuine gateway's answer, it waits for the service's (at
most ``reply_timeout`` seconds, as an inverter does) and compares the two (:func:`reply_differences`);
what follows keeps its captured spacing from that answer. A frame the service sends where the
genuine gateway sent none is a mismatch too.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.protocols import enecsys
from appliance.sim.enecsys_inverters import network_suits
from appliance.sim.zstack.coordinator import CoordinatorEmulator

SENDERS = ("inverter", "gateway")
REPLY_VARIABLE = slice(13, 16)
"""The three bytes after ``02 01 32`` in a reply: 000000, 414a00 and 006f00 were seen in the wild."""


class CaptureError(ValueError):
    """The capture file cannot be replayed; the message says why."""


@dataclass(frozen=True)
class CapturedFrame:
    t: float
    sender: str
    """``inverter`` or ``gateway``."""
    nwk: int
    """The inverter's short address in the capture (the destination of a gateway frame)."""
    data: bytes


def load_capture(path: Path | str) -> list[CapturedFrame]:
    """The frames of a capture file, in time order."""
    try:
        document = json.loads(Path(path).read_text())
        entries = document["frames"]
        frames = [CapturedFrame(float(entry["t"]), str(entry["from"]), int(str(entry["nwk"]), 0),
                                bytes.fromhex(entry["hex"])) for entry in entries]
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CaptureError(f"{path} is not a capture (JSON with frames of t, from, nwk and hex): {exc}") from None
    unknown = {frame.sender for frame in frames} - set(SENDERS)
    if unknown:
        raise CaptureError(f"{path}: frames from {', '.join(sorted(unknown))}; expected inverter or gateway")
    if not frames:
        raise CaptureError(f"{path} holds no frames")
    return sorted(frames, key=lambda frame: frame.t)


def by_inverter(frames: list[CapturedFrame]) -> dict[int, list[CapturedFrame]]:
    """Each inverter's frames (keyed by the IEEE inside them) with the gateway's frames to it."""
    inverters: dict[int, list[CapturedFrame]] = {}
    at_address: dict[int, int] = {}
    for frame in frames:
        if frame.sender == "inverter":
            if len(frame.data) < 10:
                raise CaptureError(f"the inverter frame at t={frame.t} is too short to carry an IEEE")
            ieee = enecsys.ieee_from_frame(frame.data)
            at_address[frame.nwk] = ieee
        elif frame.nwk in at_address:
            ieee = at_address[frame.nwk]
        else:
            raise CaptureError(f"the gateway frame at t={frame.t} goes to 0x{frame.nwk:04x}, "
                               "which sent nothing before")
        inverters.setdefault(ieee, []).append(frame)
    return inverters


def reply_differences(genuine: bytes, ours: bytes, coordinator_ieee: int) -> list[str]:
    """Where the service's answer ``ours`` differs from the genuine gateway's in structure.

    The IEEE inside a reply is the sender's own: the stick's in ours, the genuine gateway's in
    the capture. The three bytes after ``02 01 32`` vary in the wild and are not compared."""
    problems = []
    if enecsys.classify(ours) != enecsys.classify(genuine):
        problems.append(f"a {enecsys.classify(ours)} frame where the gateway sent a {enecsys.classify(genuine)}")
    if len(ours) != len(genuine):
        problems.append(f"{len(ours)} bytes where the gateway sent {len(genuine)}")
    if not enecsys.checksum_ok(ours):
        problems.append("its checksum is wrong")
    if ours[2:10] != enecsys.ieee_to_frame(coordinator_ieee):
        problems.append(f"it carries IEEE {ours[2:10][::-1].hex()}, not the stick's {coordinator_ieee:016x}")
    compared = [i for i in range(min(len(ours), len(genuine)) - 1)
                if not 2 <= i < 10 and i not in range(REPLY_VARIABLE.start, REPLY_VARIABLE.stop)]
    differing = [i for i in compared if ours[i] != genuine[i]]
    if differing:
        problems.append("byte " + ", ".join(f"{i}: {ours[i]:02x} (gateway {genuine[i]:02x})" for i in differing))
    return problems


@dataclass
class Received:
    cluster: int
    profile: int
    src_ep: int
    dst_ep: int
    data: bytes
    at: float = field(default_factory=time.monotonic)


class ReplayedInverter:
    """One captured inverter on the emulator's air."""

    def __init__(self, emulator: CoordinatorEmulator, ieee: int, frames: list[CapturedFrame], *,
                 speed: float = 1.0, reply_timeout: float = 5.0, grace: float = 1.0):
        self.emulator = emulator
        self.ieee = ieee
        self.frames = frames
        self.speed = speed
        self.reply_timeout = reply_timeout
        self.grace = grace
        self.nwk: int | None = None
        self.sent = 0
        self.replies_compared = 0
        self.mismatches: list[str] = []
        self._received: asyncio.Queue[Received] = asyncio.Queue()

    @property
    def name(self) -> str:
        return f"inverter {enecsys.serial_text(self.ieee)}"

    def deliver(self, cluster: int, profile: int, src_ep: int, dst_ep: int, data: bytes) -> None:
        self._received.put_nowait(Received(cluster, profile, src_ep, dst_ep, data))

    async def play(self) -> None:
        while self.nwk is None:
            if network_suits(self.emulator):
                self.nwk = self.emulator.associate(self, enecsys.TC_LINK_KEY)
            if self.nwk is None:
                await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        start, first, shift = loop.time(), self.frames[0].t, 0.0
        for frame in self.frames:
            due = start + (frame.t - first) / self.speed + shift
            if frame.sender == "inverter":
                await asyncio.sleep(max(0.0, due - loop.time()))
                self.emulator.send_from(self, frame.data)
                self.sent += 1
                continue
            try:
                answer = await asyncio.wait_for(self._received.get(), self.reply_timeout)
            except TimeoutError:
                self._mismatch(frame, f"no answer within {self.reply_timeout:g} s where the gateway sent "
                                      f"{frame.data.hex()}")
                continue
            self.replies_compared += 1
            self._compare(frame, answer)
            shift += max(0.0, loop.time() - due)  # what follows keeps its spacing from the answer
        await asyncio.sleep(self.grace)
        while not self._received.empty():
            extra = self._received.get_nowait()
            self.mismatches.append(f"{self.name}: the service sent {extra.data.hex()} where the gateway sent nothing")

    def _compare(self, frame: CapturedFrame, answer: Received) -> None:
        route = (answer.cluster, answer.profile, answer.src_ep, answer.dst_ep)
        wanted = (enecsys.CLUSTER_ID, enecsys.PROFILE_ID, enecsys.ENDPOINT, enecsys.ENDPOINT)
        if route != wanted:
            self._mismatch(frame, "sent as cluster 0x{:04x}, profile 0x{:04x}, endpoint {} -> {}".format(*route)
                           + " (the gateway: cluster 0x0057, profile 0xC00F, endpoint 1 -> 1)")
        for problem in reply_differences(frame.data, answer.data, self.emulator.ieee):
            self._mismatch(frame, f"{problem}: ours {answer.data.hex()}, the gateway's {frame.data.hex()}")

    def _mismatch(self, frame: CapturedFrame, text: str) -> None:
        self.mismatches.append(f"{self.name}, the gateway's frame at t={frame.t:g} s: {text}")


class Replay:
    """Every inverter of a capture, played at once."""

    def __init__(self, emulator: CoordinatorEmulator, frames: list[CapturedFrame], *, speed: float = 1.0,
                 reply_timeout: float = 5.0, grace: float = 1.0):
        self.inverters = [ReplayedInverter(emulator, ieee, own, speed=speed, reply_timeout=reply_timeout, grace=grace)
                          for ieee, own in by_inverter(frames).items()]

    async def run(self) -> list[str]:
        """Play the capture; the mismatches found (none: the service answered as the gateway did)."""
        await asyncio.gather(*(inverter.play() for inverter in self.inverters))
        return [text for inverter in self.inverters for text in inverter.mismatches]


async def serve(emulator: CoordinatorEmulator, frames: list[CapturedFrame], name: str, host: str, port: int,
                speed: float) -> int:
    """``solargw simulate enecsys --replay``: play the capture once the service runs the network; 0 if
    every answer matched the genuine gateway's, 1 if not (the differences on stderr), 130 if stopped."""
    replay = Replay(emulator, frames, speed=speed)
    print(await emulator.start(host, port), flush=True)
    print(f"replaying {name}: {len(frames)} frames of {len(replay.inverters)} inverter(s) at {speed:g}x; "
          f"radio: {emulator.air.conditions.describe()}; waiting for the Enecsys network", flush=True)
    playing = asyncio.ensure_future(replay.run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, playing.cancel)
    try:
        mismatches = await playing
    except asyncio.CancelledError:
        print("replay stopped before the end of the capture", file=sys.stderr, flush=True)
        return 130
    finally:
        await emulator.stop()
    for inverter in replay.inverters:
        print(f"{inverter.name} (IEEE {inverter.ieee:016x}) joined as 0x{inverter.nwk:04x}: {inverter.sent} frames "
              f"sent, {inverter.replies_compared} answers compared with the gateway's", flush=True)
    for text in mismatches:
        print(f"replay mismatch: {text}", file=sys.stderr, flush=True)
    print(f"{len(mismatches)} reply mismatch(es)" if mismatches else "no reply mismatch", flush=True)
    return 1 if mismatches else 0
