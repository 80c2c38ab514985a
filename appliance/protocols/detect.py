"""Tell the two families apart and decode whatever a user pastes.

The first byte settles it: NEP bodies start with 0x79, Enecsys frames with 0x57;
text starting ``WS=`` is an Enecsys gateway upload line.
"""
from __future__ import annotations

import re

from appliance.protocols import enecsys, nep
from appliance.reading import Family, FrameError, Reading

_SEPARATORS = re.compile(r"[\s:\-]+")


def parse_frame_text(text: str) -> bytes | str:
    """Hex (spaces, colons, dashes and a ``0x`` prefix allowed) -> bytes; a ``WS=`` line is returned as is."""
    stripped = text.strip()
    if stripped[:3].upper() == enecsys.WS_PREFIX:
        return stripped
    digits = _SEPARATORS.sub("", stripped)
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if not digits:
        raise FrameError("empty frame")
    bad = re.search(r"[^0-9A-Fa-f]", digits)
    if bad:
        raise FrameError(f"not hex: unexpected character {bad.group()!r} (a frame is hex or a WS= line)")
    if len(digits) % 2:
        raise FrameError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def detect_family(frame: bytes | str) -> Family:
    if isinstance(frame, str):
        if frame.strip()[:3].upper() == enecsys.WS_PREFIX:
            return "enecsys"
        raise FrameError("text that is not a WS= line")
    if not frame:
        raise FrameError("empty frame")
    if frame[0] == nep.START:
        return "nep"
    if frame[0] == 0x57:
        return "enecsys"
    raise FrameError(f"unknown frame type: first byte 0x{frame[0]:02x} (NEP starts 0x79, Enecsys 0x57)")


def decode_any(frame_or_line: bytes | str, *, model: str = "auto", received_at: float) -> Reading | enecsys.Handshake:
    """Decode a NEP body, an Enecsys frame (report or handshake) or a ``WS=`` line.

    ``model`` is the NEP model setting (ignored for Enecsys). Raises only :class:`FrameError`
    for bad input (and ``ValueError`` for an unknown model name, a caller's mistake).
    """
    family = detect_family(frame_or_line)
    if isinstance(frame_or_line, str):
        return enecsys.decode_ws_line(frame_or_line, received_at=received_at)
    if family == "nep":
        return nep.decode(frame_or_line, model=model, received_at=received_at)
    if frame_or_line[:2] == enecsys.TYPE_HANDSHAKE:
        return enecsys.decode_handshake(frame_or_line)
    return enecsys.decode(frame_or_line, received_at=received_at)


def decode_text(text: str, *, model: str = "auto", received_at: float) -> Reading | enecsys.Handshake:
    """:func:`parse_frame_text` then :func:`decode_any`."""
    return decode_any(parse_frame_text(text), model=model, received_at=received_at)
