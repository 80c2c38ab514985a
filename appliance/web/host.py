"""What the status and logs pages tell about the machine: memory, clock sync, recent log lines.

Each probe answers something readable on any host (a Pi, a container, a laptop) and never raises.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def memory() -> dict[str, int]:
    """``MemTotal`` and ``MemAvailable`` in bytes (empty without /proc/meminfo)."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def time_sync() -> str:
    if shutil.which("timedatectl"):
        try:
            out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3)
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return "synchronised" if out.stdout.strip() == "yes" else "not synchronised yet"
        except (OSError, subprocess.TimeoutExpired):
            pass
    if Path("/run/systemd/timesync/synchronized").exists():
        return "synchronised"
    return "unknown (no systemd-timesyncd here)"


def recent_logs(log_file: str, lines: int = 200) -> tuple[str, str]:
    """(where the lines come from, the text): the journal when it has our units, else ``log_file``."""
    if shutil.which("journalctl"):
        try:
            out = subprocess.run(["journalctl", "-u", "solargw-*", "-n", str(lines), "--no-pager", "-o", "short-iso"],
                                 capture_output=True, text=True, timeout=10)
            text = out.stdout.strip()
            if out.returncode == 0 and text and not text.startswith("-- No entries --") and "No journal files" not in text:
                return "journalctl -u solargw-* (systemd journal)", text
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        with open(log_file, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            text = handle.read().decode("utf-8", "replace")
        return f"the log file {log_file} (no systemd journal here)", "\n".join(text.splitlines()[-lines:])
    except OSError:
        return "nowhere: no systemd journal and no log file " + log_file, ""
