"""The one reading model that both inverter families decode into.

A ``Reading`` is what a decoder makes of one frame. Field names carry their unit
(``ac_power_w``, ``energy_today_wh``, ``temperature_c``; the common ones are listed in
:mod:`appliance.fields`); ``raw`` keeps the integer
behind each scaled field under the same name, so a disputed scale can always be
checked against the wire. A frame that fails its checksum still decodes (so
``solargw decode`` can show it) but has ``checksum_ok=False``, and the store
refuses it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Union

Family = Literal["nep", "enecsys"]
FAMILIES: tuple[Family, ...] = ("nep", "enecsys")

FieldValue = Union[int, float, str, bool, None, tuple[str, ...]]


class FrameError(ValueError):
    """A frame that cannot be decoded at all (wrong length, framing, type).

    Every decoder raises this (or a subclass) and nothing else for bad input.
    """


@dataclass(frozen=True)
class EnergyCounter:
    """The inverter's own energy counter, as the ledger needs it.

    ``kind`` is ``"daily"`` for a counter that restarts every morning (NEP) and
    ``"lifetime"`` for one that only grows (Enecsys kWh + Wh).
    """

    kind: Literal["daily", "lifetime"]
    wh: float


@dataclass(frozen=True)
class Reading:
    family: Family
    serial: str
    model: str
    """Model (NEP: the scale used, e.g. ``bdm800``; Enecsys: from the info frame or ``""``)."""
    kind: str
    """``report``, ``info``, ``alarm`` or ``short``."""
    fields: Mapping[str, FieldValue]
    raw: Mapping[str, int]
    frame: bytes
    checksum_ok: bool
    timestamp: float
    """Unix time the frame was received (decoders take it as an argument: no clock in pure code)."""
    model_guessed: bool = False
    """True when the model scale was guessed (NEP ``auto``)."""
    energy: EnergyCounter | None = None
    notes: tuple[str, ...] = field(default=())
    """Human remarks from the decoder (a guessed model, a disputed field...)."""


STATES: tuple[str, ...] = ("producing", "standby", "low_light", "sleeping", "fault", "unknown")
"""The ``state`` field's vocabulary, the same for both families (a Home Assistant enum)."""
