"""Flashing a CC26x2/CC13x2 stick through its ROM serial bootloader.

The work is done by cc2538-bsl (JelmerT's script, if the user has it on PATH)
or by its packaged fork ``cc1352-flasher`` from PyPI, which takes the same
options, ``--bootloader-sonoff-usb`` included. This module only finds the tool
and builds the command line.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Tool names tried in order: upstream script first, then the PyPI fork.
TOOL_NAMES = ("cc2538-bsl", "cc2538-bsl.py", "cc1352_flasher")


class FlashError(RuntimeError):
    """The flashing tool is missing or failed."""


def find_tool(explicit: str | None = None) -> list[str]:
    """The command prefix that runs the bootloader tool.

    Looks next to the running interpreter first (a virtualenv's ``bin/``), then
    on PATH. A ``.py`` script is run with this interpreter so it works on
    Windows too.
    """
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    else:
        bindir = Path(sys.executable).parent
        for name in TOOL_NAMES:
            for suffix in ("", ".exe"):
                local = bindir / f"{name}{suffix}"
                if local.is_file() and os.access(local, os.X_OK):
                    candidates.append(str(local))
            found = shutil.which(name)
            if found:
                candidates.append(found)
    for tool in candidates:
        path = Path(tool)
        if not path.is_file():
            resolved = shutil.which(tool)
            if not resolved:
                continue
            path = Path(resolved)
        if path.suffix == ".py":
            return [sys.executable, str(path)]
        return [str(path)]
    if explicit:
        raise FlashError(f"flashing tool {explicit} not found")
    raise FlashError(
        "no serial-bootloader tool found: install it with `pip install --no-deps cc1352-flasher`"
        " (plus pyserial and intelhex), or put cc2538-bsl.py on PATH"
    )


def flash_command(tool: list[str], device: str, hexfile: str | Path) -> list[str]:
    """Erase, write and verify; toggle DTR/RTS the way the Sonoff dongle needs."""
    return [*tool, "-ewv", "--bootloader-sonoff-usb", "-p", device, str(hexfile)]


def run(command: list[str]) -> int:
    """Run the tool with its output on the terminal; returns its exit status."""
    try:
        return subprocess.run(command, check=False).returncode
    except OSError as exc:
        raise FlashError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
