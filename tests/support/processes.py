"""The servers and services tests start as child processes: their environment, stopping them."""
from __future__ import annotations

import subprocess

from appliance.settings import without_overrides


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables solargw reads (``SOLARGW_*``, ``NEP_*``:
    a developer's own must not steer a test), plus ``extra``."""
    return without_overrides() | extra


def stop(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode
