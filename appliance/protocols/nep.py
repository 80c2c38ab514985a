"""NEP micro-inverter bodies: the 45-byte ``/i.php`` and the 69-byte ``/t.php`` POST.

Both sizes share the framing (integers little-endian)::

    0      0x79
    1-2    u16 length of bytes 5 .. n-3 (38 or 62)
    3-4    0x40 0x14 (command)
    5-12   gateway / module id, a model hint: ff*8 (BDM-400, BDM-1200-LV),
           00 00 0f 0f 0f 0f 00 00 (BDM-800, BDM-2250)
    13-14  u16 data length (28 or 52)
    15-18  sync c3 c3 c3 c3 (ff ff ff ff after a reset: not required)
    19-22  u32 serial, shown as ``%08x``
    n-2    checksum 1: sum of bytes 1 .. n-3, mod 256
    n-1    checksum 2: xor of bytes 1 .. n-3

Framing problems raise :class:`~appliance.reading.FrameError`; a checksum failure
still decodes, with ``checksum_ok=False``.

Scales. Only two calibrated scale sets exist for 45-byte packets, ``bdm400``
(power raw/100 W, energy raw*0.2 Wh) and ``bdm800`` (power raw/(25*pi) W, energy
raw*0.2308 Wh). The other model names borrow one of them, which is an assumption
the reading's notes repeat: ``bdm300`` (single input, like the BDM-400) uses the
``bdm400`` set; ``bdm600`` (dual input, the BDM-800's smaller sibling) uses the
``bdm800`` set. ``bdm1200``, ``bdm2000`` and ``bdm2250`` normally post ``/t.php``;
a 45-byte packet from one of them is scaled as ``auto`` would (gateway-field
hint) and marked as guessed. ``/t.php`` scales do not depend on the model.

Disputed readings (see protocols.md). 45-byte bytes 27-28 are decoded as AC
voltage raw/25.6 (matches the grid on the BDM-400; on the BDM-800 it may be a bus
voltage; another decoder reads DC volts raw/200). ``/t.php`` grid voltage is
decoded as raw/17.32 (alternative raw/16 - 22), temperature as raw/100
(alternative raw/48 - 53), module X as power raw/25.6 W. Each reading carries a
note with the raw value and the alternatives, and ``raw`` keeps every integer.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from collections.abc import Sequence

from appliance.reading import EnergyCounter, FieldValue, FrameError, Reading

I_LENGTH = 45
T_LENGTH = 69
START = 0x79
COMMAND = b"\x40\x14"
SYNC = b"\xc3\xc3\xc3\xc3"
GATEWAY_FF = b"\xff" * 8
GATEWAY_0F = b"\x00\x00\x0f\x0f\x0f\x0f\x00\x00"

MODELS: tuple[str, ...] = ("auto", "bdm300", "bdm400", "bdm600", "bdm800", "bdm1200", "bdm2000", "bdm2250")
"""Model names a user can choose per inverter (``auto`` guesses from the gateway field)."""
MODEL_NAMES: dict[str, str] = {
    "bdm300": "BDM-300", "bdm400": "BDM-400", "bdm600": "BDM-600", "bdm800": "BDM-800",
    "bdm1200": "BDM-1200-LV", "bdm2000": "BDM-2000", "bdm2250": "BDM-2250",
}
"""The vendor's names for the models (as on the inverters' labels and NEP's data sheets)."""


def model_name(model: str) -> str:
    """``bdm400`` -> ``BDM-400``; a name not in :data:`MODEL_NAMES` is returned as it is."""
    return MODEL_NAMES.get(model, model)


@dataclass(frozen=True)
class Scale:
    """One calibrated 45-byte scale set."""

    name: str
    power_divisor: float
    energy_wh_per_count: float
    mode_high: int
    gateway: bytes


SCALES: dict[str, Scale] = {
    "bdm400": Scale("bdm400", 100.0, 0.2, 0x84, GATEWAY_FF),
    "bdm800": Scale("bdm800", 25 * math.pi, 0.2308, 0x8C, GATEWAY_0F),
}
MODEL_SCALE: dict[str, str | None] = {
    "bdm300": "bdm400",
    "bdm400": "bdm400",
    "bdm600": "bdm800",
    "bdm800": "bdm800",
    "bdm1200": None,
    "bdm2000": None,
    "bdm2250": None,
}
"""Which 45-byte scale set a model uses (None: no 45-byte scale known; guess from the hint)."""

VOLTAGE_DIVISOR = 25.6
CURRENT_DIVISOR = 10.0
FREQUENCY_DIVISOR = 256.0
TEMPERATURE_DIVISOR = 100.0

# /t.php scales (model independent)
T_DC_VOLTAGE_DIVISOR = 256.0
T_GRID_VOLTAGE_DIVISOR = 17.32
T_MODULE_POWER_DIVISOR = 25.6
T_ENERGY_WH_PER_COUNT = 1.0
"""Unit of the ``/t.php`` energy counts: not documented anywhere; one count is taken as 1 Wh."""

STATUS_BITS: dict[int, str] = {0x0020: "grid loss / islanding", 0x0004: "anti-islanding reconnect timer"}
ALERT_BITS: dict[int, str] = {0x0040: "AC voltage over", 0x0020: "frequency under"}
MODE_TEXT: dict[str, dict[int, tuple[str, str]]] = {
    # low byte -> (text, shared state); byte 0x05 differs by model family
    "bdm400": {0x01: ("deep sleep", "sleeping"), 0x04: ("standby", "standby"),
               0x05: ("standby", "standby"), 0x06: ("generating", "producing")},
    "bdm800": {0x01: ("deep sleep", "sleeping"), 0x04: ("standby", "standby"),
               0x05: ("generating", "producing"), 0x06: ("generating", "producing")},
}
MODE_HIGH_FAMILY = {0x84: "bdm400", 0x8C: "bdm800"}
GENERATING_LOW = {"bdm400": 0x06, "bdm800": 0x05}


# --- framing --------------------------------------------------------------------------------

def checksums(body: bytes) -> tuple[int, int]:
    """(sum, xor) of bytes 1 .. n-3: what the last two bytes must be."""
    covered = body[1:-2]
    xor = 0
    for byte in covered:
        xor ^= byte
    return sum(covered) & 0xFF, xor


def _check_framing(body: bytes) -> None:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise FrameError("NEP body must be bytes")
    n = len(body)
    if n not in (I_LENGTH, T_LENGTH):
        raise FrameError(f"NEP body must be {I_LENGTH} or {T_LENGTH} bytes, got {n}")
    if body[0] != START:
        raise FrameError(f"NEP body must start with 0x79, got 0x{body[0]:02x}")
    length = body[1] | body[2] << 8
    if length != n - 7:
        raise FrameError(f"NEP length field says {length}, a {n}-byte body needs {n - 7}")
    if bytes(body[3:5]) != COMMAND:
        raise FrameError(f"NEP command must be 40 14, got {bytes(body[3:5]).hex(' ')}")


def peek_serial(body: bytes) -> str | None:
    """The serial (``%08x``) of a well-framed body, else None. Cheap: no field decoding."""
    try:
        _check_framing(body)
    except FrameError:
        return None
    return f"{struct.unpack_from('<I', body, 19)[0]:08x}"


def guess_scale(body: bytes) -> tuple[str, str]:
    """Scale set for a 45-byte body from its hints, and the note that says how it was guessed."""
    gateway = bytes(body[5:13])
    if gateway == GATEWAY_FF:
        return "bdm400", "model guessed from the gateway field (ff x8): bdm400 scale"
    if gateway == GATEWAY_0F:
        return "bdm800", "model guessed from the gateway field (00 00 0f 0f 0f 0f 00 00): bdm800 scale"
    family = MODE_HIGH_FAMILY.get(body[40])
    if family:
        return family, f"model guessed from the mode byte 0x{body[40]:02x}: {family} scale"
    return "bdm400", "no model hint in the packet: bdm400 scale assumed"


# --- decoding -------------------------------------------------------------------------------

def _bit_names(code: int, names: dict[int, str]) -> tuple[str, ...]:
    found = tuple(name for bit, name in names.items() if code & bit)
    unknown = code & ~sum(names)
    return found + ((f"unknown 0x{unknown:04x}",) if unknown else ())


def _resolve_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown NEP model {model!r}; choose one of {', '.join(MODELS)}")


def decode(body: bytes, *, model: str = "auto", received_at: float) -> Reading:
    """Decode a 45- or 69-byte body into a :class:`Reading` (family ``nep``, kind ``report``)."""
    _resolve_model(model)
    _check_framing(body)
    body = bytes(body)
    if len(body) == I_LENGTH:
        return _decode_i(body, model, received_at)
    return _decode_t(body, model, received_at)


def _common(body: bytes) -> tuple[dict[str, FieldValue], dict[str, int], list[str], bool]:
    ck_sum, ck_xor = checksums(body)
    ok_sum, ok_xor = body[-2] == ck_sum, body[-1] == ck_xor
    notes: list[str] = []
    if not (ok_sum and ok_xor):
        notes.append(
            f"checksum failed: sum 0x{body[-2]:02x} (expected 0x{ck_sum:02x}), "
            f"xor 0x{body[-1]:02x} (expected 0x{ck_xor:02x})"
        )
    sync = body[15:19]
    if sync not in (SYNC, b"\xff" * 4):
        notes.append(f"unusual sync bytes {sync.hex(' ')}")
    fields: dict[str, FieldValue] = {
        "gateway": body[5:13].hex(),
        "sync": sync.hex(),
    }
    raw = {
        "length": body[1] | body[2] << 8,
        "data_length": body[13] | body[14] << 8,
        "serial": struct.unpack_from("<I", body, 19)[0],
        "checksum_sum": body[-2],
        "checksum_xor": body[-1],
    }
    return fields, raw, notes, ok_sum and ok_xor


def _decode_i(body: bytes, model: str, received_at: float) -> Reading:
    fields, raw, notes, ok = _common(body)
    (status, power, voltage, flags, cur1, cur2, freq, temp, energy, mode, unknown) = struct.unpack_from(
        "<HHHHBBHhHHh", body, 23
    )
    if raw["data_length"] != 28:
        notes.append(f"data length field is {raw['data_length']}, expected 28")
    scale_name = MODEL_SCALE.get(model) if model != "auto" else None
    guessed = scale_name is None
    if guessed:
        scale_name, why = guess_scale(body)
        if model != "auto":
            why = f"no 45-byte scale is known for {model}; {why}"
        notes.append(why)
        shown_model = model if model != "auto" else scale_name
    else:
        shown_model = model
        if scale_name != model:
            notes.append(f"{model} uses the {scale_name} scale (assumed: not calibrated for {model})")
    scale = SCALES[scale_name]

    mode_family = MODE_HIGH_FAMILY.get(mode >> 8, scale_name)
    mode_text, mode_state = MODE_TEXT[mode_family].get(mode & 0xFF, (f"unknown 0x{mode & 0xFF:02x}", "unknown"))
    status_names = _bit_names(status, STATUS_BITS)
    if status & 0x0020 or (status and not status & 0x0004):
        state = "fault"
    elif status & 0x0004:
        state = "standby"
    else:
        state = mode_state

    ac_voltage = voltage / VOLTAGE_DIVISOR
    energy_wh = round(energy * scale.energy_wh_per_count, 4)
    notes.append(
        f"voltage is disputed: raw {voltage} read as {ac_voltage:.2f} V AC (raw/25.6, chosen); "
        f"as DC voltage raw/200 it would be {voltage / 200:.2f} V; on a BDM-800 it may be a bus voltage"
    )
    fields.update(
        status_code=status,
        status=", ".join(status_names) if status_names else "ok",
        state=state,
        ac_power_w=round(power / scale.power_divisor, 2),
        ac_voltage_v=round(ac_voltage, 2),
        flags=flags,
        dc_current_1_a=cur1 / CURRENT_DIVISOR,
        dc_current_2_a=cur2 / CURRENT_DIVISOR,
        dc_current_a=(cur1 + cur2) / CURRENT_DIVISOR,
        ac_frequency_hz=freq / FREQUENCY_DIVISOR,
        temperature_c=temp / TEMPERATURE_DIVISOR,
        energy_today_wh=energy_wh,
        mode_code=mode,
        mode=mode_text,
        unknown_41=unknown,
        scale=scale_name,
    )
    raw.update(
        status_code=status, ac_power_w=power, ac_voltage_v=voltage, flags=flags,
        dc_current_1_a=cur1, dc_current_2_a=cur2, ac_frequency_hz=freq, temperature_c=temp,
        energy_today_wh=energy, mode_code=mode, unknown_41=unknown,
    )
    return _report(body, fields, raw, notes, ok, received_at, shown_model, guessed, energy_wh)


def _report(body: bytes, fields: dict, raw: dict, notes: list[str], ok: bool, received_at: float,
            model: str, guessed: bool, energy_wh: float) -> Reading:
    """The Reading both packet sizes decode into."""
    return Reading(
        family="nep",
        serial=f"{raw['serial']:08x}",
        model=model,
        kind="report",
        fields=fields,
        raw=raw,
        frame=body,
        checksum_ok=ok,
        timestamp=received_at,
        model_guessed=guessed,
        energy=EnergyCounter("daily", energy_wh),
        notes=tuple(notes),
    )


def _decode_t(body: bytes, model: str, received_at: float) -> Reading:
    fields, raw, notes, ok = _common(body)
    alert, word_25, dc_v, grid_v, word_31, freq, temp, energy, spec = struct.unpack_from("<HHHHHHhHH", body, 23)
    if raw["data_length"] != 52:
        notes.append(f"data length field is {raw['data_length']}, expected 52")
    guessed = model == "auto"
    if guessed:
        gateway = body[5:13]
        shown_model = {GATEWAY_FF: "bdm1200", GATEWAY_0F: "bdm2250"}.get(gateway, "")
        notes.append(
            f"model guessed from the gateway field: {shown_model}" if shown_model
            else "model unknown (no gateway-field hint); /t.php scales do not depend on it"
        )
    else:
        shown_model = model

    alert_names = _bit_names(alert, ALERT_BITS)
    if alert:
        notes.append(f"alert code 0x{alert:04x} read little-endian; one decoder reads it big-endian "
                     f"(0x{((alert & 0xFF) << 8) | alert >> 8:04x})")
    grid = grid_v / T_GRID_VOLTAGE_DIVISOR
    temperature = temp / TEMPERATURE_DIVISOR
    notes.append(
        f"grid voltage is disputed: raw {grid_v} read as {grid:.2f} V (raw/17.32, chosen); "
        f"raw/16 - 22 gives {grid_v / 16 - 22:.2f} V"
    )
    notes.append(
        f"temperature is disputed: raw {temp} read as {temperature:.2f} °C (raw/100, chosen); "
        f"raw/48 - 53 gives {temp / 48 - 53:.2f} °C"
    )
    notes.append("module X read as power raw/25.6 W (disputed; it fits the cloud's power best)")
    notes.append("energy counts: unit not documented, 1 count taken as 1 Wh")
    nominal_v, nominal_code = spec >> 8, spec & 0xFF
    energy_wh = energy * T_ENERGY_WH_PER_COUNT
    fields.update(
        alert_code=alert,
        status=", ".join(alert_names) if alert_names else "ok",
        dc_voltage_v=round(dc_v / T_DC_VOLTAGE_DIVISOR, 4),
        ac_voltage_v=round(grid, 2),
        ac_frequency_hz=freq / FREQUENCY_DIVISOR,
        temperature_c=temperature,
        energy_today_wh=energy_wh,
        nominal_voltage_v=nominal_v,
        nominal_frequency_hz={0x05: 50, 0x06: 60}.get(nominal_code),
        word_25=word_25,
        word_31=word_31,
    )
    raw.update(alert_code=alert, word_25=word_25, dc_voltage_v=dc_v, ac_voltage_v=grid_v, word_31=word_31,
               ac_frequency_hz=freq, temperature_c=temp, energy_today_wh=energy, grid_spec=spec)
    total_power = 0.0
    reporting = 0
    for index in range(4):
        m_v, m_x, m_e = struct.unpack_from("<HHH", body, 41 + 6 * index)
        n = index + 1
        power = m_x / T_MODULE_POWER_DIVISOR
        total_power += power
        reporting += bool(m_x or m_e)
        fields[f"module_{n}_voltage_v"] = round(m_v / T_DC_VOLTAGE_DIVISOR, 4)
        fields[f"module_{n}_power_w"] = round(power, 2)
        fields[f"module_{n}_energy_wh"] = m_e * T_ENERGY_WH_PER_COUNT
        raw.update({f"module_{n}_voltage_v": m_v, f"module_{n}_power_w": m_x, f"module_{n}_energy_wh": m_e})
    raw["word_65"] = struct.unpack_from("<H", body, 65)[0]
    fields["word_65"] = raw["word_65"]
    fields["modules_reporting"] = reporting
    fields["ac_power_w"] = round(total_power, 2)
    if alert:
        state = "fault"
    elif total_power > 0:
        state = "producing"
    else:
        state = "standby"
    fields["state"] = state
    return _report(body, fields, raw, notes, ok, received_at, shown_model, guessed, energy_wh)


# --- encoding -------------------------------------------------------------------------------

def _u(value: float, bits: int, name: str, signed: bool = False) -> int:
    number = round(value)
    low, high = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= number <= high:
        raise ValueError(f"{name} out of range for the packet: {value}")
    return number


def _serial_int(serial: str | int) -> int:
    number = int(serial, 16) if isinstance(serial, str) else serial
    return _u(number, 32, "serial")


def _frame(gateway: bytes, data_length: int, sync: bytes, serial: str | int, data: bytes) -> bytes:
    inner = COMMAND + gateway + struct.pack("<H", data_length) + sync + struct.pack("<I", _serial_int(serial)) + data
    head = bytes([START]) + struct.pack("<H", len(inner) - len(COMMAND))
    body = head + inner
    ck_sum, ck_xor = checksums(body + b"\0\0")
    return body + bytes([ck_sum, ck_xor])


def encode_i(
    *,
    serial: str | int,
    model: str = "bdm400",
    ac_power_w: float = 0.0,
    ac_voltage_v: float = 230.0,
    dc_current_1_a: float = 0.0,
    dc_current_2_a: float = 0.0,
    ac_frequency_hz: float = 50.0,
    temperature_c: float = 25.0,
    energy_today_wh: float = 0.0,
    status: int = 0,
    mode_low: int | None = None,
    flags: int = 0x1020,
    unknown_41: int = 0,
    sync: bytes = SYNC,
    gateway: bytes | None = None,
) -> bytes:
    """Build a valid 45-byte ``/i.php`` body from physical values, scaled for ``model``.

    ``mode_low`` defaults to the model's "generating" code; ``gateway`` to the model's own hint.
    """
    _resolve_model(model)
    scale = SCALES[MODEL_SCALE.get(model) or ("bdm400" if model in ("auto", "bdm1200") else "bdm800")]
    if mode_low is None:
        mode_low = GENERATING_LOW[scale.name]
    data = struct.pack(
        "<HHHHBBHhHHh",
        _u(status, 16, "status"),
        _u(ac_power_w * scale.power_divisor, 16, "ac_power_w"),
        _u(ac_voltage_v * VOLTAGE_DIVISOR, 16, "ac_voltage_v"),
        _u(flags, 16, "flags"),
        _u(dc_current_1_a * CURRENT_DIVISOR, 8, "dc_current_1_a"),
        _u(dc_current_2_a * CURRENT_DIVISOR, 8, "dc_current_2_a"),
        _u(ac_frequency_hz * FREQUENCY_DIVISOR, 16, "ac_frequency_hz"),
        _u(temperature_c * TEMPERATURE_DIVISOR, 16, "temperature_c", signed=True),
        _u(energy_today_wh / scale.energy_wh_per_count, 16, "energy_today_wh"),
        scale.mode_high << 8 | _u(mode_low, 8, "mode_low"),
        _u(unknown_41, 16, "unknown_41", signed=True),
    )
    return _frame(scale.gateway if gateway is None else gateway, 28, sync, serial, data)


@dataclass(frozen=True)
class Module:
    """One ``/t.php`` module block in physical units."""

    voltage_v: float = 0.0
    power_w: float = 0.0
    energy_wh: float = 0.0


def encode_t(
    *,
    serial: str | int,
    model: str = "bdm2250",
    modules: Sequence[Module] = (),
    dc_voltage_v: float = 0.0,
    ac_voltage_v: float = 230.0,
    ac_frequency_hz: float = 50.0,
    temperature_c: float = 25.0,
    energy_today_wh: float | None = None,
    alert: int = 0,
    nominal_voltage_v: int = 230,
    nominal_frequency_hz: int = 50,
    word_25: int | None = None,
    word_31: int = 0,
    word_65: int = 0,
    sync: bytes = SYNC,
    gateway: bytes | None = None,
) -> bytes:
    """Build a valid 69-byte ``/t.php`` body (up to four modules; energy defaults to their sum).

    ``word_25`` defaults to the sum of the module power words, as in the public BDM-1200-LV vector.
    """
    _resolve_model(model)
    if len(modules) > 4:
        raise ValueError("a /t.php body has four module blocks")
    blocks = list(modules) + [Module()] * (4 - len(modules))
    raws = [
        (
            _u(m.voltage_v * T_DC_VOLTAGE_DIVISOR, 16, "module voltage_v"),
            _u(m.power_w * T_MODULE_POWER_DIVISOR, 16, "module power_w"),
            _u(m.energy_wh / T_ENERGY_WH_PER_COUNT, 16, "module energy_wh"),
        )
        for m in blocks
    ]
    if energy_today_wh is None:
        energy_today_wh = sum(r[2] for r in raws) * T_ENERGY_WH_PER_COUNT
    if word_25 is None:
        word_25 = min(sum(r[1] for r in raws), 0xFFFF)
    spec = _u(nominal_voltage_v, 8, "nominal_voltage_v") << 8 | {50: 0x05, 60: 0x06}[nominal_frequency_hz]
    data = struct.pack(
        "<HHHHHHhHH",
        _u(alert, 16, "alert"),
        _u(word_25, 16, "word_25"),
        _u(dc_voltage_v * T_DC_VOLTAGE_DIVISOR, 16, "dc_voltage_v"),
        _u(ac_voltage_v * T_GRID_VOLTAGE_DIVISOR, 16, "ac_voltage_v"),
        _u(word_31, 16, "word_31"),
        _u(ac_frequency_hz * FREQUENCY_DIVISOR, 16, "ac_frequency_hz"),
        _u(temperature_c * TEMPERATURE_DIVISOR, 16, "temperature_c", signed=True),
        _u(energy_today_wh / T_ENERGY_WH_PER_COUNT, 16, "energy_today_wh"),
        spec,
    )
    data += b"".join(struct.pack("<HHH", *r) for r in raws) + struct.pack("<H", _u(word_65, 16, "word_65"))
    if gateway is None:
        gateway = GATEWAY_FF if model in ("bdm300", "bdm400", "bdm1200") else GATEWAY_0F
    return _frame(gateway, 52, sync, serial, data)


# --- the HTTP request around a body ---------------------------------------------------------

PORTAL_HOST = "www.nepviewer.net"


def build_request(host: str, path: str, body: bytes) -> bytes:
    """An inverter's whole request: ``POST``, ``Host``, ``Connection: close``, ``Content-Length``, body
    (the inverters send exactly these headers)."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body
