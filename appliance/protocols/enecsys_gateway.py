"""The genuine Enecsys gateway's upload stream: the lines it sends over TCP, and the server's answer.

Pure: no I/O, no clock. :mod:`appliance.gateway` listens; this module says what a line is.

What is known, and where it comes from (reference only; no code of these projects is used):

- The gateway opens TCP to ``gw.enecsys.net`` port 5040 and sends CR-terminated ASCII lines
  (a public test script that replays a gateway's lines connects there; e2pv by Otto Moerbeek,
  the classic receiver, listens on 5040). Receivers split on CR and drop a following LF.
- Every line is ``LL body CC``: ``LL`` two hex digits, the number of characters of ``body``;
  ``CC`` two hex digits, the CRC-8 of ``body``'s characters (polynomial 0x07, initial value 0,
  no reflection, no final XOR). We found both rules ourselves: all eight lines of that public
  script and the server's answer below fit them, and nothing else of the kind we tried did.
- ``body`` starts with the gateway's id (8 hex digits) and a type: ``00`` a short ping about
  once a minute (``167735A88A00IQAAAABfAlIB0E``), ``01`` a report stamped with the gateway's
  time ``HHMMSS``, then ``WZ=`` (the gateway's own frame) or ``WS=`` (one inverter's frame):
  ``4A7735A88A01180743WZ=i6g1...NEg=52,S=2000005259C2``. A ``WS=`` line's body is 73
  characters (``49`` lines; one public receiver reads the payload from position 21 of them,
  e2pv takes whatever follows ``WS=``): 54 payload characters, decoded by
  :func:`appliance.protocols.enecsys.decode_ws_line` (protocols.md has the layout and a vector).
- The server's answer, ``0E0000000000cgAD83``, keeps the gateway talking. e2pv sends it at most
  every 200 s while lines arrive; another public receiver answers every ``16...`` ping unless
  its characters 12-13 (the first two after the type) are ``cg``, which is the answer's own
  shape; a Home Assistant integration sends it once when the gateway connects.
  :class:`KeepalivePolicy` does all three: on connect, on every ping (not more than once per
  ``PING_ANSWER_GAP`` seconds, so a flood costs nothing), and after ``IDLE_ANSWER_SECONDS``
  without an answer while any line arrives.

The ping's payload (base64 of ``21 00 <u32 counter> 02 52 01`` in the captured lines) and the
meaning of the ``WZ=`` frame are kept as text, not interpreted.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, replace
from enum import StrEnum

from appliance.protocols import enecsys
from appliance.reading import FrameError

SERVER_NAME = "gw.enecsys.net"
PORT = 5040
KEEPALIVE_BODY = "0000000000cgAD"
MAX_LINE = 512
"""No genuine line is longer than about 130 characters (an info frame in a ``WS=`` line)."""

TYPE_PING, TYPE_REPORT = "00", "01"
GATEWAY_ID_LENGTH = 8
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_GATEWAY_ID = re.compile(r"[0-9A-Fa-f]{8}")
_TIME = re.compile(r"\d{6}")


class LineKind(StrEnum):
    PING = "ping"
    """The gateway's keepalive (type 00)."""
    ANSWER = "answer"
    """A type-00 line shaped like the server's answer (``cg...``): not answered."""
    INVERTER = "inverter"
    """A ``WS=`` report: one inverter's frame."""
    GATEWAY = "gateway"
    """A ``WZ=`` report: the gateway's own frame."""
    OTHER = "other"
    """Well framed, of a type or content we do not know."""


def crc8(text: str | bytes) -> int:
    """CRC-8, polynomial 0x07, initial value 0, no reflection, no final XOR (CRC-8/SMBUS)."""
    data = text.encode("ascii") if isinstance(text, str) else text
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def frame_line(body: str) -> str:
    """``LL body CC`` (no CR) for a body of at most 255 characters."""
    if len(body) > 0xFF:
        raise ValueError(f"a gateway line body is at most 255 characters, not {len(body)}")
    return f"{len(body):02X}{body}{crc8(body):02X}"


KEEPALIVE = frame_line(KEEPALIVE_BODY)
"""``0E0000000000cgAD83``: what the server sends back (followed by CR)."""


@dataclass(frozen=True)
class GatewayLine:
    text: str
    """The line without its CR/LF."""
    kind: LineKind
    gateway_id: str
    line_type: str
    crc_ok: bool
    payload: str
    """What follows the type (and, in a report, the time): ``WS=...``, ``WZ=...`` or the ping's text."""
    time_text: str = ""
    """A report's ``HHMMSS`` (the gateway's clock)."""


def parse_line(line: str | bytes) -> GatewayLine:
    """What one line is. ``FrameError`` when it is not framed as a gateway line (length, hex
    digits, id); a CRC mismatch is no error here: it is ``crc_ok=False``."""
    if isinstance(line, (bytes, bytearray)):
        if not line.isascii():
            raise FrameError("a gateway line is ASCII text")
        line = bytes(line).decode("ascii")
    text = line.strip("\r\n")
    if len(text) > MAX_LINE:
        raise FrameError(f"line over {MAX_LINE} characters")
    if not text.isprintable() or not text.isascii():
        raise FrameError("a gateway line is printable ASCII text")
    if len(text) < 4 or not _HEX2.fullmatch(text[:2]) or not _HEX2.fullmatch(text[-2:]):
        raise FrameError("not a gateway line (LL ... CC with two hex digits each end)")
    body = text[2:-2]
    if int(text[:2], 16) != len(body):
        raise FrameError(f"the line says {int(text[:2], 16)} characters between its length and its check, "
                         f"it has {len(body)}")
    if len(body) < GATEWAY_ID_LENGTH + 2 or not _GATEWAY_ID.fullmatch(body[:GATEWAY_ID_LENGTH]):
        raise FrameError("a gateway line starts with the gateway's id (8 hex digits) and a type")
    crc_ok = crc8(body) == int(text[-2:], 16)
    gateway_id, line_type, rest = body[:8].upper(), body[8:10], body[10:]
    time_text = ""
    if line_type == TYPE_PING:
        kind = LineKind.ANSWER if rest.startswith("cg") else LineKind.PING
    elif line_type == TYPE_REPORT and _TIME.fullmatch(rest[:6]) and rest[6:9] in ("WS=", "WZ="):
        time_text, rest = rest[:6], rest[6:]
        kind = LineKind.INVERTER if rest.startswith("WS=") else LineKind.GATEWAY
    else:
        kind = LineKind.OTHER
    return GatewayLine(text, kind, gateway_id, line_type, crc_ok, rest, time_text)


def decode_inverter_line(line: GatewayLine, *, received_at: float, model: str = ""):
    """The :class:`~appliance.reading.Reading` a ``WS=`` line carries. A line that failed its CRC
    decodes with ``checksum_ok=False`` (the pipeline keeps it with the rejected frames)."""
    if line.kind != LineKind.INVERTER:
        raise FrameError(f"a {line.kind} line carries no inverter report")
    reading = enecsys.decode_ws_line(line.payload, received_at=received_at, model=model)
    if line.crc_ok:
        return reading
    return replace(reading, checksum_ok=False,
                   notes=reading.notes + ("the gateway line's CRC-8 check failed",))


# --- what a gateway sends (for the simulator and tests) ------------------------------------------

def ping_line(gateway_id: str, counter: int) -> str:
    """A ping shaped like the captured ones: base64 of ``21 00 <u32 counter> 02 52 01``."""
    raw = bytes([0x21, 0x00]) + (counter & 0xFFFFFFFF).to_bytes(4, "big") + bytes([0x02, 0x52, 0x01])
    return frame_line(f"{gateway_id}{TYPE_PING}{base64.urlsafe_b64encode(raw).decode('ascii')}")


def report_line(gateway_id: str, hhmmss: str, payload: str) -> str:
    """A type-01 line: ``payload`` is ``WS=...`` (see ``enecsys.encode_ws_line``) or ``WZ=...``."""
    if not _TIME.fullmatch(hhmmss):
        raise ValueError(f"the gateway's time is HHMMSS, not {hhmmss!r}")
    return frame_line(f"{gateway_id}{TYPE_REPORT}{hhmmss}{payload}")


# --- when to answer --------------------------------------------------------------------------------

PING_ANSWER_GAP = 20.0
"""Pings come about once a minute: answer each, but not a flood of them."""
IDLE_ANSWER_SECONDS = 200.0
"""e2pv's rule: while lines arrive, answer at least this often."""


@dataclass
class KeepalivePolicy:
    """When a connection gets the server's answer (times are the caller's clock, in seconds)."""

    last_answer: float | None = None

    def on_connect(self, now: float) -> bool:
        self.last_answer = now
        return True

    def on_line(self, kind: LineKind, now: float) -> bool:
        since = float("inf") if self.last_answer is None else now - self.last_answer
        if (kind == LineKind.PING and since >= PING_ANSWER_GAP) or since >= IDLE_ANSWER_SECONDS:
            self.last_answer = now
            return True
        return False
