"""How a history row's fields are kept on the card: JSON, deflated against a preset dictionary.

A reading's fields are ~320-370 bytes of JSON, mostly the same keys every time. Plain
deflate cannot find repeats inside one small object (~210 bytes); with a preset dictionary
of the usual keys and values it gets ~80-100 bytes, which is most of what a history row
costs on the card (``python -m bench sdwear`` prints the average). Rows written by earlier
versions hold plain JSON text and still read.

The dictionary is part of the format: rows start with their format byte, and a new
dictionary needs a new format byte (never change ``_DICTIONARY_1``).
"""
from __future__ import annotations

import json
import zlib
from typing import Any

FORMAT_1 = 1
_DICTIONARY_1 = (
    '"ieee":"","channel":1,"counter":,"state_code":0,"state_text":"normal","dc_current_a":,"dc_power_w":,'
    '"efficiency_ratio":0.9,"dc_voltage_v":3,"lifetime_wh":1,"alarm_code":0,"alarms":[]}'
    '{"gateway":"ffffffffffffffff","sync":"c3c3c3c3","status_code":0,"status":"ok","flags":4128,'
    '"dc_current_1_a":0.0,"dc_current_2_a":,"modules_reporting":,"module_1_power_w":,"mode_code":33798,'
    '"mode":"generating","unknown_41":,"scale":"bdm400","scale":"bdm800",'
    '"state":"producing","ac_power_w":2,"ac_voltage_v":23,"ac_frequency_hz":49.9,"ac_frequency_hz":50.0,'
    '"temperature_c":3,"energy_today_wh":1'
).encode()


def pack(fields_json: str) -> bytes:
    """The card form of a reading's fields (``fields_json``: compact JSON text)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY_1)
    return bytes([FORMAT_1]) + deflate.compress(fields_json.encode()) + deflate.flush()


def unpack(stored: str | bytes) -> dict[str, Any]:
    """The fields of a history row, whichever version wrote it."""
    if isinstance(stored, str):
        return json.loads(stored)
    if stored[:1] != bytes([FORMAT_1]):
        raise ValueError(f"unknown history row format {stored[:1].hex()}")
    inflate = zlib.decompressobj(-15, _DICTIONARY_1)
    return json.loads(inflate.decompress(stored[1:]) + inflate.flush())
