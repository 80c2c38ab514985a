"""Enecsys frames: checksum, addresses, handshake, reports, short and info frames, WS= lines."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from appliance.protocols import enecsys
from appliance.protocols.enecsys import FrameKind, Handshake
from appliance.reading import STATES, EnergyCounter, FrameError, Reading
from vectors import (
    CAPTURE_JOIN,
    ENECSYS_FOLLOW_UPS,
    ENECSYS_GATEWAY_IEEE,
    ENECSYS_HANDSHAKES,
    ENECSYS_PHP_EXAMPLE,
    ENECSYS_REPORT_1,
    ENECSYS_REPORT_2,
    ENECSYS_SHORT,
    ENECSYS_WS_LINE,
)

approx = pytest.approx
T0 = 1_700_000_000.0


def decode(hex_or_bytes, **kwargs) -> Reading:
    frame = bytes.fromhex(hex_or_bytes) if isinstance(hex_or_bytes, str) else hex_or_bytes
    return enecsys.decode(frame, received_at=T0, **kwargs)


def assert_report(reading: Reading, v: dict) -> None:
    f, raw = reading.fields, reading.raw
    assert reading.family == "enecsys" and reading.kind == "report" and reading.model == ""
    assert reading.serial == v["serial"]
    assert f["state_code"] == v["state_code"] and f["state"] == "producing" and f["state_text"] == "normal"
    assert f["dc_current_a"] == approx(v["dc_current_a"])
    assert f["dc_power_w"] == v["dc_power_w"]
    assert f["efficiency_ratio"] == approx(v["efficiency_ratio"])
    assert f["ac_frequency_hz"] == v["ac_frequency_hz"]
    assert f["ac_voltage_v"] == v["ac_voltage_v"]
    assert f["temperature_c"] == v["temperature_c"]
    assert raw["wh"] == v["wh"] and raw["kwh"] == v["kwh"]
    lifetime = v["kwh"] * 1000 + v["wh"]
    assert f["lifetime_wh"] == lifetime
    assert reading.energy == EnergyCounter("lifetime", lifetime)
    assert f["ac_power_w"] == approx(v["dc_power_w"] * v["efficiency_ratio"])
    assert f["dc_voltage_v"] == approx(v["dc_power_w"] / v["dc_current_a"], abs=0.005)
    assert f["alarm_code"] == 0 and f["alarms"] == ()
    assert f["state"] in STATES
    assert reading.timestamp == T0


def test_report_vector_1():
    v = ENECSYS_REPORT_1
    reading = decode(v["hex"])
    assert reading.checksum_ok and reading.notes == ()
    assert_report(reading, v)
    f = reading.fields
    assert f["channel"] == v["channel"] and f["counter"] == v["counter"] and f["ieee"] == v["ieee"]
    assert f["lifetime_wh"] == v["lifetime_wh"]
    assert f["ac_power_w"] == approx(v["ac_power_w"], abs=0.05)
    assert f["dc_voltage_v"] == approx(v["dc_voltage_v"], abs=0.05)
    assert reading.raw["dc_current_a"] == 52 and reading.raw["efficiency_ratio"] == 846
    assert reading.frame == bytes.fromhex(v["hex"])


def test_report_vector_2():
    reading = decode(ENECSYS_REPORT_2["hex"])
    assert reading.checksum_ok
    assert_report(reading, ENECSYS_REPORT_2)
    assert reading.fields["lifetime_wh"] == 1_819_359


def test_short_frame():
    reading = decode(ENECSYS_SHORT)
    assert reading.checksum_ok and reading.kind == "short"
    assert reading.serial == "100095471" and reading.energy is None
    assert reading.fields["channel"] == 2 and reading.fields["counter"] == 2 and reading.fields["format"] == 0x30
    assert enecsys.encode_short(100095471, 2) == bytes.fromhex(ENECSYS_SHORT)


def test_php_example_fails_checksum_but_decodes():
    v = ENECSYS_PHP_EXAMPLE
    reading = decode(v["hex"])
    assert reading.checksum_ok is False
    assert any(note.startswith("checksum failed") for note in reading.notes)
    assert reading.serial == v["serial"]
    f, raw = reading.fields, reading.raw
    assert f["state_code"] == v["state_code"]
    assert raw["dc_current_a"] == v["dc_current_raw"] and f["dc_current_a"] == approx(59 * 0.025)
    assert f["dc_power_w"] == v["dc_power_w"]
    assert raw["efficiency_ratio"] == v["efficiency_raw"]
    assert f["ac_frequency_hz"] == v["ac_frequency_hz"] and f["ac_voltage_v"] == v["ac_voltage_v"]
    assert f["temperature_c"] == v["temperature_c"]
    assert raw["wh"] == v["wh"] and raw["kwh"] == v["kwh"]


def test_checksum_rule_holds_for_every_captured_frame():
    frames = [ENECSYS_REPORT_1["hex"], ENECSYS_REPORT_2["hex"], ENECSYS_SHORT, *ENECSYS_FOLLOW_UPS]
    frames += [h for pair in ENECSYS_HANDSHAKES for h in pair[2:]]
    for hex_frame in frames:
        frame = bytes.fromhex(hex_frame)
        assert sum(frame) % 256 == 0xA9
        assert enecsys.checksum_ok(frame)
        assert enecsys.checksum_byte(frame[:-1]) == frame[-1]
    assert not enecsys.checksum_ok(bytes.fromhex(ENECSYS_PHP_EXAMPLE["hex"]))


def test_ieee_and_serial():
    assert enecsys.serial_to_ieee(100095471) == 0x34C69A0005F755EF
    assert enecsys.ieee_to_serial(0x34C69A0005F755EF) == 100095471
    assert enecsys.ieee_to_serial(0x00124B0001020304) is None
    assert enecsys.ieee_to_frame(0x34C69A0005F755EF).hex() == "ef55f705009ac634"
    assert enecsys.ieee_to_frame("34:c6:9a:00:05:f7:55:ef") == bytes.fromhex("ef55f705009ac634")
    for serial, mac, _, _ in ENECSYS_HANDSHAKES:
        assert f"{enecsys.serial_to_ieee(serial):016x}" == mac


def test_foreign_ieee_prefix_is_noted_and_serial_is_the_ieee():
    frame = bytearray.fromhex(ENECSYS_REPORT_1["hex"])
    frame[6:10] = (0x00124B00).to_bytes(4, "little")  # a TI-style IEEE 00:12:4b:00:...
    reading = decode(enecsys.with_checksum(frame[:-1]))
    assert reading.checksum_ok and reading.serial == "00124b0005f755ef"
    assert any("lacks the Enecsys prefix" in note for note in reading.notes)


@pytest.mark.parametrize("serial, mac, request_hex, reply", ENECSYS_HANDSHAKES)
def test_handshake_pairs(serial, mac, request_hex, reply):
    request = request_hex
    req = enecsys.decode_handshake(bytes.fromhex(request))
    assert isinstance(req, Handshake)
    assert req.step == "request" and req.checksum_ok and req.serial == serial and req.ieee_hex == mac
    assert enecsys.classify(bytes.fromhex(request)) is FrameKind.HANDSHAKE_REQUEST
    assert enecsys.encode_handshake_request(int(serial)).hex() == request
    rep = enecsys.decode_handshake(bytes.fromhex(reply))
    assert rep.step == "reply" and rep.checksum_ok and rep.ieee_hex == ENECSYS_GATEWAY_IEEE
    assert enecsys.classify(bytes.fromhex(reply)) is FrameKind.HANDSHAKE_REPLY
    variant = rep.detail[2:5]
    assert variant in enecsys.REPLY_VARIANTS
    assert enecsys.handshake_reply(ENECSYS_GATEWAY_IEEE, variant).hex() == reply
    assert enecsys.handshake_reply(int(ENECSYS_GATEWAY_IEEE, 16), variant).hex() == reply


def test_handshake_reply_variants_reproduce_the_captures():
    captured = {pair[3] for pair in ENECSYS_HANDSHAKES}
    built = {enecsys.handshake_reply(0x34C69A007A30B495, v).hex() for v in enecsys.REPLY_VARIANTS}
    assert built == captured and len(built) == 3
    with pytest.raises(ValueError):
        enecsys.handshake_reply(0x34C69A007A30B495, b"\0")


def test_handshake_follow_ups():
    confirm, ready = (bytes.fromhex(h) for h in ENECSYS_FOLLOW_UPS)
    assert enecsys.encode_handshake_followups(100095471) == (confirm, ready)
    for frame, step in ((confirm, "confirm"), (ready, "ready")):
        hs = enecsys.decode_handshake(frame)
        assert hs.step == step and hs.checksum_ok and hs.serial == "100095471"
        assert enecsys.classify(frame) is FrameKind.HANDSHAKE_FOLLOW_UP


def test_handshake_with_bad_checksum_is_flagged():
    frame = bytearray.fromhex(ENECSYS_HANDSHAKES[0][2])
    frame[-1] ^= 0xFF
    assert enecsys.decode_handshake(bytes(frame)).checksum_ok is False


@pytest.mark.parametrize(
    "hex_frame, kind",
    [
        (ENECSYS_REPORT_1["hex"], FrameKind.REPORT),
        (ENECSYS_SHORT, FrameKind.REPORT),
        ("", FrameKind.FOREIGN),
        ("57", FrameKind.FOREIGN),
        ("0a0b0c", FrameKind.FOREIGN),
        ("5702ef55f705009ac634", FrameKind.FOREIGN),
        (ENECSYS_REPORT_1["hex"][:-2], FrameKind.MALFORMED),
        (ENECSYS_FOLLOW_UPS[1][:-2], FrameKind.MALFORMED),
        ("5701ef55f705009ac63409aa", FrameKind.MALFORMED),
    ],
)
def test_classify(hex_frame, kind):
    assert enecsys.classify(bytes.fromhex(hex_frame)) is kind


@pytest.mark.parametrize(
    "hex_frame, message",
    [
        ("", "too short"),
        ("5700ef55", "too short"),
        (ENECSYS_REPORT_1["hex"] + "00", "must be 38 bytes; got 39"),
        ("5701ef55f705009ac6340778fe", "handshake"),
        ("5800ef55f705009ac634210200000002013028", "not an Enecsys report"),
        ("5700ef55f705009ac634220200000002013028", "marker"),
        ("5700ef55f705009ac634210500000002013028", "channel 5"),
        ("5700ef55f705009ac63421010000000203300388" + "00", "3-byte payload"),
    ],
)
def test_report_framing_errors(hex_frame, message):
    with pytest.raises(FrameError, match=message):
        decode(hex_frame)


def test_decode_handshake_errors():
    with pytest.raises(FrameError, match="not an Enecsys handshake"):
        enecsys.decode_handshake(bytes.fromhex(ENECSYS_SHORT))
    with pytest.raises(FrameError, match="unknown step"):
        enecsys.decode_handshake(bytes.fromhex("5701ef55f705009ac63409aa"))
    with pytest.raises(FrameError, match="must be 13 bytes"):
        enecsys.decode_handshake(bytes.fromhex("5701ef55f705009ac634077800fe"))


def test_alarm_frame_and_bit_names():
    frame = enecsys.encode_report(100095471, 9, 5, 0, 0, 0, 50, 262, -3, 1_000_001,
                                  alarm=(1 << 1) | (1 << 15), channel=2)
    reading = decode(frame)
    f = reading.fields
    assert reading.kind == "alarm" and reading.checksum_ok
    assert f["alarms"] == ("grid high", "stop") and f["alarm_code"] == 0x8002
    assert f["state"] == "fault" and f["state_text"] == "fault (code 5)"
    assert f["temperature_c"] == -3
    assert f["dc_voltage_v"] is None  # zero-current guard
    assert f["lifetime_wh"] == 1_000_001
    assert enecsys.alarm_names(0xFFFF) == enecsys.ALARM_BITS and len(enecsys.ALARM_BITS) == 16


@pytest.mark.parametrize("code, state, text", [(0, "producing", "normal"), (1, "low_light", "not enough light"),
                                               (3, "low_light", "other low light"), (2, "fault", "fault (code 2)"),
                                               (0x80, "fault", "fault (code 128)")])
def test_states(code, state, text):
    reading = decode(enecsys.encode_report(1, 1, code, 1, 1, 0.9, 50, 230, 20, 5))
    assert reading.fields["state"] == state and reading.fields["state_text"] == text
    assert state in STATES
    assert any("top bit" in note for note in reading.notes) == (code == 0x80)


def test_info_frame_round_trip():
    frame = enecsys.encode_info(100095471, "WSI-00003", "2011-05-17", counter=1)
    assert len(frame) == 17 + 61 + 1 and enecsys.classify(frame) is FrameKind.REPORT
    reading = decode(frame)
    assert reading.kind == "info" and reading.checksum_ok and reading.energy is None
    assert reading.model == "WSI-00003"
    assert reading.fields["model_string"] == "WSI-00003" and reading.fields["date_string"] == "2011-05-17"
    assert reading.fields["serial_in_payload"] is True


def test_every_frame_of_the_real_capture_decodes_as_captured():
    """The capture of a real join, frame by frame, through our decoder and encoders: where they
    disagreed (the info frame's layout), the model was changed to the capture's."""
    frames = [(f["from"], bytes.fromhex(f["hex"])) for f in json.loads(CAPTURE_JOIN.read_text())["frames"]]
    serial, gateway = 100095471, 0x34C69A007A30B495
    assert all(enecsys.checksum_ok(data) for _, data in frames)
    inverter = [data for sender, data in frames if sender == "inverter"]
    [reply] = [data for sender, data in frames if sender == "gateway"]

    # the handshake, byte for byte: our request, the reply variant 414a00, the follow-ups
    assert inverter[0] == enecsys.encode_handshake_request(serial)
    assert reply == enecsys.handshake_reply(gateway, variant=bytes.fromhex("414a00"))
    assert enecsys.classify(reply) is FrameKind.HANDSHAKE_REPLY
    confirm, ready = enecsys.encode_handshake_followups(serial)
    assert inverter[1:3] == [confirm, ready]
    assert inverter.count(ready) == 3  # ready again after the info frame, and two minutes later

    readings = [decode(f) for f in inverter if f[:2] == enecsys.TYPE_REPORT]
    shape = [(r.kind, r.fields["channel"], r.fields["counter"]) for r in readings]
    assert shape == [("info", 0, 1), ("report", 1, 0), ("alarm", 2, 0), ("alarm", 2, 1), ("short", 2, 2),
                     ("report", 1, 2)]
    assert all(r.checksum_ok and r.serial == str(serial) and not r.notes for r in readings)

    info = readings[0]
    assert info.model == "WSI-00003" and info.fields["date_string"] == "25-04-12 06:58"
    assert info.fields["serial_in_payload"] is True
    assert enecsys.encode_info(serial, "WSI-00003", "25-04-12 06:58", 1) == inverter[3]  # the captured layout

    # start-up: not on the grid yet, alarm bits DISC, grid low and bit 12 clearing one by one
    startup = readings[1:4]
    assert [r.fields["state_code"] for r in startup] == [1, 3, 0]
    assert [r.fields["alarm_code"] for r in startup] == [0x1005, 0x1001, 0x1000]
    assert startup[0].fields["alarms"] == ("DISC", "grid low", "phase")
    assert all(r.fields["dc_power_w"] == 0 and r.fields["lifetime_wh"] == 1_347_370 for r in startup)
    assert readings[4].raw["format"] == 0x30
    assert inverter[-3] == enecsys.encode_short(serial, 2)
    # a minute and a half later: producing, no alarm, and the lifetime counter 145 Wh further on
    last = readings[-1]
    assert (last.fields["state"], last.fields["dc_power_w"], last.fields["alarm_code"]) == ("producing", 44, 0)
    assert last.fields["lifetime_wh"] == 1_347_515 and last.frame.hex() == ENECSYS_REPORT_1["hex"]


def test_info_frame_fields_are_read_from_their_places_whatever_the_serial_bytes():
    # 100048236 ends in 0x6c, an "l": a text search would read the model as "lWSI-00003"
    reading = decode(enecsys.encode_info(100048236, "WSI-00003", "25-04-12 06:58", counter=1))
    assert reading.model == "WSI-00003" and reading.fields["date_string"] == "25-04-12 06:58"


def test_info_frame_is_read_tolerantly():
    # another layout: date first, serial little-endian, firmware text after the model
    payload = (b"\x01Jun 14 2012\x00" + (100095471).to_bytes(4, "little") + b"\x00SMI-S240W-72\x00fw 2.1.8"
               ).ljust(61, b"\xff")
    body = bytes.fromhex("5700ef55f705009ac63421000000000a") + bytes([len(payload)]) + payload
    reading = decode(enecsys.with_checksum(body))
    f = reading.fields
    assert f["model_string"] == "SMI-S240W-72" and f["date_string"] == "Jun 14 2012"
    assert f["other_text"] == ("fw 2.1.8",) and f["serial_in_payload"] is True
    empty = decode(enecsys.with_checksum(bytes.fromhex("5700ef55f705009ac63421000000000a") + bytes([61]) + bytes(61)))
    assert empty.kind == "info" and empty.model == "" and empty.fields["serial_in_payload"] is False
    assert any("no text" in note for note in empty.notes)


def test_model_from_an_earlier_info_frame_is_kept():
    assert decode(ENECSYS_REPORT_1["hex"], model="WSI-00003").model == "WSI-00003"


def test_ws_line_vector():
    v = ENECSYS_WS_LINE
    reading = enecsys.decode_ws_line(v["line"], received_at=T0)
    assert reading.checksum_ok
    assert_report(reading, v)
    assert reading.raw["ws_trailer"] == 0xDC and reading.raw["ws_gateway"] == 0x0000B05E
    assert any("WS=" in note for note in reading.notes)
    # the rebuilt Zigbee frame decodes to the same reading, and re-encodes to the same line
    assert decode(reading.frame).fields == reading.fields
    assert enecsys.encode_ws_line(reading.frame, bytes.fromhex("0000b05e"), 0xDC) == v["line"]
    assert enecsys.decode_ws_line(v["line"] + "\r", received_at=T0).fields == reading.fields
    assert enecsys.decode_ws_line(v["line"].encode(), received_at=T0).fields == reading.fields


@pytest.mark.parametrize("line, message", [
    ("WZ=abcd", "not a WS= line"),
    ("WS=", "not the gateway's base64"),
    ("WS=abc", "not the gateway's base64"),
    ("WS=ab$d", "not the gateway's base64"),
    ("WS=AAAA", "too short"),
    ("WS=a***", "not valid base64"),
])
def test_ws_line_errors(line, message):
    with pytest.raises(FrameError, match=message):
        enecsys.decode_ws_line(line, received_at=T0)


# --- property tests -------------------------------------------------------------------------

@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_frame_error(data):
    kind = enecsys.classify(data)
    try:
        reading = decode(data)
    except FrameError:
        pass
    else:  # only what classify calls a report can decode as one
        assert kind is FrameKind.REPORT and reading.checksum_ok == enecsys.checksum_ok(data)
    try:
        handshake = enecsys.decode_handshake(data)
    except FrameError:
        assert kind not in (FrameKind.HANDSHAKE_REQUEST, FrameKind.HANDSHAKE_REPLY, FrameKind.HANDSHAKE_FOLLOW_UP)
    else:
        assert kind.value.startswith("handshake") and handshake.frame == data


@given(st.binary(min_size=1, max_size=80), st.sampled_from([b"\x57\x00", b"\x57\x01"]))
def test_enecsys_looking_bytes_raise_only_frame_error(tail, head):
    data = head + tail
    for decoder in (decode, enecsys.decode_handshake):
        try:
            decoder(data)
        except FrameError:
            pass


@given(st.text(max_size=80))
def test_arbitrary_ws_text_raises_only_frame_error(text):
    for line in (text, "WS=" + text):
        try:
            enecsys.decode_ws_line(line, received_at=T0)
        except FrameError:
            pass


@settings(max_examples=200)
@given(
    serial=st.integers(0, 0xFFFFFFFF),
    counter=st.integers(0, 0xFFFFFFFF),
    state=st.integers(0, 255),
    current=st.floats(0, 1638),
    power=st.integers(0, 0xFFFF),
    efficiency=st.floats(0, 65.5),
    freq=st.integers(0, 255),
    voltage=st.integers(0, 0xFFFF),
    temp=st.integers(-128, 127),
    lifetime=st.integers(0, 65535 * 1000 + 999),
    alarm=st.integers(0, 0xFFFF),
    channel=st.sampled_from([1, 2]),
)
def test_report_round_trip(serial, counter, state, current, power, efficiency, freq, voltage, temp, lifetime,
                           alarm, channel):
    frame = enecsys.encode_report(serial, counter, state, current, power, efficiency, freq, voltage, temp, lifetime,
                                  alarm=alarm, channel=channel)
    reading = decode(frame)
    f = reading.fields
    assert reading.checksum_ok and enecsys.classify(frame) is FrameKind.REPORT
    assert reading.kind == ("report" if channel == 1 else "alarm")
    assert reading.serial == str(serial) and f["counter"] == counter and f["state_code"] == state
    assert f["dc_current_a"] == approx(current, abs=0.0125 + 1e-6)
    assert f["dc_power_w"] == power and f["ac_frequency_hz"] == freq and f["ac_voltage_v"] == voltage
    assert f["efficiency_ratio"] == approx(efficiency, abs=0.0005 + 1e-9)
    assert f["temperature_c"] == temp and f["lifetime_wh"] == lifetime and f["alarm_code"] == alarm
    assert f["state"] in STATES
    line = enecsys.encode_ws_line(frame)
    assert enecsys.decode_ws_line(line, received_at=T0).fields == f


@given(serial=st.integers(0, 0xFFFFFFFF), gateway=st.integers(0, 0xFFFFFFFFFFFFFFFF),
       variant=st.binary(min_size=3, max_size=3))
def test_handshake_round_trip(serial, gateway, variant):
    request = enecsys.decode_handshake(enecsys.encode_handshake_request(serial))
    assert request.step == "request" and request.serial == str(serial) and request.checksum_ok
    reply = enecsys.decode_handshake(enecsys.handshake_reply(gateway, variant))
    assert reply.step == "reply" and reply.ieee == gateway and reply.checksum_ok and reply.detail[2:5] == variant
