"""``solargw firmware flash`` (``appliance.firmware.flash``): the real bootloader tool, the exact
command it runs, and the images it refuses."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from appliance.cli import main
from appliance.firmware import flash
from support import firmware_images as fi


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
