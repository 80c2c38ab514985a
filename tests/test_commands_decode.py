"""``solargw decode``: run as a real subprocess and in-process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from appliance import cli
from appliance.protocols.detect import decode_any, detect_family, parse_frame_text
from appliance.protocols.enecsys import Handshake
from appliance.reading import FrameError
from support.vectors import (
    ENECSYS_FOLLOW_UPS,
    ENECSYS_HANDSHAKES,
    ENECSYS_PHP_EXAMPLE,
    ENECSYS_REPORT_1,
    ENECSYS_SHORT,
    ENECSYS_WS_LINE,
    NEP_BDM400,
    NEP_BDM800,
    NEP_BDM1200_T,
)

SOLARGW = Path(sys.executable).with_name("solargw")


def solargw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SOLARGW), "decode", *args], capture_output=True, text=True, timeout=60)


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["decode", *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- subprocess -----------------------------------------------------------------------------

def test_nep_text_output():
    spaced = " ".join(NEP_BDM400["hex"][i:i + 2] for i in range(0, len(NEP_BDM400["hex"]), 2))
    result = solargw(spaced)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("nep report")
    assert "serial    12345678" in out and "bdm400 (guessed)" in out and "checksum  ok" in out
    assert "223.89 W" in out and "raw 22389" in out
    assert "233.2 V" in out and "raw 5970" in out
    assert "49.9922 Hz" in out and "53.27 °C" in out and "1349.6 Wh" in out
    assert "note: voltage is disputed" in out
    assert result.stderr == ""


def test_json_output_for_every_kind():
    frames = [NEP_BDM800["hex"], NEP_BDM1200_T["hex"], ENECSYS_REPORT_1["hex"], ENECSYS_SHORT,
              ENECSYS_HANDSHAKES[0][2], ENECSYS_WS_LINE["line"]]
    result = solargw("--json", *frames)
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == len(frames)
    nep800, nep_t, report, short, handshake, ws = objects
    assert nep800["family"] == "nep" and nep800["serial"] == "deadbeef" and nep800["model"] == "bdm800"
    assert nep800["fields"]["ac_power_w"] == pytest.approx(282.72, abs=0.005)
    assert nep800["raw"]["ac_power_w"] == 22205 and nep800["units"]["ac_power_w"] == "W"
    assert nep800["energy"] == {"kind": "daily", "wh": pytest.approx(1103.0, abs=0.05)}
    assert nep800["checksum_ok"] is True and nep800["frame"] == NEP_BDM800["hex"]
    assert nep_t["serial"] == "86513ae0" and nep_t["raw"]["temperature_c"] == 3680
    assert report["family"] == "enecsys" and report["serial"] == "100095471" and report["kind"] == "report"
    assert report["fields"]["lifetime_wh"] == 1347515 and report["fields"]["alarms"] == []
    assert report["units"]["temperature_c"] == "°C"
    assert short["kind"] == "short"
    assert handshake == {
        "family": "enecsys", "kind": "handshake", "step": "request", "serial": "100095471",
        "ieee": "34c69a0005f755ef", "checksum_ok": True, "detail": ENECSYS_HANDSHAKES[0][2][22:-2],
        "frame": ENECSYS_HANDSHAKES[0][2],
    }
    assert ws["serial"] == "100036587" and ws["fields"]["lifetime_wh"] == 1108370


def test_model_option_sets_the_scale():
    result = solargw("--model", "bdm400", "--json", NEP_BDM800["hex"])
    reading = json.loads(result.stdout)
    assert reading["model"] == "bdm400" and reading["model_guessed"] is False
    assert reading["fields"]["ac_power_w"] == pytest.approx(222.05)


def test_bad_checksum_is_shown_not_hidden():
    result = solargw(ENECSYS_PHP_EXAMPLE["hex"])
    assert result.returncode == 0
    assert "checksum  FAILED" in result.stdout and "note: checksum failed" in result.stdout


@pytest.mark.parametrize(
    "frame, message",
    [
        ("7926004", "odd number of hex digits"),
        ("79zz", "not hex"),
        ("1234", "unknown frame type"),
        (NEP_BDM400["hex"][:-2], "45 or 69 bytes"),
        ("WS=!!", "WS= payload"),
        ("5700ef55f705009ac634210700000002013028", "channel 7"),
        ("", "empty frame"),
    ],
)
def test_malformed_input_exits_2_with_one_line(frame, message):
    result = solargw(frame)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("solargw decode: ")
    assert "Traceback" not in result.stderr


def test_which_frame_failed_is_named():
    result = solargw(ENECSYS_SHORT, "abc")
    assert result.returncode == 2 and result.stderr.strip() == "solargw decode: frame 2: odd number of hex digits (3)"
    assert result.stdout == ""


def test_unknown_model_is_a_usage_error():
    result = solargw("--model", "bdm9000", NEP_BDM400["hex"])
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr


# --- in-process -----------------------------------------------------------------------------

def test_in_process_text(capsys):
    code, out, err = in_process(capsys, ENECSYS_REPORT_1["hex"], *ENECSYS_FOLLOW_UPS)
    assert code == 0 and err == ""
    assert "enecsys report" in out and "lifetime_wh       1347515 Wh" in out
    assert "dc_current_a      1.3 A" in out and "raw 52" in out
    assert "enecsys handshake confirm" in out and "enecsys handshake ready" in out


def test_in_process_error(capsys):
    code, out, err = in_process(capsys, "57")
    assert code == 2 and out == "" and err.strip() == "solargw decode: Enecsys frame too short (1 bytes)"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_gives_a_result_or_exit_2(text):
    # argparse would take a leading '-' as an option; the decoder itself must cope with anything
    try:
        item = decode_any(parse_frame_text(text), received_at=0.0)
    except FrameError as exc:
        assert str(exc)
    else:
        assert isinstance(item, Handshake) or item.family in ("nep", "enecsys")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_hex_never_escapes_as_anything_but_frame_error(data):
    try:
        decode_any(parse_frame_text(data.hex(":")), received_at=0.0)
    except FrameError:
        pass


def test_parse_frame_text():
    assert parse_frame_text("79:26 00-40 14") == bytes.fromhex("7926004014")
    assert parse_frame_text("0x5701") == bytes.fromhex("5701")
    assert parse_frame_text("  ws=abcd\r\n") == "ws=abcd"
    with pytest.raises(FrameError, match="empty"):
        parse_frame_text("  ")


def test_detect_family():
    assert detect_family(bytes.fromhex(NEP_BDM400["hex"])) == "nep"
    assert detect_family(bytes.fromhex(ENECSYS_SHORT)) == "enecsys"
    assert detect_family(ENECSYS_WS_LINE["line"]) == "enecsys"
    with pytest.raises(FrameError):
        detect_family(b"\x00")
    with pytest.raises(FrameError):
        detect_family("hello")
