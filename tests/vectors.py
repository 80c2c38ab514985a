"""Public protocol test vectors, copied as data so the tests run from a clean clone.

Sources: the project's protocol notes (NEP section 1, Enecsys section 2) and the
captured Enecsys handshake pairs of the Enecsys-Zigbee-HA write-up.
"""
from __future__ import annotations

from pathlib import Path

CAPTURE_JOIN = Path(__file__).parent / "fixtures" / "enecsys-join-100095471.json"
"""A real over-the-air join of inverter 100095471 to a genuine gateway (decrypted APS payloads,
with timing): see its ``_about``."""

# --- NEP ------------------------------------------------------------------------------------

NEP_BDM400 = {
    "hex": "7926004014ffffffffffffffff1c00c3c3c3c3785634120000755752172010002bfe31cf145c1a0684bb2e395f",
    "serial": "12345678",
    "scale": "bdm400",
    "status_code": 0,
    "ac_power_raw": 22389,
    "ac_power_w": 223.89,
    "ac_voltage_v": 233.20,
    "dc_current_1_a": 0.0,
    "dc_current_2_a": 4.3,
    "ac_frequency_hz": 49.9922,
    "temperature_c": 53.27,
    "energy_today_raw": 6748,
    "energy_today_wh": 1349.6,
    "mode_code": 0x8406,
}

NEP_BDM800 = {
    "hex": "792600401400000f0f0f0f00001c00c3c3c3c3efbeadde0000bd56cb172010262ab0317013ab12058c05e02270",
    "serial": "deadbeef",
    "scale": "bdm800",
    "status_code": 0,
    "ac_power_raw": 22205,
    "ac_power_w": 282.72,
    "ac_voltage_v": 237.93,
    "dc_current_1_a": 3.8,
    "dc_current_2_a": 4.2,
    "ac_frequency_hz": 49.6875,
    "temperature_c": 49.76,
    "energy_today_raw": 4779,
    "energy_today_wh": 1103.0,
    "mode_code": 0x8C05,
    "mode": "generating",
}

NEP_BDM1200_T = {
    "hex": "793e004014ffffffffffffffff3400c3c3c3c3e03a51860000431a3f00700800010e3c600e120005eb3f0000"
    "0000007f00000000002018431a120000000000000061d5256b",
    "serial": "86513ae0",
    "ac_frequency_hz": 60.0547,
    "temperature_raw": 3680,
    "modules_reporting": 1,
}

NEP_SEED_EXAMPLE_TEMPLATE = (
    "7926004014""00000f0f0f0f0000""1c00""c3c3c3c3""{serial}""0000""5a{power}9d16800f05"
    "02a631d00a110305""8a6317c034"
)
"""The seed server's example packet: serial and power byte filled in by hand, no valid checksum."""

# --- Enecsys --------------------------------------------------------------------------------

ENECSYS_REPORT_1 = {
    "hex": "5700ef55f705009ac63421010000000214300388000034002c034e3100f32002030543000049",
    "serial": "100095471",
    "ieee": "34c69a0005f755ef",
    "channel": 1,
    "counter": 2,
    "state_code": 0,
    "dc_current_a": 1.3,
    "dc_power_w": 44,
    "efficiency_ratio": 0.846,
    "ac_frequency_hz": 49,
    "ac_voltage_v": 243,
    "temperature_c": 32,
    "wh": 515,
    "kwh": 1347,
    "lifetime_wh": 1347515,
    "alarm_code": 0,
    "ac_power_w": 37.2,
    "dc_voltage_v": 33.8,
}

ENECSYS_REPORT_2 = {
    "hex": "5700ce9ef605009ac63421010000000414300388000029002303553100fd1f0167071b0000e7",
    "serial": "100048590",
    "state_code": 0,
    "dc_current_a": 1.025,
    "dc_power_w": 35,
    "efficiency_ratio": 0.853,
    "ac_frequency_hz": 49,
    "ac_voltage_v": 253,
    "temperature_c": 31,
    "wh": 359,
    "kwh": 1819,
}

ENECSYS_SHORT = "5700ef55f705009ac634210200000002013028"
ENECSYS_FOLLOW_UPS = ("5701ef55f705009ac63403010a0000006f", "5701ef55f705009ac6340778fe")

ENECSYS_GATEWAY_IEEE = "34c69a007a30b495"
ENECSYS_HANDSHAKES = [
    # (serial, mac, inverter request, captured gateway reply)
    ("100095471", "34c69a0005f755ef",
     "5701ef55f705009ac63405ef55f705009ac63402010a00000097", "570195b4307a009ac634020132000000020093"),
    ("100012445", "34c69a0005f6119d",
     "57019d11f605009ac634059d11f605009ac63402010a000000c5", "570195b4307a009ac634020132414a00020008"),
    ("100048236", "34c69a0005f69d6c",
     "57016c9df605009ac634056c9df605009ac63402010a0000000f", "570195b4307a009ac634020132000000020093"),
    ("100048590", "34c69a0005f69ece",
     "5701ce9ef605009ac63405ce9ef605009ac63402010a00000049", "570195b4307a009ac634020132006f00020024"),
]

ENECSYS_PHP_EXAMPLE = {
    # the seed's PHP example: fails the checksum rule; values as its unpack() printed them
    "hex": "57002991f605009ac6342101000000be1430038800003b0031033e3100f42303a905430000e6",
    "serial": "100045097",
    "state_code": 0,
    "dc_current_raw": 59,
    "dc_power_w": 49,
    "efficiency_raw": 830,
    "ac_frequency_hz": 49,
    "ac_voltage_v": 244,
    "temperature_c": 35,
    "wh": 937,
    "kwh": 1347,
}

ENECSYS_WS_LINE = {
    "line": "WS=62_2BQCaxjQAALBeIQEAAAGGFDADiAAAEAAOA2sxAOkWAXIEVAAADC",
    "serial": "100036587",
    "state_code": 0,
    "dc_current_a": 0.4,
    "dc_power_w": 14,
    "efficiency_ratio": 0.875,
    "ac_frequency_hz": 49,
    "ac_voltage_v": 233,
    "temperature_c": 22,
    "wh": 370,
    "kwh": 1108,
}

ENECSYS_GATEWAY_LINES = [
    # lines a genuine Enecsys gateway sent (replayed by a public test script against gw.enecsys.net:5040)
    "167735A88A00IQAAAABfAlIB0E",
    "4A7735A88A01180743WZ=i6g1dwCaxjQAACsoIQEAAAAuClOLqDV3AJrGNEg=52,S=2000005259C2",
    "167735A88A00IQAAAABgAlIB6C",
    "167735A88A00IQAAAABhAlIB5C",
    "4A7735A88A01180940WZ=i6g1dwCaxjQAACwYIQEAAAAvClOLqDV3AJrGNEg=3C,S=2000005259C1",
    "167735A88A00IQAAAABiAlIB3E",
    "4A7735A88A01181141WZ=i6g1dwCaxjQAAC0IIQEAAAAwClOLqDV3AJrGNEg=8D,S=200000525936",
]
ENECSYS_GATEWAY_KEEPALIVE = "0E0000000000cgAD83"
"""The server's answer (e2pv sends it, followed by CR)."""
