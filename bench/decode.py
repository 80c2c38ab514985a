"""Decodes per second for each frame kind: ``.venv/bin/python -m bench.decode [seconds-per-kind]``.

Frames come from the encoders, so the benchmark needs nothing outside the package.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

from appliance.protocols import enecsys, nep
from appliance.protocols.detect import decode_any

SERIAL = 100095471


def cases() -> dict[str, Callable[[], object]]:
    nep_i = nep.encode_i(serial="12345678", model="bdm800", ac_power_w=282.7, ac_voltage_v=237.9,
                         dc_current_1_a=3.8, dc_current_2_a=4.2, ac_frequency_hz=49.69, temperature_c=49.76,
                         energy_today_wh=1103.0)
    nep_t = nep.encode_t(serial="86513ae0", modules=[nep.Module(31.2, 262.6, 18)] * 4, ac_voltage_v=231.0)
    report = enecsys.encode_report(SERIAL, 2, 0, 1.3, 44, 0.846, 49, 243, 32, 1_347_515)
    short = enecsys.encode_short(SERIAL, 2)
    info = enecsys.encode_info(SERIAL, "WSI-00003", "2011-05-17", 1)
    handshake = enecsys.encode_handshake_request(SERIAL)
    ws_line = enecsys.encode_ws_line(report, bytes.fromhex("0000b05e"), 0xDC)
    return {
        "NEP 45-byte /i.php": lambda: nep.decode(nep_i, model="auto", received_at=0.0),
        "NEP 69-byte /t.php": lambda: nep.decode(nep_t, model="auto", received_at=0.0),
        "Enecsys report": lambda: enecsys.decode(report, received_at=0.0),
        "Enecsys short": lambda: enecsys.decode(short, received_at=0.0),
        "Enecsys info": lambda: enecsys.decode(info, received_at=0.0),
        "Enecsys handshake": lambda: enecsys.decode_handshake(handshake),
        "Enecsys WS= line": lambda: enecsys.decode_ws_line(ws_line, received_at=0.0),
        "decode_any (NEP 45)": lambda: decode_any(nep_i, received_at=0.0),
    }


def rate(decode: Callable[[], object], seconds: float) -> float:
    decode()  # warm up
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            decode()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main(argv: list[str]) -> int:
    seconds = float(argv[0]) if argv else 1.0
    print(f"decodes per second ({seconds:g} s per kind, Python {sys.version.split()[0]})")
    for name, decode in cases().items():
        print(f"  {name:<22} {rate(decode, seconds):>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
