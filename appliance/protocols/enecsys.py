"""Enecsys micro-inverter frames (Zigbee cluster 0x0057 payloads) and ``WS=`` upload lines.

Every frame: ``[0:2]`` type (``57 00`` report, ``57 01`` join handshake), ``[2:10]``
IEEE address little-endian, and a last byte that makes the sum of all bytes 0xA9.
The inverter's IEEE is ``34c69a00`` followed by its 32-bit serial.

Reports (``57 00``): ``[10]`` 0x21, ``[11]`` channel (0 info, 1 report, 2 alarm),
``[12:16]`` u32 big-endian counter, ``[16]`` payload length N, payload, checksum.
N = 20 is a report payload, N = 1 a short frame, channel 0 an info frame.
Counters restart at every join and each channel seems to keep its own: in a real
capture the info frame has counter 1, channel 1 counts 0 then 2, channel 2 counts
0, 1 and 2 (the last a short frame).

Handshake (``57 01``), steps named by the byte at ``[10]``: 0x05 ``request``
(inverter), 0x02 ``reply`` (gateway, must be sent or the inverter leaves), then
0x03 ``confirm`` and 0x07 ``ready`` (inverter). The step names are ours. An
inverter sends ``ready`` again after its info frame and then every couple of minutes.

A frame whose checksum fails still decodes (``checksum_ok=False``); framing,
length and type problems raise :class:`~appliance.reading.FrameError`.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from enum import StrEnum

from appliance.reading import EnergyCounter, FieldValue, FrameError, Reading

# The network the inverters join, and how their frames travel (protocols.md section 2).
TC_LINK_KEY = b"ENCSYS-SOLAR-NET"
PAN_ID = 0x02AA
STACK_PROFILE = 0
PROFILE_ID = 0xC00F
CLUSTER_ID = 0x0057
ENDPOINT = 1

CHECKSUM_TOTAL = 0xA9
IEEE_PREFIX = 0x34C69A00
TYPE_REPORT = b"\x57\x00"
TYPE_HANDSHAKE = b"\x57\x01"
REPORT_MARKER = 0x21
REPORT_FORMAT = 0x30
DEVICE_ID = 0x0388
REPORT_PAYLOAD_LENGTH = 20
INFO_PAYLOAD_LENGTH = 61
INFO_HEAD, INFO_MIDDLE, INFO_TAIL = bytes.fromhex("720103"), bytes.fromhex("3c00000000"), b"\xff\xff"
"""The info frame's constant parts, as captured (meaning unknown): see :func:`encode_info`."""
INFO_SERIAL, INFO_MODEL, INFO_DATE = slice(3, 7), slice(7, 24), slice(29, 43)
"""Where the captured info frame's payload has the serial, the model and the date."""
HEADER_LENGTH = 17  # type, IEEE, marker, channel, counter, N

CHANNELS = {0: "info", 1: "report", 2: "alarm"}
STATE_TEXT = {0: "normal", 1: "not enough light", 3: "other low light"}
STATE_SHARED = {0: "producing", 1: "low_light", 3: "low_light"}
ALARM_BITS: tuple[str, ...] = (
    "DISC", "grid high", "grid low", "over-frequency", "under-frequency", "islanding",
    "temperature hot", "temperature cold", "temperature range", "delay", "DC-link low",
    "DC-link high", "phase", "surge", "diagnostic", "stop",
)
"""Alarm bit names, bit 0 first."""

STEP_REQUEST, STEP_REPLY, STEP_CONFIRM, STEP_READY = 0x05, 0x02, 0x03, 0x07
STEP_NAMES = {STEP_REQUEST: "request", STEP_REPLY: "reply", STEP_CONFIRM: "confirm", STEP_READY: "ready"}
STEP_LENGTHS = {STEP_REQUEST: 26, STEP_REPLY: 19, STEP_CONFIRM: 17, STEP_READY: 13}
REQUEST_TAIL = bytes.fromhex("02010a000000")
CONFIRM_TAIL = bytes.fromhex("010a000000")
READY_TAIL = bytes.fromhex("78")
REPLY_VARIANTS: tuple[bytes, ...] = (bytes(3), bytes.fromhex("414a00"), bytes.fromhex("006f00"))
"""The three XX XX XX values seen in captured gateway replies; any of them works."""


class FrameKind(StrEnum):
    """What a cluster-0x0057 payload is, as :func:`classify` sees it."""

    HANDSHAKE_REQUEST = "handshake_request"
    HANDSHAKE_REPLY = "handshake_reply"
    HANDSHAKE_FOLLOW_UP = "handshake_follow_up"
    REPORT = "report"
    MALFORMED = "malformed"
    """Starts like an Enecsys frame but has an impossible length or step."""
    FOREIGN = "foreign"
    """Not an Enecsys frame at all."""


# --- checksum and addresses -----------------------------------------------------------------

def checksum_byte(body: bytes) -> int:
    """The last byte that makes ``body + [it]`` sum to 0xA9 (mod 256)."""
    return (CHECKSUM_TOTAL - sum(body)) & 0xFF


def checksum_ok(frame: bytes) -> bool:
    return len(frame) > 0 and sum(frame) & 0xFF == CHECKSUM_TOTAL


def with_checksum(body: bytes) -> bytes:
    return bytes(body) + bytes([checksum_byte(body)])


def serial_to_ieee(serial: int | str) -> int:
    number = int(serial)
    if not 0 <= number <= 0xFFFFFFFF:
        raise ValueError(f"Enecsys serial out of range: {serial}")
    return IEEE_PREFIX << 32 | number


def ieee_to_serial(ieee: int) -> int | None:
    """The serial inside an Enecsys IEEE address, or None if the prefix is not Enecsys's."""
    return ieee & 0xFFFFFFFF if ieee >> 32 == IEEE_PREFIX else None


def ieee_from_frame(frame: bytes, offset: int = 2) -> int:
    return int.from_bytes(frame[offset:offset + 8], "little")


def ieee_to_frame(ieee: int | str | bytes) -> bytes:
    """IEEE as it appears in frames (little-endian). Accepts an int, 16 hex digits (colons allowed) or 8 bytes."""
    if isinstance(ieee, (bytes, bytearray)):
        if len(ieee) != 8:
            raise ValueError("an IEEE address is 8 bytes")
        return bytes(ieee)
    if isinstance(ieee, str):
        ieee = int(ieee.replace(":", ""), 16)
    return ieee.to_bytes(8, "little")


def _as_bytes(frame: bytes) -> bytes:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise FrameError(f"an Enecsys frame must be bytes, not {type(frame).__name__}")
    return bytes(frame)


def ieee_text(ieee: int) -> str:
    return f"{ieee:016x}"


def serial_text(ieee: int) -> str:
    """The reading's serial: decimal for an Enecsys IEEE, else the IEEE in hex."""
    serial = ieee_to_serial(ieee)
    return str(serial) if serial is not None else ieee_text(ieee)


# --- classification -------------------------------------------------------------------------

def classify(payload: bytes) -> FrameKind:
    """Tell the Zigbee service what a payload is, without decoding or raising."""
    if len(payload) < 2 or payload[0] != 0x57 or payload[1] not in (0x00, 0x01):
        return FrameKind.FOREIGN
    if payload[1] == 0x00:
        if len(payload) >= HEADER_LENGTH + 1 and len(payload) == HEADER_LENGTH + payload[16] + 1:
            return FrameKind.REPORT
        return FrameKind.MALFORMED
    if len(payload) < 11 or STEP_LENGTHS.get(payload[10]) != len(payload):
        return FrameKind.MALFORMED
    return {
        STEP_REQUEST: FrameKind.HANDSHAKE_REQUEST,
        STEP_REPLY: FrameKind.HANDSHAKE_REPLY,
    }.get(payload[10], FrameKind.HANDSHAKE_FOLLOW_UP)


# --- handshake ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Handshake:
    """One join-handshake frame (type ``57 01``): not a reading."""

    step: str
    """``request``, ``reply``, ``confirm`` or ``ready``."""
    ieee: int
    """The sender's IEEE (the inverter's; the gateway's in a ``reply``)."""
    frame: bytes
    checksum_ok: bool
    detail: bytes
    """The bytes after the step byte, without the checksum (``XX XX XX`` sits in a reply's)."""

    @property
    def serial(self) -> str:
        return serial_text(self.ieee)

    @property
    def ieee_hex(self) -> str:
        return ieee_text(self.ieee)


def decode_handshake(frame: bytes) -> Handshake:
    frame = _as_bytes(frame)
    if classify(frame) not in (FrameKind.HANDSHAKE_REQUEST, FrameKind.HANDSHAKE_REPLY, FrameKind.HANDSHAKE_FOLLOW_UP):
        if frame[:2] != TYPE_HANDSHAKE:
            raise FrameError(f"not an Enecsys handshake frame (type {frame[:2].hex(' ') or 'empty'})")
        step = frame[10] if len(frame) > 10 else None
        if step not in STEP_LENGTHS:
            raise FrameError("Enecsys handshake frame with an unknown step" if step is not None
                             else f"Enecsys handshake frame too short ({len(frame)} bytes)")
        raise FrameError(f"Enecsys handshake {STEP_NAMES[step]} must be {STEP_LENGTHS[step]} bytes, got {len(frame)}")
    return Handshake(
        step=STEP_NAMES[frame[10]],
        ieee=ieee_from_frame(frame),
        frame=frame,
        checksum_ok=checksum_ok(frame),
        detail=frame[11:-1],
    )


def encode_handshake_request(serial: int | str) -> bytes:
    ieee = ieee_to_frame(serial_to_ieee(serial))
    return with_checksum(TYPE_HANDSHAKE + ieee + bytes([STEP_REQUEST]) + ieee + REQUEST_TAIL)


def handshake_reply(gateway_ieee: int | str | bytes, variant: bytes = REPLY_VARIANTS[0]) -> bytes:
    """The reply the gateway must send to a handshake request: ``57 01 <gw> 02 01 32 XX XX XX 02 00 <ck>``."""
    if len(variant) != 3:
        raise ValueError("the reply variant is 3 bytes")
    body = TYPE_HANDSHAKE + ieee_to_frame(gateway_ieee) + bytes([STEP_REPLY, 0x01, 0x32]) + bytes(variant) + b"\x02\x00"
    return with_checksum(body)


def encode_handshake_followups(serial: int | str) -> tuple[bytes, bytes]:
    """The inverter's two frames after the gateway's reply: ``confirm`` (03) then ``ready`` (07)."""
    ieee = ieee_to_frame(serial_to_ieee(serial))
    return (
        with_checksum(TYPE_HANDSHAKE + ieee + bytes([STEP_CONFIRM]) + CONFIRM_TAIL),
        with_checksum(TYPE_HANDSHAKE + ieee + bytes([STEP_READY]) + READY_TAIL),
    )


# --- reports --------------------------------------------------------------------------------

def decode(frame: bytes, *, received_at: float, model: str = "", ws_extra: dict[str, int] | None = None,
           notes: tuple[str, ...] = ()) -> Reading:
    """Decode a ``57 00`` frame (report, alarm, short or info) into a :class:`Reading`.

    ``model`` is the model string learnt earlier from the inverter's info frame, if any.
    """
    frame = _as_bytes(frame)
    if len(frame) < 2:
        raise FrameError(f"Enecsys frame too short ({len(frame)} bytes)")
    if frame[:2] == TYPE_HANDSHAKE:
        raise FrameError("this is a handshake frame, not a report (use decode_handshake)")
    if frame[:2] != TYPE_REPORT:
        raise FrameError(f"not an Enecsys report frame (type {frame[:2].hex(' ') or 'empty'})")
    if len(frame) < HEADER_LENGTH + 1:
        raise FrameError(f"Enecsys report frame too short ({len(frame)} bytes)")
    n = frame[16]
    if len(frame) != HEADER_LENGTH + n + 1:
        raise FrameError(f"Enecsys report frame says {n} payload bytes, so it must be "
                         f"{HEADER_LENGTH + n + 1} bytes; got {len(frame)}")
    marker, channel = frame[10], frame[11]
    if marker != REPORT_MARKER:
        raise FrameError(f"unknown Enecsys report marker 0x{marker:02x} (expected 0x21)")
    if channel not in CHANNELS:
        raise FrameError(f"unknown Enecsys report channel {channel}")
    counter = struct.unpack_from(">I", frame, 12)[0]
    payload = frame[17:17 + n]
    ieee = ieee_from_frame(frame)
    ok = checksum_ok(frame)
    all_notes = list(notes)
    if not ok:
        all_notes.append(f"checksum failed: bytes sum to 0x{sum(frame) & 0xFF:02x}, expected 0xa9 "
                         f"(last byte should be 0x{checksum_byte(frame[:-1]):02x})")
    if ieee_to_serial(ieee) is None:
        all_notes.append(f"IEEE {ieee_text(ieee)} lacks the Enecsys prefix 34c69a00: serial shown as the IEEE")
    fields: dict[str, FieldValue] = {"ieee": ieee_text(ieee), "channel": channel, "counter": counter}
    raw: dict[str, int] = {"channel": channel, "counter": counter, "payload_length": n}
    raw.update(ws_extra or {})
    energy = None
    if n == 1:
        kind = "short"
        fields["format"] = payload[0]
        raw["format"] = payload[0]
    elif channel == 0:
        kind = "info"
        info = _decode_info(payload, ieee_to_serial(ieee), all_notes)
        fields.update(info)
        fields["firmware"] = info_firmware(info)
        model = str(info.get("model_string") or model)
    elif n == REPORT_PAYLOAD_LENGTH:
        kind = CHANNELS[channel]
        values, raw_values = _decode_report_payload(payload, all_notes)
        fields.update(values)
        raw.update(raw_values)
        energy = EnergyCounter("lifetime", float(raw_values["kwh"] * 1000 + raw_values["wh"]))
    else:
        raise FrameError(f"Enecsys {CHANNELS[channel]} frame with a {n}-byte payload "
                         f"(expected {REPORT_PAYLOAD_LENGTH} or 1)")
    return Reading(
        family="enecsys",
        serial=serial_text(ieee),
        model=model,
        kind=kind,
        fields=fields,
        raw=raw,
        frame=frame,
        checksum_ok=ok,
        timestamp=received_at,
        energy=energy,
        notes=tuple(all_notes),
    )


def info_firmware(info: dict[str, FieldValue]) -> str:
    """What the inverter says of itself in its info frame, as its firmware: the model/firmware
    string and the date beside it (``WSI-00003 (25-04-12 06:58)``); "" when it says nothing."""
    text, date = str(info.get("model_string") or ""), str(info.get("date_string") or "")
    return f"{text} ({date})" if text and date else text or date


def state_name(code: int) -> str:
    """The shared ``state`` vocabulary for an Enecsys state byte."""
    return STATE_SHARED.get(code, "fault")


def alarm_names(code: int) -> tuple[str, ...]:
    return tuple(name for bit, name in enumerate(ALARM_BITS) if code >> bit & 1)


def _decode_report_payload(payload: bytes, notes: list[str]) -> tuple[dict[str, FieldValue], dict[str, int]]:
    (fmt, device, state, current, dc_power, efficiency, freq, voltage, temp, wh, kwh, alarm) = struct.unpack(
        ">BHBHHHBHbHHH", payload
    )
    if fmt != REPORT_FORMAT or device != DEVICE_ID:
        notes.append(f"unusual report header: format 0x{fmt:02x}, device id 0x{device:04x}")
    if state & 0x80 and (state & 0x7F) in STATE_TEXT:
        notes.append(f"state 0x{state:02x} has its top bit set: a decoder that masks it would read "
                     f"'{STATE_TEXT[state & 0x7F]}'; shown as a fault")
    dc_current = current * 0.025
    eff = efficiency / 1000
    values: dict[str, FieldValue] = {
        "state": state_name(state),
        "state_code": state,
        "state_text": STATE_TEXT.get(state, f"fault (code {state})"),
        "dc_current_a": round(dc_current, 3),
        "dc_power_w": dc_power,
        "efficiency_ratio": eff,
        "ac_power_w": round(dc_power * eff, 3),
        "dc_voltage_v": round(dc_power / dc_current, 3) if current else None,
        "ac_frequency_hz": freq,
        "ac_voltage_v": voltage,
        "temperature_c": temp,
        "lifetime_wh": kwh * 1000 + wh,
        "alarm_code": alarm,
        "alarms": alarm_names(alarm),
    }
    raw = {
        "format": fmt, "device_id": device, "state_code": state, "dc_current_a": current,
        "dc_power_w": dc_power, "efficiency_ratio": efficiency, "ac_frequency_hz": freq,
        "ac_voltage_v": voltage, "temperature_c": temp, "wh": wh, "kwh": kwh, "alarm_code": alarm,
    }
    return values, raw


_ASCII_RUN = re.compile(rb"[\x20-\x7e]{4,}")
_MODEL = re.compile(r"[A-Z]{2,}[-_ ]?\d{2,}")
_DATE = re.compile(
    r"\b(?:19|20)\d\d[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}[-/.]\d{1,2}[-/.](?:19|20)?\d\d\b"
    r"|\b(?:19|20)\d{6}\b|\b[A-Z][a-z]{2} +\d{1,2}\b"
)


def _decode_info(payload: bytes, serial: int | None, notes: list[str]) -> dict[str, FieldValue]:
    """The info frame's fields. In the captured layout (:func:`encode_info`: the serial big-endian at
    ``[3:7]``) the model and date are read from their places. Any other layout is read tolerantly:
    the serial (u32 in either byte order) and printable ASCII runs; one that looks like a date is the
    date, the first other run is the model/firmware string (``WSI-00003``). (A text search alone
    would take a printable last byte of the serial for the model's first letter.)
    """
    if serial is not None and payload[INFO_SERIAL] == serial.to_bytes(4, "big"):
        return {"model_string": _field_text(payload[INFO_MODEL]), "date_string": _field_text(payload[INFO_DATE]),
                "serial_in_payload": True}
    fields: dict[str, FieldValue] = {}
    runs = [m.group().decode("ascii").strip() for m in _ASCII_RUN.finditer(payload)]
    dates = [run for run in runs if _DATE.search(run)]
    others = [run for run in runs if run not in dates]
    others.sort(key=lambda run: not _MODEL.search(run))  # a model-like run first, else keep the order
    fields["model_string"] = others[0] if others else ""
    fields["date_string"] = dates[0] if dates else ""
    if len(others) > 1:
        fields["other_text"] = tuple(others[1:])
    if serial is not None:
        found = serial.to_bytes(4, "big") in payload or serial.to_bytes(4, "little") in payload
        fields["serial_in_payload"] = found
        if not found:
            notes.append("the info frame does not repeat the serial of its IEEE address")
    if not runs:
        notes.append("no text found in the info frame")
    return fields


def encode_report(
    serial: int | str,
    counter: int,
    state: int,
    dc_current_a: float,
    dc_power_w: float,
    efficiency: float,
    ac_frequency_hz: float,
    ac_voltage_v: float,
    temperature_c: float,
    lifetime_wh: int,
    alarm: int = 0,
    channel: int = 1,
) -> bytes:
    """A report (channel 1) or alarm (channel 2) frame with a correct checksum."""
    lifetime = int(lifetime_wh)
    kwh, wh = divmod(lifetime, 1000)
    try:
        payload = struct.pack(
            ">BHBHHHBHbHHH", REPORT_FORMAT, DEVICE_ID, state, round(dc_current_a / 0.025), round(dc_power_w),
            round(efficiency * 1000), round(ac_frequency_hz), round(ac_voltage_v), round(temperature_c), wh, kwh,
            alarm,
        )
    except struct.error as exc:
        raise ValueError(f"value out of range for an Enecsys report: {exc}") from None
    return _report_frame(serial, channel, counter, payload)


def encode_short(serial: int | str, counter: int, channel: int = 2) -> bytes:
    """A short frame: payload ``30`` only (the public example is on channel 2)."""
    return _report_frame(serial, channel, counter, bytes([REPORT_FORMAT]))


def _field_text(field: bytes) -> str:
    return "".join(ch for ch in field.split(b"\0")[0].decode("ascii", "replace") if ch.isprintable()).strip()


def encode_info(serial: int | str, model_string: str, date_string: str, counter: int) -> bytes:
    """An info frame (channel 0, N = 61) laid out as the one in a real capture (serial 100095471)::

        72 01 03 | serial u32 BE | model, 17 bytes NUL padded | 3c 00 00 00 00 |
        date, 14 bytes NUL padded | ff ff | 16 zero bytes

    ``72 01 03``, ``3c`` (60: the report interval?) and ``ff ff`` are copied as captured, their
    meaning unknown; the captured date reads ``25-04-12 06:58``. :func:`decode` does not depend
    on these positions."""
    model = model_string.encode("ascii")[:17].ljust(17, b"\0")
    date = date_string.encode("ascii")[:14].ljust(14, b"\0")
    payload = INFO_HEAD + int(serial).to_bytes(4, "big") + model + INFO_MIDDLE + date + INFO_TAIL
    return _report_frame(serial, 0, counter, payload.ljust(INFO_PAYLOAD_LENGTH, b"\0"))


def _report_frame(serial: int | str, channel: int, counter: int, payload: bytes) -> bytes:
    if not 0 <= counter <= 0xFFFFFFFF:
        raise ValueError(f"counter out of range: {counter}")
    body = (TYPE_REPORT + ieee_to_frame(serial_to_ieee(serial)) + bytes([REPORT_MARKER, channel])
            + struct.pack(">IB", counter, len(payload)) + payload)
    return with_checksum(body)


# --- WS= lines from a genuine Enecsys gateway -----------------------------------------------

WS_PREFIX = "WS="
_WS_TO_B64 = str.maketrans("-_*", "+/=")
_B64_TO_WS = str.maketrans("+/=", "-_*")
WS_GATEWAY_BYTES = 4


def decode_ws_line(line: str | bytes, *, received_at: float, model: str = "") -> Reading:
    """Decode a gateway ``WS=`` line into the same :class:`Reading` as the Zigbee frame it carries.

    The payload is IEEE (8) + 4 gateway bytes + Zigbee bytes 10.. without the checksum; two hex
    characters of unknown meaning may follow (kept in ``raw["ws_trailer"]``). The reading's
    ``frame`` is the Zigbee frame rebuilt with its checksum: the line has no checksum of its own,
    so ``checksum_ok`` is True.
    """
    if isinstance(line, (bytes, bytearray)):
        line = bytes(line).decode("ascii", errors="replace")
    text = line.strip()
    if not text.upper().startswith(WS_PREFIX):
        raise FrameError("not a WS= line")
    data = text[len(WS_PREFIX):]
    trailer = None
    if len(data) % 4 == 2 and re.fullmatch(r"[0-9A-Fa-f]{2}", data[-2:]):
        data, trailer = data[:-2], int(data[-2:], 16)
    if not data or len(data) % 4 or not re.fullmatch(r"[A-Za-z0-9\-_*+/=]+", data):
        raise FrameError("WS= payload is not the gateway's base64 (length or characters)")
    try:
        decoded = base64.b64decode(data.translate(_WS_TO_B64), validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("WS= payload is not valid base64") from None
    if len(decoded) < 8 + WS_GATEWAY_BYTES + 7:
        raise FrameError(f"WS= payload too short ({len(decoded)} bytes)")
    ieee, gateway, zigbee_tail = decoded[:8], decoded[8:12], decoded[12:]
    frame = with_checksum(TYPE_REPORT + ieee + zigbee_tail)
    extra = {"ws_gateway": int.from_bytes(gateway, "big")}
    if trailer is not None:
        extra["ws_trailer"] = trailer
    return decode(frame, received_at=received_at, model=model, ws_extra=extra,
                  notes=("decoded from a WS= gateway upload line",))


def encode_ws_line(frame: bytes, gateway: bytes = bytes(WS_GATEWAY_BYTES), trailer: int | None = 0) -> str:
    """The ``WS=`` line a genuine gateway would send for a Zigbee report ``frame`` (no CR)."""
    frame = bytes(frame)
    if frame[:2] != TYPE_REPORT or len(frame) < HEADER_LENGTH + 1:
        raise ValueError("only report frames travel in WS= lines")
    if len(gateway) != WS_GATEWAY_BYTES:
        raise ValueError("the gateway part is 4 bytes")
    packed = base64.b64encode(frame[2:10] + bytes(gateway) + frame[10:-1]).decode("ascii").translate(_B64_TO_WS)
    return WS_PREFIX + packed + (f"{trailer:02X}" if trailer is not None else "")
