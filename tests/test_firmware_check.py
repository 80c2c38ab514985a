"""``solargw firmware check`` and ``flash`` on synthetic Z-Stack images."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.firmware import flash, hexcheck
import firmware_images as fi


@pytest.fixture
def good_hex(tmp_path: Path) -> Path:
    return fi.write(tmp_path / "good.hex", fi.make_image())


def test_the_old_ti_default_layout_is_good_for_enecsys(good_hex: Path) -> None:
    # Distributed key, TI's default network key (01 03 05 .. 0D), then the Enecsys key.
    report = hexcheck.check_file(good_hex)
    assert report.key_slot == fi.KEYS_AT + 32
    assert report.lines()[-1] == "verdict: good for Enecsys"
    assert report.slot_key == fi.ENECSYS_KEY
    assert report.enecsys_key_at == [fi.KEYS_AT + 32]
    assert report.alliance_key_at == []
    assert report.version is not None
    assert (report.version.mt_version, report.version.product, report.version.build_date) == ("2.7.1", 1, "20220219")
    assert report.bootloader is not None
    assert report.bootloader.address == 0x57FD8
    assert report.bootloader.describe() == "bootloader enabled, backdoor DIO15 active low"
    assert report.problems() == []
    assert report.good


def test_stock_build_is_rejected_with_the_reason(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "stock.hex", fi.make_image(fi.ALLIANCE_KEY)))
    assert report.slot_key == fi.ALLIANCE_KEY
    assert not report.enecsys_key_at
    [problem] = report.problems()
    assert "ZigBeeAlliance09" in problem and "stock" in problem


def test_enecsys_key_outside_the_slot_does_not_count(tmp_path: Path) -> None:
    image = fi.make_image(fi.ALLIANCE_KEY)
    image.puts(0x40000, fi.ENECSYS_KEY)
    report = hexcheck.check_file(fi.write(tmp_path / "elsewhere.hex", image))
    assert report.enecsys_key_at == [0x40000]
    assert not report.good


def test_without_the_distributed_key_the_network_key_locates_the_slot(tmp_path: Path) -> None:
    image = fi.make_image()
    image.puts(fi.KEYS_AT, b"\x00" * 16)  # no distributed key (a build without joining code)
    report = hexcheck.check_file(fi.write(tmp_path / "nodist.hex", image))
    assert report.key_slot == fi.KEYS_AT + 32 and report.good


# --- the layouts measured in real images ------------------------------------------------

STANDARD_VERDICT = "verdict: NOT good for Enecsys: standard key (ZigBeeAlliance09): inverters cannot join"


@pytest.mark.parametrize("zero_surroundings", [False, True], ids=["random-neighbours", "zero-neighbours"])
@pytest.mark.parametrize(
    ("layout", "key", "verdict"),
    [
        ("enecsys-20220219", fi.ENECSYS_KEY, "verdict: good for Enecsys"),
        ("stock-20220219", fi.ALLIANCE_KEY, STANDARD_VERDICT),
        ("stock-20250321", fi.ALLIANCE_KEY, STANDARD_VERDICT),
    ],
)
def test_measured_layouts_get_the_right_verdict(tmp_path: Path, layout, key, verdict, zero_surroundings) -> None:
    measured = fi.MEASURED[layout]
    path = fi.write(tmp_path / f"{layout}.hex", fi.make_measured(measured, zero_surroundings=zero_surroundings))
    report = hexcheck.check_file(path)
    lines = report.lines()
    assert lines[-1] == verdict, "\n".join(lines)
    assert not any("not a Z-Stack 3 coordinator image" in line for line in lines)
    assert (report.key_slot, report.slot_key) == (measured.tc_key_at, key)
    assert report.bootloader.address == 0x57FD8 and report.bootloader.config == 0xC5FE0FC5
    assert report.version.mt_version == "2.7.1" and report.version.revision == measured.revision
    search = {fi.ENECSYS_KEY: f"ENCSYS-SOLAR-NET present at 0x{measured.tc_key_at:05X}, ZigBeeAlliance09 absent",
              fi.ALLIANCE_KEY: f"ENCSYS-SOLAR-NET absent, ZigBeeAlliance09 present at 0x{measured.tc_key_at:05X}"}
    assert lines[-2] == (f"key verdict based on: the TC link key slot at 0x{measured.tc_key_at:05X}; "
                         f"a plain search agrees ({search[key]})")


def test_the_seed_layout_is_described_in_flash_order(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "seed.hex", fi.make_measured(fi.MEASURED["enecsys-20220219"])))
    assert "key layout: distributed key D0..DF at 0x27FFC, all-zero network key at 0x2800C, " \
           "TC link key at 0x2801C" in report.lines()
    assert report.good and report.problems() == []


def test_the_newer_order_is_described_too(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "s25.hex", fi.make_measured(fi.MEASURED["stock-20250321"])))
    assert "key layout: all-zero network key at 0x2BBFC, TC link key at 0x2BC0C, " \
           "distributed key D0..DF at 0x2BC1C" in report.lines()
    [problem] = report.problems()
    assert problem.startswith("standard key (ZigBeeAlliance09): inverters cannot join; the TC link key slot "
                              "at 0x2BC0C holds it (a stock build")


def test_an_enecsys_build_on_the_newer_base_is_good(tmp_path: Path) -> None:
    # Not measured: the 20250321 layout with the Enecsys key, as build.py would make it.
    image = fi.make_measured(fi.MEASURED["stock-20250321"], tc_key=fi.ENECSYS_KEY)
    report = hexcheck.check_file(fi.write(tmp_path / "e25.hex", image))
    assert report.key_slot == 0x2BC0C and report.good


def test_cli_verdicts_on_the_measured_layouts(tmp_path: Path, capsys) -> None:
    for name, status, verdict in [("enecsys-20220219", 0, "verdict: good for Enecsys"),
                                  ("stock-20220219", 1, STANDARD_VERDICT), ("stock-20250321", 1, STANDARD_VERDICT)]:
        path = fi.write(tmp_path / f"{name}.hex", fi.make_measured(fi.MEASURED[name]))
        assert main(["firmware", "check", str(path)]) == status
        assert capsys.readouterr().out.splitlines()[-1] == verdict
        assert main(["firmware", "check", "--json", str(path)]) == status
        data = json.loads(capsys.readouterr().out)
        assert data["verdict"] == verdict.removeprefix("verdict: ")
        assert data["tc_link_key"]["plain_search"] == ("enecsys" if status == 0 else "standard")


# --- no key slot: the plain search decides, and says so -------------------------------


def _without_slot(tc_key: bytes | None, extra: bytes | None = None) -> object:
    image = fi.make_image()
    image.puts(fi.KEYS_AT, b"\xa5" * 32 + (tc_key or b"\xa5" * 16))  # the default keys are gone
    if extra:
        image.puts(0x40000, extra)
    return image


def test_without_a_slot_the_enecsys_key_alone_is_good_and_says_why(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "e.hex", _without_slot(fi.ENECSYS_KEY)))
    assert report.key_slot is None and report.good
    lines = report.lines()
    assert "TC link key slot: not found" in lines
    assert lines[-2].startswith("key verdict based on: a plain search only")
    assert any("plain search alone" in note for note in report.notes())


def test_without_a_slot_the_standard_key_alone_is_named(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "s.hex", _without_slot(fi.ALLIANCE_KEY)))
    assert report.lines()[-1] == STANDARD_VERDICT


def test_without_a_slot_both_keys_cannot_be_told_apart(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "b.hex", _without_slot(fi.ALLIANCE_KEY, fi.ENECSYS_KEY)))
    assert report.lines()[-1] == "verdict: NOT good for Enecsys: cannot tell which key is the TC link key"


def test_without_any_key_it_is_not_a_coordinator_image(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "n.hex", _without_slot(None)))
    assert report.lines()[-1] == ("verdict: NOT good for Enecsys: no TC link key found: "
                                  "not a Z-Stack 3 coordinator image?")


@pytest.mark.parametrize(
    ("bl_config", "described"),
    [
        (0x00FE0FC5, "bootloader disabled"),
        (0xC5FE0F00, "bootloader enabled, backdoor disabled"),
    ],
)
def test_bootloader_off_is_rejected(tmp_path: Path, bl_config: int, described: str) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "bl.hex", fi.make_image(bl_config=bl_config)))
    assert report.bootloader.describe() == described
    [problem] = report.problems()
    assert described in problem and "JTAG" in problem


def test_other_backdoor_pin_is_decoded_and_noted(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "pin.hex", fi.make_image(bl_config=0xC5FF0BC5)))
    assert report.bootloader.describe() == "bootloader enabled, backdoor DIO11 active high"
    assert report.good
    assert any("DIO15 active low" in note for note in report.notes())


def test_no_ccfg_is_rejected(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "noccfg.hex", fi.make_image(bl_config=None)))
    assert report.bootloader is None
    assert any("no CCFG" in p for p in report.problems())


def test_704k_flash_ccfg_is_found(tmp_path: Path) -> None:
    image = fi.make_image(flash_size=0xB0000)
    report = hexcheck.check_file(fi.write(tmp_path / "r7.hex", image))
    assert report.bootloader.address == 0xAFFD8
    assert report.good


def test_old_build_lacks_profile_forwarding(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "old.hex", fi.make_image(revision=20210120)))
    [problem] = report.problems()
    assert "20210708" in problem


def test_version_not_found_is_said_honestly(tmp_path: Path) -> None:
    report = hexcheck.check_file(fi.write(tmp_path / "nover.hex", fi.make_image(revision=None)))
    assert report.version is None
    assert "version: not found" in report.lines()
    assert report.good  # the key and the bootloader are what decide


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("badsum.hex", lambda text: fi.with_bad_checksum(text), "invalid checksum"),
        ("truncated.hex", fi.truncated, "is truncated"),
        ("noeof.hex", fi.cut_at_line, "truncated"),
        ("empty.hex", lambda text: "", "is empty"),
    ],
)
def test_unreadable_text_files(tmp_path: Path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content(fi.hex_text(fi.make_image())))
    with pytest.raises(hexcheck.HexError, match=message):
        hexcheck.load(path)


def test_binary_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "firmware.bin"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(hexcheck.HexError, match="binary data"):
        hexcheck.load(path)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(hexcheck.HexError, match="cannot read"):
        hexcheck.load(tmp_path / "nope.hex")


# --- the command line --------------------------------------------------------------


def test_cli_exit_codes_and_verdicts(tmp_path: Path, good_hex: Path, capsys) -> None:
    assert main(["firmware", "check", str(good_hex)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "verdict: good for Enecsys"

    stock = fi.write(tmp_path / "stock.hex", fi.make_image(fi.ALLIANCE_KEY))
    assert main(["firmware", "check", str(stock)]) == 1
    out = capsys.readouterr().out
    assert "problem: standard key (ZigBeeAlliance09): inverters cannot join; the TC link key slot" in out
    assert out.splitlines()[-1] == STANDARD_VERDICT

    assert main(["firmware", "check", "--json", str(stock)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["good_for_enecsys"] is False
    assert data["tc_link_key"]["is_zigbee_alliance09"] is True
    assert data["bootloader"]["description"] == "bootloader enabled, backdoor DIO15 active low"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text(fi.with_bad_checksum(fi.hex_text(fi.make_image()))), "invalid checksum"),
        (lambda p: p.write_text(fi.truncated(fi.hex_text(fi.make_image()))), "is truncated"),
        (lambda p: p.write_text(""), "is empty"),
        (lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))), "binary data"),
    ],
    ids=["bad-checksum", "truncated", "empty", "binary"],
)
def test_cli_subprocess_unreadable_input(tmp_path: Path, make, expected: str) -> None:
    path = tmp_path / "input.hex"
    make(path)
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "firmware", "check", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("solargw firmware: verdict: unreadable:") and expected in line

    as_json = subprocess.run(
        [sys.executable, "-m", "appliance", "firmware", "check", "--json", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert as_json.returncode == 2
    assert expected in json.loads(as_json.stdout)["error"]


def test_cli_subprocess_good_and_disabled_bootloader(tmp_path: Path, good_hex: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "appliance", "firmware", "check", str(good_hex)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "bootloader enabled, backdoor DIO15 active low" in ok.stdout
    assert "build 20220219" in ok.stdout

    bad = fi.write(tmp_path / "bl.hex", fi.make_image(bl_config=0x00FE0FC5))
    res = subprocess.run([sys.executable, "-m", "appliance", "firmware", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "problem: bootloader disabled" in res.stdout
    assert res.stderr == ""


# --- flash -----------------------------------------------------------------------


def test_flash_tool_is_installed() -> None:
    tool = flash.find_tool()
    result = subprocess.run([*tool, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    help_text = subprocess.run([*tool, "-h"], capture_output=True, text=True, timeout=60).stdout
    assert "--bootloader-sonoff-usb" in help_text


def test_flash_dry_run_prints_the_exact_command(good_hex: Path, capsys) -> None:
    assert main(["firmware", "flash", str(good_hex), "--device", "/dev/ttyUSB0", "--dry-run"]) == 0
    tool = flash.find_tool()
    expected = [*tool, "-ewv", "--bootloader-sonoff-usb", "-p", "/dev/ttyUSB0", str(good_hex)]
    assert capsys.readouterr().out.splitlines()[0] == shlex.join(expected)


def test_flash_refuses_a_rejected_image(tmp_path: Path, capsys) -> None:
    stock = fi.write(tmp_path / "stock.hex", fi.make_image(fi.ALLIANCE_KEY))
    assert main(["firmware", "flash", str(stock), "--device", "/dev/ttyUSB0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "refusing to flash" in err and "ZigBeeAlliance09" in err


def test_flash_refuses_an_unreadable_image(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.hex"
    path.write_text(fi.with_bad_checksum(fi.hex_text(fi.make_image())))
    assert main(["firmware", "flash", str(path), "--device", "/dev/ttyUSB0", "--force"]) == 2
    assert "refusing to flash" in capsys.readouterr().err


def test_flash_force_warns_but_proceeds(tmp_path: Path, capsys) -> None:
    stock = fi.write(tmp_path / "stock.hex", fi.make_image(fi.ALLIANCE_KEY))
    assert main(["firmware", "flash", str(stock), "--device", "COM3", "--dry-run", "--force"]) == 0
    captured = capsys.readouterr()
    assert "warning: flashing anyway" in captured.err
    assert "-p COM3" in captured.out


def test_flash_reports_tool_failure(tmp_path: Path, good_hex: Path, capsys) -> None:
    # The real tool, on a port that does not exist: it must fail and we must say so.
    missing = tmp_path / "ttyNOPE"
    assert main(["firmware", "flash", str(good_hex), "--device", str(missing)]) == 2
    assert "bootloader tool failed" in capsys.readouterr().err
