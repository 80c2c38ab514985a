"""NEP /i.php and /t.php bodies: public vectors, framing errors, models, encoder round trips."""
from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings, strategies as st

from appliance.protocols import nep
from appliance.reading import STATES, EnergyCounter, FrameError, Reading
from support.vectors import NEP_BDM400, NEP_BDM800, NEP_BDM1200_T, NEP_SEED_EXAMPLE_TEMPLATE

approx = pytest.approx


def decode(vector_or_bytes, **kwargs) -> Reading:
    body = bytes.fromhex(vector_or_bytes["hex"]) if isinstance(vector_or_bytes, dict) else vector_or_bytes
    return nep.decode(body, received_at=kwargs.pop("received_at", 1_700_000_000.0), **kwargs)


def assert_i_vector(reading: Reading, v: dict) -> None:
    f, raw = reading.fields, reading.raw
    assert reading.family == "nep" and reading.kind == "report"
    assert reading.serial == v["serial"]
    assert reading.checksum_ok is True
    assert f["status_code"] == v["status_code"] and f["status"] == "ok"
    assert raw["ac_power_w"] == v["ac_power_raw"]
    assert f["ac_power_w"] == approx(v["ac_power_w"], abs=0.005)
    assert f["ac_voltage_v"] == approx(v["ac_voltage_v"], abs=0.005)
    assert f["dc_current_1_a"] == approx(v["dc_current_1_a"])
    assert f["dc_current_2_a"] == approx(v["dc_current_2_a"])
    assert f["dc_current_a"] == approx(v["dc_current_1_a"] + v["dc_current_2_a"])
    assert f["ac_frequency_hz"] == approx(v["ac_frequency_hz"], abs=5e-5)
    assert f["temperature_c"] == approx(v["temperature_c"])
    assert raw["energy_today_wh"] == v["energy_today_raw"]
    assert f["energy_today_wh"] == approx(v["energy_today_wh"], abs=0.05)
    assert reading.energy == EnergyCounter("daily", approx(v["energy_today_wh"], abs=0.05))
    assert f["mode_code"] == raw["mode_code"] == v["mode_code"]
    assert f["mode"] == "generating" and f["state"] == "producing"
    assert f["scale"] == v["scale"]
    assert f["state"] in STATES
    assert reading.timestamp == 1_700_000_000.0


def test_bdm400_vector_auto_guesses_from_gateway_field():
    reading = decode(NEP_BDM400)
    assert_i_vector(reading, NEP_BDM400)
    assert reading.model == "bdm400" and reading.model_guessed
    assert any("guessed" in note and "ff x8" in note for note in reading.notes)
    assert reading.fields["gateway"] == "ff" * 8
    assert reading.raw["ac_voltage_v"] == 5970
    assert reading.frame == bytes.fromhex(NEP_BDM400["hex"])


def test_bdm800_vector_auto_guesses_from_gateway_field():
    reading = decode(NEP_BDM800)
    assert_i_vector(reading, NEP_BDM800)
    assert reading.model == "bdm800" and reading.model_guessed
    assert any("guessed" in note and "0f 0f" in note for note in reading.notes)


@pytest.mark.parametrize("vector", [NEP_BDM400, NEP_BDM800], ids=["bdm400", "bdm800"])
def test_named_model_is_not_guessed(vector):
    reading = decode(vector, model=vector["scale"])
    assert_i_vector(reading, vector)
    assert reading.model == vector["scale"] and not reading.model_guessed
    assert not any("guessed" in note for note in reading.notes)


def test_model_choice_changes_only_the_scaled_fields():
    as400 = decode(NEP_BDM800, model="bdm400")
    as800 = decode(NEP_BDM800, model="bdm800")
    assert as400.fields["ac_power_w"] == approx(222.05)
    assert as400.fields["energy_today_wh"] == approx(4779 * 0.2)
    assert as800.fields["ac_power_w"] == approx(22205 / (25 * math.pi), abs=0.005)
    assert as400.raw == as800.raw
    # the mode byte's meaning follows the packet's own high byte (0x8c), not the chosen scale
    assert as400.fields["mode"] == "generating"


@pytest.mark.parametrize("model, scale", [("bdm300", "bdm400"), ("bdm600", "bdm800")])
def test_borrowed_scales_say_so(model, scale):
    reading = decode(NEP_BDM800, model=model)
    assert reading.model == model and not reading.model_guessed
    assert reading.fields["scale"] == scale
    assert any(f"uses the {scale} scale" in note for note in reading.notes)


@pytest.mark.parametrize("model", ["bdm1200", "bdm2000", "bdm2250"])
def test_45_byte_packet_from_a_69_byte_model_is_guessed(model):
    reading = decode(NEP_BDM800, model=model)
    assert reading.model == model and reading.model_guessed
    assert reading.fields["scale"] == "bdm800"
    assert any(f"no 45-byte scale is known for {model}" in note for note in reading.notes)


def test_disputed_voltage_shows_raw_and_the_choice():
    reading = decode(NEP_BDM400)
    note = next(n for n in reading.notes if n.startswith("voltage is disputed"))
    assert "raw 5970" in note and "233.20" in note and "chosen" in note and "29.85" in note


def test_t_php_vector():
    reading = decode(NEP_BDM1200_T)
    f, raw = reading.fields, reading.raw
    assert reading.checksum_ok and reading.serial == NEP_BDM1200_T["serial"]
    assert reading.model == "bdm1200" and reading.model_guessed
    assert f["ac_frequency_hz"] == approx(NEP_BDM1200_T["ac_frequency_hz"], abs=5e-5)
    assert raw["temperature_c"] == NEP_BDM1200_T["temperature_raw"]
    assert f["temperature_c"] == approx(36.80)
    assert f["modules_reporting"] == NEP_BDM1200_T["modules_reporting"]
    # the one reporting module: 24.125 V, X 6723 -> 262.62 W, energy count 18 = energy today
    assert f["module_3_voltage_v"] == approx(6176 / 256)
    assert raw["module_3_power_w"] == 6723 and f["module_3_power_w"] == approx(262.62, abs=0.005)
    assert raw["energy_today_wh"] == 18 and raw["module_3_energy_wh"] == 18
    assert f["ac_power_w"] == approx(262.62, abs=0.005)
    assert f["nominal_frequency_hz"] == 50 and f["nominal_voltage_v"] == 0xEB
    assert raw["ac_voltage_v"] == 2160 and f["ac_voltage_v"] == approx(2160 / 17.32, abs=0.005)
    assert f["alert_code"] == 0 and f["status"] == "ok" and f["state"] == "producing"
    assert reading.energy == EnergyCounter("daily", 18.0)
    for disputed in ("grid voltage is disputed: raw 2160", "temperature is disputed: raw 3680", "module X"):
        assert any(disputed in note for note in reading.notes)


def test_t_php_named_model_is_kept():
    reading = decode(NEP_BDM1200_T, model="bdm800")
    assert reading.model == "bdm800" and not reading.model_guessed


def test_seed_example_decodes_with_failed_checksum():
    body = bytes.fromhex(NEP_SEED_EXAMPLE_TEMPLATE.format(serial="78563412", power="50"))
    reading = decode(body)
    assert reading.checksum_ok is False
    assert reading.serial == "12345678"
    assert reading.raw["ac_power_w"] == 0x505A
    assert any(note.startswith("checksum failed") for note in reading.notes)


@pytest.mark.parametrize("position", [-2, -1])
def test_either_checksum_byte_wrong_fails(position):
    body = bytearray.fromhex(NEP_BDM400["hex"])
    body[position] ^= 0x01
    assert decode(bytes(body)).checksum_ok is False


def test_reset_sync_is_accepted():
    body = nep.encode_i(serial="00c0ffee", model="bdm400", ac_power_w=10, sync=b"\xff" * 4)
    reading = decode(body)
    assert reading.checksum_ok and reading.serial == "00c0ffee"
    assert not any("sync" in note for note in reading.notes)


def test_serial_keeps_leading_zeros():
    body = nep.encode_i(serial=0x00000A0B, model="bdm800")
    assert decode(body).serial == "00000a0b"
    assert nep.peek_serial(body) == "00000a0b"


def test_peek_serial():
    assert nep.peek_serial(bytes.fromhex(NEP_BDM800["hex"])) == "deadbeef"
    assert nep.peek_serial(bytes.fromhex(NEP_BDM1200_T["hex"])) == "86513ae0"
    assert nep.peek_serial(b"\x79\x26") is None
    assert nep.peek_serial(b"") is None


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-1], "45 or 69 bytes"),
        (lambda b: b + b"\0", "45 or 69 bytes"),
        (lambda b: b"\x78" + b[1:], "start with 0x79"),
        (lambda b: b[:1] + b"\x27" + b[2:], "length field"),
        (lambda b: b[:3] + b"\x40\x15" + b[5:], "command"),
    ],
)
def test_framing_errors(mutate, message):
    with pytest.raises(FrameError, match=message):
        decode(mutate(bytes.fromhex(NEP_BDM400["hex"])))


def test_unknown_model_is_a_caller_error():
    with pytest.raises(ValueError, match="unknown NEP model"):
        decode(NEP_BDM400, model="bdm9000")


def test_models_list():
    assert nep.MODELS[0] == "auto"
    assert {"bdm300", "bdm400", "bdm600", "bdm800", "bdm1200", "bdm2000", "bdm2250"} <= set(nep.MODELS)


@pytest.mark.parametrize(
    "status, mode_low, model, state, mode",
    [
        (0x0000, 0x01, "bdm800", "sleeping", "deep sleep"),
        (0x0000, 0x04, "bdm800", "standby", "standby"),
        (0x0000, 0x05, "bdm800", "producing", "generating"),
        (0x0000, 0x05, "bdm400", "standby", "standby"),
        (0x0000, 0x06, "bdm400", "producing", "generating"),
        (0x0000, 0x09, "bdm400", "unknown", "unknown 0x09"),
        (0x0020, 0x06, "bdm400", "fault", "generating"),
        (0x0004, 0x06, "bdm800", "standby", "generating"),
    ],
)
def test_status_and_mode(status, mode_low, model, state, mode):
    reading = decode(nep.encode_i(serial=1, model=model, status=status, mode_low=mode_low))
    assert reading.fields["state"] == state and reading.fields["mode"] == mode
    assert reading.fields["state"] in STATES
    expected_status = {0: "ok", 0x20: "grid loss / islanding", 4: "anti-islanding reconnect timer"}[status]
    assert reading.fields["status"] == expected_status


def test_t_php_alert_is_a_fault():
    body = nep.encode_t(serial=7, alert=0x0040, modules=[nep.Module(30.0, 100.0, 5)])
    reading = decode(body)
    assert reading.fields["state"] == "fault" and reading.fields["status"] == "AC voltage over"
    assert any("big-endian" in note for note in reading.notes)


# --- property tests -------------------------------------------------------------------------

@given(st.binary(max_size=100))
def test_arbitrary_bytes_raise_only_frame_error(data):
    try:
        reading = decode(data)
    except FrameError:
        return
    assert reading.serial == nep.peek_serial(data)


@given(st.binary(min_size=38, max_size=38), st.sampled_from(nep.MODELS))
def test_well_framed_random_i_bodies_decode(data, model):
    body = b"\x79\x26\x00\x40\x14" + data + b"\0\0"
    reading = decode(body, model=model)
    assert reading.fields["state"] in STATES
    assert reading.checksum_ok == (body[-2:] == bytes(nep.checksums(body)))


@given(st.binary(min_size=62, max_size=62), st.sampled_from(nep.MODELS))
def test_well_framed_random_t_bodies_decode(data, model):
    reading = decode(b"\x79\x3e\x00\x40\x14" + data + b"\0\0", model=model)
    assert reading.fields["state"] in STATES


@settings(max_examples=200)
@given(
    serial=st.integers(0, 0xFFFFFFFF),
    model=st.sampled_from(["bdm300", "bdm400", "bdm600", "bdm800"]),
    power=st.floats(0, 650),
    voltage=st.floats(0, 2500),
    cur1=st.floats(0, 25.5),
    cur2=st.floats(0, 25.5),
    freq=st.floats(0, 255),
    temp=st.floats(-300, 300),
    energy=st.floats(0, 13000),
)
def test_i_round_trip(serial, model, power, voltage, cur1, cur2, freq, temp, energy):
    body = nep.encode_i(serial=serial, model=model, ac_power_w=power, ac_voltage_v=voltage, dc_current_1_a=cur1,
                        dc_current_2_a=cur2, ac_frequency_hz=freq, temperature_c=temp, energy_today_wh=energy)
    reading = decode(body, model=model)
    f = reading.fields
    assert reading.checksum_ok and reading.serial == f"{serial:08x}" and len(body) == 45
    scale = nep.SCALES[nep.MODEL_SCALE[model]]
    assert f["ac_power_w"] == approx(power, abs=0.5 / scale.power_divisor + 0.005)
    assert f["ac_voltage_v"] == approx(voltage, abs=0.5 / 25.6 + 0.005)
    assert f["dc_current_1_a"] == approx(cur1, abs=0.05 + 1e-9)
    assert f["dc_current_2_a"] == approx(cur2, abs=0.05 + 1e-9)
    assert f["ac_frequency_hz"] == approx(freq, abs=0.5 / 256 + 1e-9)
    assert f["temperature_c"] == approx(temp, abs=0.005 + 1e-9)
    assert f["energy_today_wh"] == approx(energy, abs=scale.energy_wh_per_count / 2 + 1e-3)
    assert reading.energy.wh == f["energy_today_wh"]
    assert f["state"] == "producing"  # the encoder's default mode is "generating" for the model


@settings(max_examples=100)
@given(
    serial=st.integers(0, 0xFFFFFFFF),
    modules=st.lists(st.tuples(st.floats(0, 255), st.floats(0, 2500), st.integers(0, 10000)), max_size=4),
    dc=st.floats(0, 255),
    grid=st.floats(0, 3700),
    freq=st.floats(0, 255),
    temp=st.floats(-300, 300),
)
def test_t_round_trip(serial, modules, dc, grid, freq, temp):
    blocks = [nep.Module(v, p, e) for v, p, e in modules]
    body = nep.encode_t(serial=serial, modules=blocks, dc_voltage_v=dc, ac_voltage_v=grid, ac_frequency_hz=freq,
                        temperature_c=temp, word_25=0)
    reading = decode(body, model="bdm2250")
    f = reading.fields
    assert reading.checksum_ok and len(body) == 69 and reading.serial == f"{serial:08x}"
    assert f["dc_voltage_v"] == approx(dc, abs=0.5 / 256 + 1e-4)
    assert f["ac_voltage_v"] == approx(grid, abs=0.5 / 17.32 + 0.005)
    assert f["ac_frequency_hz"] == approx(freq, abs=0.5 / 256 + 1e-9)
    assert f["temperature_c"] == approx(temp, abs=0.005 + 1e-9)
    for n, block in enumerate(blocks, 1):
        assert f[f"module_{n}_voltage_v"] == approx(block.voltage_v, abs=0.5 / 256 + 1e-4)
        assert f[f"module_{n}_power_w"] == approx(block.power_w, abs=0.5 / 25.6 + 0.005)
        assert f[f"module_{n}_energy_wh"] == block.energy_wh
    assert f["energy_today_wh"] == sum(block.energy_wh for block in blocks)
    assert f["ac_power_w"] == approx(sum(b.power_w for b in blocks), abs=4 * (0.5 / 25.6) + 0.01)


def test_encoder_reproduces_the_public_vectors():
    assert nep.encode_i(
        serial="12345678", model="bdm400", ac_power_w=223.89, ac_voltage_v=233.2, dc_current_2_a=4.3,
        ac_frequency_hz=12798 / 256, temperature_c=53.27, energy_today_wh=1349.6, unknown_41=0x2EBB,
    ) == bytes.fromhex(NEP_BDM400["hex"])
    assert nep.encode_t(
        serial=0x86513AE0, model="bdm1200",
        modules=[nep.Module(63 / 256), nep.Module(127 / 256), nep.Module(6176 / 256, 6723 / 25.6, 18)],
        dc_voltage_v=63 / 256, ac_voltage_v=2160 / 17.32, ac_frequency_hz=15374 / 256, temperature_c=36.8,
        nominal_voltage_v=0xEB, word_31=256, word_65=0xD561,
    ) == bytes.fromhex(NEP_BDM1200_T["hex"])


def test_encoder_rejects_out_of_range_values():
    with pytest.raises(ValueError, match="ac_power_w"):
        nep.encode_i(serial=1, model="bdm400", ac_power_w=700)
    with pytest.raises(ValueError, match="serial"):
        nep.encode_i(serial=1 << 32)


def test_checksums_helper_matches_the_vector():
    body = bytes.fromhex(NEP_BDM800["hex"])
    assert nep.checksums(body) == (body[-2], body[-1])
    assert struct.unpack_from("<I", body, 19)[0] == 0xDEADBEEF
